"""A request gives back every half-open probe it claimed, and never another request's.

A breaker in half-open admits one request (the probe); a region ejected by a
FailoverPolicy admits one failback probe.  A claim that is never given back keeps
the candidate (or the whole region) out of rotation for good: it was leaked when a
hedge loser holding a probe had answered just as the winner cancelled it
(``AttemptLoop._cancel_rest``).  And a request that did not win the region's
failback probe must not release the one that did.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from modelroute.proxy.attempt import Ready
from modelroute.proxy.dispatch.attempts import AttemptLoop
from modelroute.proxy.events import AttemptRecord
from modelroute.proxy.health import CircuitState, HealthBook
from modelroute.proxy.outcomes import AttemptEnd

from modelroute.resources.policy import Ejection
from modelroute.resources.route import CircuitBreaker

KEY = "primary/chat-a@us-east-1"


class _Response:
    def __init__(self) -> None:
        self.released = False

    def release(self) -> None:
        self.released = True


def _loop(health: HealthBook) -> Any:
    """An AttemptLoop with just what its claim bookkeeping reads."""
    loop = object.__new__(AttemptLoop)
    cast(Any, loop).__dict__.update(
        d=SimpleNamespace(
            health=health,
            background=set(),
            observers=SimpleNamespace(attempt_finished=lambda record, attempt: None),
        ),
        route=SimpleNamespace(name="r", circuit_breaker=CircuitBreaker()),
        record=SimpleNamespace(),
        probes=set(),
        region_claims=set(),
        in_flight={},
        waits={},
        race_at={},
    )
    return loop


def _candidate() -> Any:
    return SimpleNamespace(
        key=KEY, region="us-east-1", endpoint="primary@us-east-1",
        target=SimpleNamespace(provider="primary"),
    )  # fmt: skip


def _half_open(health: HealthBook) -> Any:
    breaker = health.breaker("r", KEY, CircuitBreaker())
    breaker.trip(0.0)
    breaker.opened_at = -1e9  # long since: half-open now
    return breaker


def _ejected_region(health: HealthBook) -> Any:
    health.configure(Ejection(), failback_delay=0.0)
    region = health.region("primary", "us-east-1")
    assert region is not None
    region.ejected_at = -1e9  # ejected, failback delay long past: the next request probes
    return region


async def test_a_hedge_loser_that_answered_as_it_was_cancelled_gives_its_probes_back() -> None:
    health = HealthBook()
    breaker, region = _half_open(health), _ejected_region(health)
    cand = _candidate()
    loop = _loop(health)
    # the loser claimed both probes when it started (as OneAttempt._attempt does)
    assert breaker.acquire(1.0) and region.acquire(1.0)
    loop.probes.add(KEY)
    loop.region_claims.add(("primary", "us-east-1"))
    response = _Response()
    loser: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    loser.set_result(Ready(cand, cast(Any, response), b"{}", None, 0.01))
    loop.in_flight[loser] = AttemptRecord(
        2, "primary", "chat-a", "chat-a", "us-east-1", "127.0.0.1", 0.0, hedge=True
    )
    await loop._cancel_rest(AttemptEnd.HEDGE_LOST)
    assert response.released
    assert not breaker.probe_in_flight and breaker.state_at(1.0) is CircuitState.HALF_OPEN
    assert breaker.available(1.0)  # the next request may probe again
    assert not region.probe_in_flight and region.available(1.0)


def test_a_request_gives_back_only_the_region_claim_it_holds() -> None:
    health = HealthBook()
    region = _ejected_region(health)
    assert region.acquire(1.0)  # another request holds the failback probe
    loop = _loop(health)
    loop._release_claims(_candidate())  # this one claimed nothing (e.g. it was cancelled)
    assert region.probe_in_flight and not region.available(1.0)


def test_whatever_a_request_still_holds_at_its_end_goes_back() -> None:
    health = HealthBook()
    breaker, region = _half_open(health), _ejected_region(health)
    assert breaker.acquire(1.0) and region.acquire(1.0)
    loop = _loop(health)
    loop.probes.add(KEY)
    loop.region_claims.add(("primary", "us-east-1"))
    loop._release_all_claims()
    assert breaker.available(1.0) and region.available(1.0)
    assert not loop.probes and not loop.region_claims
