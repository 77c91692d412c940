"""Health state machines on an injected clock: breakers, retry budget, latency, region ejection.

The seeds' numbers are the defaults: open after 5 failures in 60 s, stay
open 30 s; a region is judged on a minimum sample so one unlucky request
can't eject it.
"""

from __future__ import annotations

import random
import sys

import pytest
from modelroute.proxy.health import (
    Breaker,
    CircuitState,
    HealthBook,
    LatencyTracker,
    RegionHealth,
    RetryBudget,
    RollingCounts,
)

from modelroute.resources import CircuitBreaker, Ejection

SEEDS_BREAKER = CircuitBreaker()  # 5 failures in 60 s, open 30 s


# -- breaker ---------------------------------------------------------------------------------


def test_breaker_defaults_are_the_seeds() -> None:
    assert (
        SEEDS_BREAKER.failure_threshold,
        SEEDS_BREAKER.window_seconds,
        SEEDS_BREAKER.open_seconds,
    ) == (5, 60, 30)


def test_breaker_opens_at_the_threshold_within_the_window() -> None:
    b = Breaker(SEEDS_BREAKER)
    for t in range(4):
        b.record_failure(100.0 + t * 10)
        assert b.state_at(100.0 + t * 10) is CircuitState.CLOSED
    b.record_failure(159.0)  # fifth failure, 59 s after the first
    assert b.state_at(159.0) is CircuitState.OPEN
    assert not b.available(159.0) and not b.acquire(188.9)
    assert b.trips == 1


def test_failures_spread_over_a_longer_time_do_not_open() -> None:
    b = Breaker(SEEDS_BREAKER)
    for t in range(50):  # one failure every 16 s: never 5 within 60 s
        b.record_failure(t * 16.0)
        assert b.state_at(t * 16.0) is CircuitState.CLOSED, t
    assert b.trips == 0
    assert len(b.failures) <= SEEDS_BREAKER.failure_threshold  # bounded memory


def test_half_open_lets_exactly_one_probe_through() -> None:
    b = Breaker(CircuitBreaker(failure_threshold=2, window_seconds=10, open_seconds=30))
    b.record_failure(0.0)
    b.record_failure(1.0)
    assert b.state_at(30.9) is CircuitState.OPEN
    assert b.state_at(31.0) is CircuitState.HALF_OPEN
    assert b.available(31.0)
    assert b.acquire(31.0) is True  # the probe
    assert b.acquire(31.0) is False  # everyone else waits for its verdict
    assert not b.available(31.5)
    b.release()  # probe cancelled without a verdict: another may try
    assert b.acquire(32.0) is True


def test_probe_success_closes_the_breaker() -> None:
    b = Breaker(CircuitBreaker(failure_threshold=2, window_seconds=10, open_seconds=30))
    b.record_failure(0.0)
    b.record_failure(1.0)
    assert b.acquire(31.0)
    b.record_success(31.5)
    assert b.state_at(31.5) is CircuitState.CLOSED
    assert b.acquire(31.6) and b.acquire(31.7)  # no longer one-at-a-time
    b.record_failure(32.0)  # old failures were forgotten: one new failure doesn't reopen
    assert b.state_at(32.0) is CircuitState.CLOSED


def test_probe_failure_reopens_for_another_open_period() -> None:
    b = Breaker(CircuitBreaker(failure_threshold=2, window_seconds=10, open_seconds=30))
    b.record_failure(0.0)
    b.record_failure(1.0)
    assert b.acquire(31.0)
    b.record_failure(31.2)
    assert b.state_at(31.2) is CircuitState.OPEN
    assert b.state_at(61.1) is CircuitState.OPEN
    assert b.state_at(61.2) is CircuitState.HALF_OPEN
    assert b.trips == 2


def test_late_success_from_before_opening_does_not_close() -> None:
    """A slow request sent before the trip comes back fine: only the probe may close."""
    b = Breaker(CircuitBreaker(failure_threshold=2, window_seconds=10, open_seconds=30))
    b.record_failure(0.0)
    b.record_failure(1.0)
    b.record_success(2.0)
    assert b.state_at(2.0) is CircuitState.OPEN and not b.available(2.0)


