"""The attempt loop's decisions: which candidate next, how long to wait, when to stop, what to say.

Pure, like :mod:`~modelroute.proxy.health` and the router: the clock
(``now``, monotonic seconds) and the random source are passed in, and the
health book is only read, so every rule here is unit-tested without a
socket or a sleep (tests/unit/test_dispatch_policy.py).  The loop in
:mod:`.attempts` acts on the answers.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Collection, Iterable, Sequence
from urllib.parse import urlsplit

from modelroute.resources import ConnectRacing, Hedge, Retry

from .. import errors
from ..connecttimes import ConnectEstimate, race_deadline
from ..health import CircuitState, HealthBook, LatencyTracker
from ..outcomes import Failure
from ..router import Candidate, panic_rank
from ..table import CompiledRoute

# Failures a route's ``retry.retryOn`` governs; the others (invalid response, auth, unknown
# model upstream) always fall over, since another target can't be worse.
RETRYABLE = {
    k.value
    for k in (
        Failure.CONNECT,
        Failure.TIMEOUT,
        Failure.RATE_LIMITED,
        Failure.SERVER_ERROR,
        Failure.CONTEXT_LENGTH,
    )
}


def relayed_as_is(kind: Failure, retry_on: frozenset[str]) -> bool:
    """True when a failed attempt's answer goes to the client as is instead of falling over."""
    return kind is Failure.PASSTHROUGH or (kind.value in RETRYABLE and kind.value not in retry_on)


def next_candidate(
    candidates: Sequence[Candidate],
    index: int,
    busy: Collection[str],
    health: HealthBook,
    route: CompiledRoute,
    now: float,
    tried: Sequence[Candidate] = (),
    avoid: Collection[str] = (),
) -> tuple[Candidate | None, int]:
    """The next candidate in plan order (cycling), skipping ones held by Retry-After or busy.

    ``busy`` holds the keys of candidates with an attempt in flight, ``tried``
    the candidates this request has already attempted, ``avoid`` endpoints
    (``provider@region``) a candidate must not be at: a connect racer or a
    hedge sent to the endpoint whose connect is slow or whose connection went
    silent would wait on the same network path.  A held candidate is
    skipped while another one is free.  When every free candidate is held or
    behind an open circuit (panic), the attempts spread: an endpoint this
    request has not tried yet before one it has, then a candidate it has not
    tried, each in :func:`~modelroute.proxy.router.panic_rank` order (the
    hold ending soonest, no probe out, fast failures before timeouts, the
    least recently failed) – never the same dead endpoint over and over
    while another exists.
    """
    n = len(candidates)
    if index == 0 and not busy and not avoid and not health.holds:  # first pick: plan() checked
        return (candidates[0], 1) if n else (None, index)
    for step in range(n):
        cand = candidates[(index + step) % n]
        if cand.key in busy or cand.endpoint in avoid:
            continue
        if health.held_until(cand.key) > now and n > 1:
            continue
        # a circuit that opened (or an endpoint ejected) during this request, maybe by this
        # very request's failures, is skipped on retries too, while another candidate is left
        if n > 1 and not (
            health.endpoints.available(cand.endpoint, now)
            and health.breaker(route.name, cand.key, route.circuit_breaker).available(now)
        ):
            continue
        return cand, index + step + 1
    # every free candidate held, ejected or behind an open circuit: the same "panic" as
    # plan()'s, a sick upstream is a better bet than a certain error
    free = [c for c in candidates if c.key not in busy and c.endpoint not in avoid]
    if not free:
        return None, index
    tried_keys = {c.key for c in tried}
    tried_endpoints = {c.endpoint for c in tried}

    def rank(c: Candidate) -> tuple[float, bool, bool, bool, bool, float]:
        wait, probing, slow, failed_at = panic_rank(c, route, health, now)
        return wait, c.endpoint in tried_endpoints, c.key in tried_keys, probing, slow, failed_at

    return min(free, key=rank), index + 1


