"""The attempt loop's decisions (proxy/dispatch/policy.py), on a fixed clock and a seeded RNG.

Which candidate a retry goes to, how long it waits first, when a failure is
relayed instead of falling over, and which status the client gets when
every attempt failed: each one a promise docs/failover.md makes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from modelroute.proxy.compiler import CompileResult
from modelroute.proxy.connecttimes import ConnectEstimate
from modelroute.proxy.dispatch import policy
from modelroute.proxy.health import HealthBook
from modelroute.proxy.outcomes import Failure
from modelroute.proxy.request import Endpoint, extract_features
from modelroute.proxy.router import Candidate, plan
from modelroute.proxy.table import CompiledRoute

from modelroute.resources import ConnectRacing, Hedge, Retry

NOW = 1_000.0
ROUTES = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: gw}
spec:
  endpoints:
    - {region: us-east, baseURL: "http://127.0.0.1:1/v1"}
    - {region: eu-west, baseURL: "http://127.0.0.1:2/v1"}
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: r}
spec:
  models: [m]
  targets:
    - {provider: gw, model: deepseek-v4-flash}
  circuitBreaker: {failureThreshold: 1, openSeconds: 10}
"""
Setup = tuple[CompiledRoute, list[Candidate], HealthBook]
US, EU = "gw/deepseek-v4-flash@us-east", "gw/deepseek-v4-flash@eu-west"


@pytest.fixture
def setup(compile_text: Callable[[str], CompileResult]) -> Setup:
    result = compile_text(ROUTES)
    assert result.ok, [str(p) for p in result.errors]
    route = result.table.routes[0]
    health = HealthBook()
    features = extract_features(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, Endpoint.CHAT
    )
    the_plan = plan(route, result.table, features, health, NOW, random.Random(1))
    assert [c.key for c in the_plan.candidates] == [US, EU]
    return route, the_plan.candidates, health


def test_a_retry_goes_to_the_next_candidate_in_plan_order(setup: Setup) -> None:
    route, cands, health = setup
    assert policy.next_candidate(cands, 0, (), health, route, NOW) == (cands[0], 1)
    cand, index = policy.next_candidate(cands, 1, (), health, route, NOW)
    assert cand is cands[1] and index == 2
    cand, _ = policy.next_candidate(cands, 2, (), health, route, NOW)
    assert cand is cands[0]  # cycles when attempts outnumber candidates


def test_a_busy_held_or_broken_candidate_is_skipped_while_another_is_free(setup: Setup) -> None:
    route, cands, health = setup
    cand, _ = policy.next_candidate(cands, 0, {US}, health, route, NOW)
    assert cand is cands[1]  # a hedge never doubles up on the candidate in flight
    health.hold(US, NOW + 5)
    cand, _ = policy.next_candidate(cands, 0, (), health, route, NOW)
    assert cand is cands[1]  # held by Retry-After
    assert policy.next_candidate(cands, 0, {EU, US}, health, route, NOW) == (None, 0)
    health.holds.clear()
    health.breaker(route.name, US, route.circuit_breaker).record_failure(NOW - 1)
    cand, _ = policy.next_candidate(cands, 2, (), health, route, NOW)
    assert cand is cands[1]  # its circuit opened during this request


def test_when_every_candidate_is_held_the_one_freed_soonest_is_chosen(setup: Setup) -> None:
    route, cands, health = setup
    health.hold(US, NOW + 9)
    health.hold(EU, NOW + 2)
    cand, _ = policy.next_candidate(cands, 1, (), health, route, NOW)
    assert cand is cands[1]


def test_panic_spreads_attempts_over_candidates_not_yet_tried(setup: Setup) -> None:
    """Every breaker open: a retry goes where this request has not been yet (issue 14)."""
    route, cands, health = setup
    for key in (US, EU):
        health.breaker(route.name, key, route.circuit_breaker).record_failure(NOW - 1)
    health.failed(US, NOW - 1, slow=False)
    health.failed(EU, NOW - 0.5, slow=False)
    # the first attempt went to US (plan order) and failed again just now
    health.failed(US, NOW, slow=False)
    cand, index = policy.next_candidate(cands, 1, (), health, route, NOW, [cands[0]])
    assert cand is cands[1]
    # the third attempt: both tried once; the least recently failed of them
    health.failed(EU, NOW + 0.01, slow=False)
    cand, _ = policy.next_candidate(cands, index, (), health, route, NOW + 0.01, list(cands))
    assert cand is cands[0]