def test_only_the_probe_closes_a_half_open_breaker() -> None:
    """A panic request that isn't the probe comes back fine: the probe still decides."""
    b = Breaker(CircuitBreaker(failure_threshold=1, window_seconds=10, open_seconds=5))
    b.record_failure(0.0)
    assert b.acquire(5.0)  # some request holds the probe
    b.record_success(5.1, probe=False)
    assert b.state_at(5.1) is CircuitState.HALF_OPEN and not b.available(5.1)
    b.record_success(5.2, probe=True)
    assert b.state_at(5.2) is CircuitState.CLOSED


def test_an_answer_to_a_request_sent_while_open_closes_the_breaker() -> None:
    """Panic mode sent a request behind the open breaker; its answer is the probe's verdict.

    Waiting ``openSeconds`` instead kept a healed region out for the whole
    kernel chaos run, every request in panic (issue 14).
    """
    b = Breaker(CircuitBreaker(failure_threshold=1, window_seconds=10, open_seconds=30))
    b.record_failure(0.0)
    b.answered_while_out(2.0)
    assert b.state_at(2.0) is CircuitState.CLOSED and b.available(2.0)
    b.record_failure(3.0)  # counts afresh: the old failures are gone with the trip
    assert b.state_at(3.0) is CircuitState.OPEN
    # half-open, the probe out with another request: closed all the same, and the
    # probe's own verdict later leaves the breaker usable
    assert b.acquire(33.0)
    b.answered_while_out(33.1)
    assert b.available(33.1)
    b.record_success(33.2, probe=True)
    assert b.state_at(33.2) is CircuitState.CLOSED and not b.probe_in_flight


def test_success_while_closed_keeps_counting_failures() -> None:
    """Failures in the window count even with successes between (a flapping upstream)."""
    b = Breaker(CircuitBreaker(failure_threshold=3, window_seconds=10, open_seconds=5))
    for t in (0.0, 1.0, 2.0):
        b.record_success(t + 0.5)
        b.record_failure(t)
    assert b.state_at(2.0) is CircuitState.OPEN


# -- retry budget -----------------------------------------------------------------------------


def test_retry_budget_floor_lets_a_quiet_route_fail_over() -> None:
    budget = RetryBudget(ratio=0.2, window=10, min_per_window=3)
    assert [budget.try_spend(1.0) for _ in range(4)] == [True, True, True, False]
    assert budget.try_spend(11.5)  # the window moved on


def test_retry_budget_ratio_caps_a_storm() -> None:
    budget = RetryBudget(ratio=0.2, window=10, min_per_window=3)
    for i in range(100):
        budget.record_first(5.0 + i * 0.001)
    spent = sum(budget.try_spend(5.5) for _ in range(100))
    assert spent == 20  # 20 % of 100 first attempts, above the floor of 3


def test_rolling_counts_forget_old_buckets() -> None:
    counts = RollingCounts(window=10, buckets=10)
    counts.add(False, 0.5)
    counts.add(True, 5.5)
    assert counts.totals(6.0) == (2, 1)
    assert counts.totals(10.7) == (1, 0)  # the bucket at 0.5 s slid out
    assert counts.totals(16.0) == (0, 0)


# -- latency tracker ----------------------------------------------------------------------------


def test_latency_quantile_is_within_one_percent() -> None:
    tracker = LatencyTracker(window=60)
    rng = random.Random(3)
    samples = [rng.uniform(0.05, 2.0) for _ in range(5000)]
    for i, s in enumerate(samples):
        tracker.add(s, 100.0 + i * 0.001)
    exact = sorted(samples)[int(0.99 * len(samples)) - 1]
    p99 = tracker.quantile(0.99, 106.0)
    assert p99 is not None and p99 == pytest.approx(exact, rel=0.02)