@functools.lru_cache(maxsize=1024)
def origin_of(base_url: str) -> str:
    """``scheme://host:port`` of a base URL: where its connections go, whoever's endpoint it is."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_path(sick: Candidate, pool: Iterable[Candidate]) -> set[str]:
    """The endpoints in ``pool`` whose connections go where ``sick``'s do (one origin).

    Two providers' endpoints (or a provider's two regions) behind one
    origin share one network path: a connect that is late there, or a
    request the path swallowed, says the same of every one of them.
    """
    origin = origin_of(sick.base_url)
    return {c.endpoint for c in pool if origin_of(c.base_url) == origin}


def from_reserve(
    reserve: Sequence[Candidate],
    avoid: Collection[str],
    health: HealthBook,
    route: CompiledRoute,
    now: float,
    tried: Sequence[Candidate] = (),
) -> Candidate | None:
    """The best of the candidates the plan dropped for their health, outside ``avoid``.

    Asked only when every candidate in rotation sits on a network path that
    has just failed this request (``same_path``): then a candidate taken out
    earlier – a breaker opened by a fault that has since passed, say – is a
    better bet than that path, as in panic mode, and in panic's order
    (:func:`~modelroute.proxy.router.panic_rank`, untried first).  A
    Retry-After hold is honoured: a held candidate is never chosen here.
    """
    tried_keys = {c.key for c in tried}
    free = [c for c in reserve if c.endpoint not in avoid and health.held_until(c.key) <= now]
    if not free:
        return None

    def rank(c: Candidate) -> tuple[bool, float, bool, bool, float]:
        wait, probing, slow, failed_at = panic_rank(c, route, health, now)
        return c.key in tried_keys, wait, probing, slow, failed_at

    return min(free, key=rank)


def in_rotation(cand: Candidate, health: HealthBook, route: CompiledRoute, now: float) -> bool:
    """Would a new request be sent to ``cand`` now: closed breaker, endpoint in, no hold?"""
    return (
        health.endpoints.available(cand.endpoint, now)
        and health.breaker(route.name, cand.key, route.circuit_breaker).state_at(now)
        is CircuitState.CLOSED
        and health.held_until(cand.key) <= now
    )


def retry_is_free(
    failed: Candidate,
    candidates: Sequence[Candidate],
    health: HealthBook,
    route: CompiledRoute,
    now: float,
    *,
    network: bool = False,
    reserve: Sequence[Candidate] = (),
) -> bool:
    """Is a retry after ``failed``'s failure outside the retry budget?  Only when it moves load.

    The budget exists so that retries cannot multiply the load on upstreams
    that are failing.  Once ``failed`` is out of rotation (its breaker opened,
    its endpoint ejected, a Retry-After hold) while another candidate is in
    (and :func:`next_candidate` picks one in rotation while any is), every new
    request already goes to that other one as a first attempt: the retries of
    the requests that were in flight on ``failed`` move the same load the
    same way, once each, bounded by what was in flight – nothing multiplies.
    Charging them is what made a region that accepts and never answers fail
    requests although the other region was healthy: at 50 req/s with
    ``firstByteMs`` 3 s, ~150 requests are caught in flight, and the budget
    (20 % of 10 s of first attempts: 100) cannot retry them all.  While
    every candidate is failing, none is in rotation, and every retry is
    charged as before.

    ``network``: the failure was the network's verdict on the path (a local
    origin, e.g. a request the peer's TCP never acknowledged), not the
    upstream's answer under load – no sign of an overload a retry could
    feed – so its retry to a candidate in rotation at another endpoint is
    free even before ``failed`` is taken out (as a connect error's always is).
    It is free, too, whenever some candidate – in the plan or its
    ``reserve`` (:attr:`~modelroute.proxy.router.Plan.reserve`), not held by
    a Retry-After – sits at another origin, in rotation or not: the retry
    leaves the condemned path (``attempts._elsewhere``), and the request it
    repeats never reached an upstream, so nothing is multiplied wherever it
    lands.  Charged, the kernel chaos run still lost the requests caught on
    a path the moment it went silent, each after its one attempt, whenever
    the other region's candidates were out from an earlier fault and the
    budget was spent by it.  Behind a single origin such a retry would
    only meet the same path again, and is charged as before.
    """
    if network:
        origin = origin_of(failed.base_url)
        if any(
            origin_of(c.base_url) != origin and health.held_until(c.key) <= now
            for c in (*candidates, *reserve)
        ):
            return True
    elif in_rotation(failed, health, route, now):
        return False
    return any(
        c.key != failed.key and c.endpoint != failed.endpoint and in_rotation(c, health, route, now)
        for c in candidates
    )


def backoff_delay(
    retry: Retry,
    attempts: int,
    rng: random.Random,
    *,
    only_connect_failed: bool,
    holds: Sequence[float],
    now: float,
) -> float:
    """Full-jitter exponential backoff, at least as long as a Retry-After for the only choice.

    ``attempts`` is how many were made so far; ``only_connect_failed`` says
    the one failure so far never reached the upstream (the next region may
    be fine right now: no wait); ``holds`` are the candidates' Retry-After
    holds (monotonic deadlines).
    """
    ceiling = min(retry.max_backoff_ms, retry.base_backoff_ms * 2 ** (attempts - 1)) / 1000
    delay = rng.uniform(0, ceiling)
    if only_connect_failed:
        delay = 0.0
    if holds and min(holds) > now:  # every candidate asked us to wait
        delay = max(delay, min(holds) - now)
    return delay


def hedge_delay(
    hedge: Hedge | None, ttft: LatencyTracker, now: float, first_byte: float
) -> float | None:
    """Seconds before a backup attempt starts; None when the route doesn't hedge.

    ``ttft`` is the first candidate's time-to-first-token tracker, read when
    the hedge is set by percentile rather than a fixed ``afterMs``.  Until it
    has 20 samples the hedge starts at half of ``first_byte`` (the route's
    first-byte timeout): an attempt that has waited that long is on its way
    to a timeout – or stuck on a kept-alive connection that went silent – and
    a route that hedges must not leave it there because it is quiet.
    """
    if hedge is None:
        return None
    if hedge.after_ms is not None:
        return hedge.after_ms / 1000
    assert hedge.percentile is not None
    found = ttft.quantile(hedge.percentile / 100, now, 20)
    return first_byte / 2 if found is None else found


def connect_race_delay(
    racing: ConnectRacing, estimate: ConnectEstimate | None, connect_timeout: float
) -> float | None:
    """Seconds after an attempt starts when, still connecting, it is raced; None: never.

    ``estimate`` is the endpoint's observed connect time (:mod:`~..connecttimes`),
    ``connect_timeout`` the provider's: a deadline at it would race a connect
    that has failed anyway.
    """
    if not racing.enabled:
        return None
    delay = race_deadline(racing, estimate, connect_timeout)
    return delay if delay < connect_timeout else None


def silence_watch(
    racing: ConnectRacing, estimate: ConnectEstimate | None, connect_timeout: float
) -> float:
    """How often to look whether a written request sits unacknowledged (``upstream/silence.py``).

    The endpoint's usual connect time – one round trip, plus TLS – as the
    connect race reads it (floor ``floorMs``, ``initialMs`` before data,
    never past the connect timeout): an ACK takes a round trip, so a far
    endpoint is looked at less often.  Whether or not the route races its
    connects: the rescue sends nothing twice that a first-byte timeout
    would not (docs/failover.md, "In-flight rescue").
    """
    return race_deadline(racing, estimate, connect_timeout)


def exhausted_verdict(kinds: Collection[Failure], all_held: bool) -> type[errors.ModelRouteError]:
    """The error (and so status and code) when every attempt failed, from the kinds seen."""
    kinds = set(kinds)
    if all_held and kinds <= {Failure.RATE_LIMITED}:
        return errors.RateLimited
    if not kinds:
        return errors.TimedOut
    if kinds == {Failure.RATE_LIMITED}:
        return errors.RateLimited
    if kinds <= {Failure.TIMEOUT}:
        return errors.UpstreamTimeout
    if kinds <= {Failure.CONTEXT_LENGTH}:
        return errors.ContextLengthExceeded
    if Failure.INVALID_RESPONSE in kinds:
        return errors.InvalidUpstreamAnswer
    return errors.UpstreamUnavailable