def test_panic_never_repeats_an_endpoint_while_another_exists(
    compile_text: Callable[[str], CompileResult],
) -> None:
    """Two models at one dead endpoint: the retry goes to the other endpoint, not the twin."""
    result = compile_text(
        ROUTES.replace(
            "    - {provider: gw, model: deepseek-v4-flash}",
            "    - {provider: gw, model: deepseek-v4-flash, regions: [us-east]}\n"
            "    - {provider: gw, model: qwen3-32b, regions: [us-east]}\n"
            "    - {provider: gw, model: glm-5, regions: [eu-west], tier: 1}",
        )
    )
    assert result.ok, [str(p) for p in result.errors]
    route = result.table.routes[0]
    health = HealthBook()
    features = extract_features(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, Endpoint.CHAT
    )
    cands = plan(route, result.table, features, health, NOW, random.Random(1)).candidates
    assert [c.endpoint for c in cands] == ["gw@us-east", "gw@us-east", "gw@eu-west"]
    for c in cands:
        health.breaker(route.name, c.key, route.circuit_breaker).record_failure(NOW - 5)
        health.failed(c.key, NOW - 5, slow=False)
    health.failed(cands[0].key, NOW, slow=False)
    cand, _ = policy.next_candidate(cands, 1, (), health, route, NOW, [cands[0]])
    assert cand is cands[2]


def test_panic_leaves_a_probing_candidate_to_its_probe(setup: Setup) -> None:
    """A half-open breaker's probe is one request: panic traffic goes elsewhere meanwhile."""
    route, cands, health = setup
    us = health.breaker(route.name, US, route.circuit_breaker)
    eu = health.breaker(route.name, EU, route.circuit_breaker)
    us.record_failure(NOW - 20)  # half-open by now
    eu.record_failure(NOW - 1)
    health.failed(US, NOW - 20, slow=False)
    health.failed(EU, NOW - 1, slow=False)
    assert us.acquire(NOW)  # another request holds the probe
    cand, _ = policy.next_candidate(cands, 1, (), health, route, NOW)
    assert cand is cands[1]


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    retry = Retry(base_backoff_ms=100, max_backoff_ms=1000)
    rng = random.Random(3)
    delays = [
        policy.backoff_delay(retry, 3, rng, only_connect_failed=False, holds=(), now=NOW)
        for _ in range(200)
    ]
    assert 0 <= min(delays) < 0.05 and 0.35 < max(delays) <= 0.4  # ceiling 100 ms x 2^2
    capped = policy.backoff_delay(
        retry, 10, random.Random(0), only_connect_failed=False, holds=(), now=NOW
    )
    assert capped <= 1.0


def test_no_wait_after_a_connect_failure_but_a_retry_after_is_honoured() -> None:
    retry = Retry(base_backoff_ms=100, max_backoff_ms=1000)
    rng = random.Random(3)
    assert policy.backoff_delay(retry, 1, rng, only_connect_failed=True, holds=(), now=NOW) == 0
    waited = policy.backoff_delay(
        retry, 1, rng, only_connect_failed=True, holds=(NOW + 7, NOW + 4), now=NOW
    )
    assert waited == pytest.approx(4)
    one_free = policy.backoff_delay(
        retry, 1, rng, only_connect_failed=True, holds=(NOW + 7, NOW - 1), now=NOW
    )
    assert one_free == 0  # another candidate is free: no need to wait for the held one


def test_hedge_delay_is_fixed_or_the_first_candidates_ttft_percentile(setup: Setup) -> None:
    _, _, health = setup
    ttft = health.target_ttft("gw/deepseek-v4-flash")
    assert policy.hedge_delay(None, ttft, NOW, 2.0) is None
    assert policy.hedge_delay(Hedge(after_ms=250), ttft, NOW, 2.0) == 0.25
    by_percentile = Hedge(percentile=90)
    # too few samples yet: half the first-byte timeout, so a silent connection is still rescued
    assert policy.hedge_delay(by_percentile, ttft, NOW, 2.0) == 1.0
    for i in range(100):
        ttft.add(0.1 + i / 1000, NOW - 1)
    delay = policy.hedge_delay(by_percentile, ttft, NOW, 2.0)
    assert delay is not None and 0.18 < delay < 0.2