def test_latency_needs_min_samples() -> None:
    tracker = LatencyTracker(window=60)
    for i in range(19):
        tracker.add(1.0, 10.0 + i)
    assert tracker.quantile(0.99, 29.0, min_samples=20) is None
    tracker.add(1.0, 29.5)
    value = tracker.quantile(0.99, 29.5, min_samples=20)
    assert value == pytest.approx(1.0, rel=0.02)


def test_latency_old_samples_roll_off() -> None:
    tracker = LatencyTracker(window=60)
    for i in range(200):
        tracker.add(5.0, 0.0 + i * 0.01)  # a slow spell at t≈0
    assert tracker.quantile(0.5, 1.0) == pytest.approx(5.0, rel=0.02)
    for i in range(200):
        tracker.add(0.1, 70.0 + i * 0.01)  # fast again, a window later
    assert tracker.quantile(0.99, 75.0) == pytest.approx(0.1, rel=0.02)
    assert tracker.quantile(0.5, 200.0) is None  # nothing recent at all


def test_latency_read_sees_new_samples_within_the_same_second() -> None:
    tracker = LatencyTracker(window=60)
    for i in range(50):
        tracker.add(0.1, 10.0 + i * 0.001)
    assert tracker.quantile(0.99, 10.1) == pytest.approx(0.1, rel=0.02)
    for i in range(5000):
        tracker.add(3.0, 10.2 + i * 0.0001)
    value = tracker.quantile(0.99, 10.9)
    assert value is not None and value > 2.5, "stale cached quantile after many new samples"


def test_latency_memory_stays_bounded() -> None:
    tracker = LatencyTracker(window=60)
    rng = random.Random(5)
    for i in range(20_000):
        tracker.add(rng.lognormvariate(-1, 1), i * 0.001)
    small = _deep_size(tracker)
    for i in range(200_000):
        tracker.add(rng.lognormvariate(-1, 1), 20.0 + i * 0.0001)
    assert tracker.count_total == 220_000
    assert _deep_size(tracker) < small * 2 + 50_000


def _deep_size(obj: object, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(_deep_size(v, seen) for v in obj)
    for attr in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, attr):
            size += _deep_size(getattr(obj, attr), seen)
    if hasattr(obj, "__dict__"):
        size += _deep_size(vars(obj), seen)
    return size


# -- region health --------------------------------------------------------------------------


def region(min_requests: int = 10, delay: float = 60.0, **kw: float) -> RegionHealth:
    return RegionHealth(
        Ejection(error_rate=0.5, min_requests=min_requests, window_seconds=30, **kw), delay
    )


def test_region_is_not_ejected_below_the_minimum_sample() -> None:
    r = region(min_requests=10)
    for i in range(9):
        r.record(False, None, 100.0 + i * 0.1)
    assert r.available(101.0) and r.ejections == 0


def test_region_ejected_on_error_rate_over_the_minimum_sample() -> None:
    r = region(min_requests=10)
    for i in range(5):
        r.record(True, 0.2, 100.0 + i * 0.1)
    for i in range(4):
        r.record(False, None, 100.5 + i * 0.1)
    assert r.available(101.0)  # 4 of 9 failed: below the minimum sample anyway
    r.record(False, None, 101.0)  # 5 of 10: 50 %
    assert not r.available(101.0)
    assert "50%" in r.ejected_reason and r.ejections == 1


def test_low_error_rate_does_not_eject() -> None:
    r = region(min_requests=10)
    for i in range(100):
        r.record(i % 4 != 0, 0.2, 100.0 + i * 0.1)  # 25 % errors
    assert r.available(111.0) and r.ejections == 0


def test_region_ejected_on_slow_p99() -> None:
    r = region(min_requests=10, p99_latency_ms=1000)
    for i in range(10):
        r.record(True, 1.5, 100.0 + i * 0.1)
    assert not r.available(101.0) and "p99" in r.ejected_reason