def test_a_failure_outside_retry_on_is_relayed_the_others_fall_over() -> None:
    retry_on = frozenset({"connect", "timeout"})
    assert policy.relayed_as_is(Failure.PASSTHROUGH, retry_on)
    assert policy.relayed_as_is(Failure.RATE_LIMITED, retry_on)
    assert not policy.relayed_as_is(Failure.CONNECT, retry_on)
    assert not policy.relayed_as_is(Failure.INVALID_RESPONSE, retry_on)  # always falls over


@pytest.mark.parametrize(
    ("kinds", "all_held", "verdict"),
    [
        ((), False, (504, "timeout")),
        ((Failure.RATE_LIMITED,), False, (429, "rate_limited")),
        ((), True, (429, "rate_limited")),
        ((Failure.TIMEOUT,), False, (504, "upstream_timeout")),
        ((Failure.CONTEXT_LENGTH,), False, (400, "context_length_exceeded")),
        ((Failure.CONNECT, Failure.TIMEOUT), False, (503, "upstream_unavailable")),
        ((Failure.CONNECT, Failure.INVALID_RESPONSE), False, (502, "upstream_unavailable")),
        ((Failure.RATE_LIMITED, Failure.SERVER_ERROR), True, (503, "upstream_unavailable")),
    ],
)
def test_the_final_status_says_what_every_attempt_ran_into(
    kinds: tuple[Failure, ...], all_held: bool, verdict: tuple[int, str]
) -> None:
    error = policy.exhausted_verdict(kinds, all_held)
    assert (error.status, error.code) == verdict


def test_a_racer_or_hedge_avoids_the_endpoints_in_flight(setup: Setup) -> None:
    route, cands, health = setup
    us_endpoint = cands[0].endpoint
    cand, _ = policy.next_candidate(cands, 0, (), health, route, NOW, avoid={us_endpoint})
    assert cand is cands[1]  # not the first pick's shortcut: the endpoint is avoided
    cand, _ = policy.next_candidate(cands, 2, {EU}, health, route, NOW, avoid={us_endpoint})
    assert cand is None  # nothing else to race: the late connect keeps its full timeout
    # panic (every circuit open) still never picks an avoided endpoint
    for key in (US, EU):
        health.breaker(route.name, key, route.circuit_breaker).record_failure(NOW - 1)
    cand, _ = policy.next_candidate(cands, 1, (), health, route, NOW, avoid={us_endpoint})
    assert cand is cands[1]


def test_a_connect_is_raced_at_its_deadline_unless_that_is_the_timeout() -> None:
    racing = ConnectRacing()
    assert policy.connect_race_delay(racing, None, 1.0) == pytest.approx(0.25)
    # a deadline at the connect timeout would race a connect that has failed anyway
    assert policy.connect_race_delay(racing, None, 0.2) is None
    assert policy.connect_race_delay(ConnectRacing(enabled=False), None, 1.0) is None


def test_a_written_request_is_watched_at_the_endpoints_connect_pace() -> None:
    """The silence watch reads the connect race's deadline, whether or not the route races."""
    fast = ConnectEstimate()
    fast.add(0.001)
    far = ConnectEstimate()
    far.add(0.2)
    assert policy.silence_watch(ConnectRacing(), None, 1.0) == pytest.approx(0.25)
    assert policy.silence_watch(ConnectRacing(), fast, 1.0) == pytest.approx(0.1)  # floorMs
    assert policy.silence_watch(ConnectRacing(enabled=False), far, 1.0) == pytest.approx(0.6)
    assert policy.silence_watch(ConnectRacing(), far, 0.5) == pytest.approx(0.5)  # the timeout


def test_a_retry_that_only_moves_load_off_a_candidate_taken_out_is_not_charged(
    setup: Setup,
) -> None:
    """The retry budget stops retries multiplying load; it does not charge a move (issue 14).

    A region that accepts and never answers: the requests in flight there
    each time out; once its breaker opened, their retries go where new
    requests go anyway.  Charged, at 50 req/s and firstByteMs 3 s they spent
    the whole budget and a third of them failed with eu-west healthy.
    """
    route, cands, health = setup
    us, eu = cands
    # us-east failing but still in rotation: a retry may multiply load, it is charged
    assert not policy.retry_is_free(us, cands, health, route, NOW)
    # ... unless the network gave the verdict (a request nobody's TCP acknowledged): no
    # overload to feed, and eu-west is in rotation
    assert policy.retry_is_free(us, cands, health, route, NOW, network=True)
    # its breaker opened (failureThreshold 1 here): the retries move load to eu-west
    health.breaker(route.name, US, route.circuit_breaker).record_failure(NOW)
    assert policy.retry_is_free(us, cands, health, route, NOW)
    # everything failing: no candidate in rotation, every retry charged again
    health.breaker(route.name, EU, route.circuit_breaker).record_failure(NOW)
    assert not policy.retry_is_free(us, cands, health, route, NOW)
    assert not policy.retry_is_free(eu, cands, health, route, NOW)
    # half-open is not "in rotation": it is one probe, not a healthy candidate
    assert not policy.retry_is_free(us, cands, health, route, NOW + 11)
    # a Retry-After hold on the only other one: nowhere healthy to move to
    health.breakers.clear()
    health.breaker(route.name, US, route.circuit_breaker).record_failure(NOW)
    health.hold(EU, NOW + 5)
    assert not policy.retry_is_free(us, cands, health, route, NOW)


def test_endpoints_behind_one_origin_share_a_path(setup: Setup) -> None:
    """Two providers (or regions) at one scheme://host:port: one network path, one verdict."""
    _, cands, _ = setup
    us, eu = cands
    assert policy.origin_of("HTTP://127.0.0.1:1/v1") == "http://127.0.0.1:1"
    twin = Candidate(
        us.target, us.provider, us.region, "http://127.0.0.1:1/other", us.key + "-twin",
        endpoint="other@us-east",
    )  # fmt: skip
    assert policy.same_path(us, [us, eu, twin]) == {"gw@us-east", "other@us-east"}
    assert policy.same_path(eu, [us, eu, twin]) == {"gw@eu-west"}


def test_the_reserve_offers_the_best_candidate_off_the_failed_path(setup: Setup) -> None:
    """Candidates the plan dropped for their health, in panic's order, never a held one."""
    route, cands, health = setup
    us, eu = cands
    assert policy.from_reserve([us, eu], {"gw@us-east"}, health, route, NOW) is eu
    assert policy.from_reserve([us, eu], {"gw@us-east", "gw@eu-west"}, health, route, NOW) is None
    health.hold(EU, NOW + 5)  # a Retry-After is honoured even here
    assert policy.from_reserve([us, eu], {"gw@us-east"}, health, route, NOW) is None
    health.holds.clear()
    # untried first, then panic order (the least recently failed)
    health.failed(US, NOW - 1, slow=True)
    health.failed(EU, NOW - 5, slow=True)
    assert policy.from_reserve([us, eu], (), health, route, NOW) is eu
    assert policy.from_reserve([us, eu], (), health, route, NOW, tried=[eu]) is us


def test_a_retry_leaving_a_path_the_network_condemned_is_free_wherever_it_goes(
    setup: Setup,
) -> None:
    """The request never reached an upstream: a retry at another origin multiplies nothing.

    Even with every candidate out (the kernel chaos run: us-east-1 went
    silent while eu-west-1's breakers were still open from an earlier fault,
    and the requests caught there failed after one attempt, the budget spent).
    """
    route, cands, health = setup
    us, eu = cands
    for key in (US, EU):
        health.breaker(route.name, key, route.circuit_breaker).record_failure(NOW)
    assert policy.retry_is_free(eu, cands, health, route, NOW, network=True)
    # the other origin only in the plan's reserve (dropped for its health): free as well
    assert policy.retry_is_free(us, [us], health, route, NOW, network=True, reserve=[eu])
    # nowhere else but behind a Retry-After, or no other origin at all: charged
    health.hold(EU, NOW + 5)
    assert not policy.retry_is_free(us, [us], health, route, NOW, network=True, reserve=[eu])
    assert not policy.retry_is_free(us, [us], health, route, NOW, network=True)
    # not the network's verdict (an answer, a timeout after the ACK): the old rule
    health.holds.clear()
    assert not policy.retry_is_free(us, cands, health, route, NOW)