def test_failback_only_after_the_delay_and_a_successful_probe() -> None:
    r = region(min_requests=4, delay=60)
    for i in range(4):
        r.record(False, None, 100.0 + i * 0.1)
    ejected = r.ejected_at
    assert ejected is not None
    assert not r.available(ejected + 59.9) and not r.acquire(ejected + 59.9)
    assert r.available(ejected + 60)
    assert r.acquire(ejected + 60) is True  # one probe
    assert r.acquire(ejected + 60) is False and not r.available(ejected + 60.1)
    r.record(False, None, ejected + 61)  # the probe failed: another full delay
    assert not r.available(ejected + 61 + 59.9)
    assert r.acquire(ejected + 121)
    r.record(True, 0.2, ejected + 121.5)  # the probe succeeded: back in rotation
    assert r.available(ejected + 121.5) and r.ejected_at is None
    r.record(False, None, ejected + 122)  # old failures don't count against it now
    assert r.available(ejected + 122)


def test_an_answer_panic_got_from_an_ejected_region_fails_it_back() -> None:
    """No waiting ``failbackDelaySeconds`` while the region answers the requests panic sends it."""
    r = region(min_requests=4, delay=60)
    for i in range(4):
        r.record(False, None, 100.0 + i * 0.1)
    assert r.ejected_at is not None and not r.acquire(101.0)
    r.answered_while_out(101.0)
    assert r.available(101.0) and r.ejected_at is None and not r.probe_in_flight
    r.record(False, None, 101.5)  # the window started afresh
    assert r.available(101.5)


def test_late_success_does_not_fail_back_early() -> None:
    r = region(min_requests=4, delay=60)
    for i in range(4):
        r.record(False, None, 100.0 + i * 0.1)
    r.record(True, 0.2, 101.0)  # a request sent before the ejection, answered late
    assert not r.available(101.0) and r.ejected_at is not None


# -- the book ---------------------------------------------------------------------------------


def test_book_keeps_the_longest_hold() -> None:
    book = HealthBook()
    book.hold("p/m@r", 50.0)
    book.hold("p/m@r", 20.0)
    assert book.held_until("p/m@r") == 50.0 and book.held_until("other") == 0.0


def test_book_regions_exist_only_under_a_policy() -> None:
    book = HealthBook()
    assert book.region("p", "us") is None
    book.configure(Ejection(), 60)
    r = book.region("p", "us")
    assert r is not None and book.region("p", "us") is r
    book.configure(Ejection(), 60)  # same settings: state kept
    assert book.region("p", "us") is r
    book.configure(Ejection(min_requests=5), 60)  # new settings: fresh state
    assert book.region("p", "us") is not r


def test_book_breaker_follows_config_changes_and_forgets_removed_routes() -> None:
    book = HealthBook()
    a = book.breaker("route", "p/m@r", SEEDS_BREAKER)
    assert book.breaker("route", "p/m@r", SEEDS_BREAKER) is a
    b = book.breaker("route", "p/m@r", CircuitBreaker(failure_threshold=2))
    assert b is not a
    book.forget_routes_except({"other"})
    assert book.breakers == {}


def test_prune_keeps_only_what_the_current_table_has() -> None:
    from modelroute.proxy.health import HealthBook
    from modelroute.proxy.keys import candidate_key

    from modelroute.resources import CircuitBreaker

    book = HealthBook()
    keep, gone = candidate_key("p", "a", "r1"), candidate_key("p", "b", "r1")
    config = CircuitBreaker()
    book.breaker("route", keep, config)
    book.breaker("route", gone, config)
    book.target_latency("p/a").add(0.1, 1.0)
    book.target_latency("p/b").add(0.1, 1.0)
    book.hold(keep, 5.0)
    book.hold(gone, 500.0)
    book.prune({"p/a"}, {keep}, now=10.0)
    assert list(book.breakers) == [("route", keep)]
    assert list(book.latency) == ["p/a"]
    assert book.holds == {}  # the kept one's hold had expired, the other's target is gone


def test_an_answer_wipes_the_candidates_last_failure_for_panic_order() -> None:
    book = HealthBook()
    book.failed("p/m@us", 5.0, slow=True)
    assert book.last_failure("p/m@us") == (5.0, True)
    book.answered("p/m@us")
    book.answered("p/m@eu")  # never failed: nothing to forget
    assert book.last_failure("p/m@us") == (float("-inf"), False)
