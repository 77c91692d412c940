"""The request path: from a client's body to an upstream answer, with fallback, and accounted for.

    parse → features → route (classify if asked) → budget → plan
      → attempts (backoff, Retry-After, breakers, regions, retry budget, hedging)
      → commit to the first upstream whose first byte arrived
      → stream or send it to the client → usage, cost, observers, shadow copy

Nothing is retried once a byte went to the client; after that, a failure
ends the stream with an error event the OpenAI SDKs raise.  Every request
ends in exactly one of: a complete answer, an OpenAI-shaped error, or a
client that went away (and then its upstream request is cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from . import errors, responses, retrysignal
from .attempt import Failed, Failure, Outcome, Ready, run_attempt
from .credentials import Credentials, MissingCredentials
from .events import AttemptRecord, Observers, RequestRecord
from .health import Breaker, CircuitState, HealthBook, RetryBudget
from .httpclient import UpstreamError
from .mirror import Mirror
from .request import Endpoint, RequestFeatures, extract_features
from .router import (
    Candidate,
    Plan,
    RouteIndex,
    no_candidates_error,
    plan,
    resolve_request,
)
from .sse import SSEScanner, error_event
from .table import CompiledRoute, CompiledTable, CompiledTarget
from .tablestore import TableStore
from .upstream import UpstreamPool
from .usage import usage_counts, usage_details

log = logging.getLogger("modelroute.dispatch")

# set on the aiohttp request once a streamed answer's headers went out: from then on an
# unexpected error can't become an error response (server.error_middleware closes instead)
RESPONSE_STARTED = web.RequestKey("modelroute_response_started", bool)
ROUTE_HEADER = "x-modelroute-route"
REASON_HEADER = "x-modelroute-reason"
TARGET_HEADER = "x-modelroute-target"
ATTEMPTS_HEADER = "x-modelroute-attempts"

# Request headers passed upstream besides the body; the client's Authorization never is
# (unless a route sets forwardClientAuth).
_PASSED_REQUEST_HEADERS = ("accept", "accept-language", "x-request-id", "traceparent", "tracestate")


class BudgetState(Protocol):
    exhausted: bool
    action: str

    def message(self) -> str: ...


class Budgets(Protocol):
    """What the dispatcher needs from the budget book (``budget.py``)."""

    def state(self, route: CompiledRoute) -> Any: ...
    def spend(self, route: CompiledRoute, usd: float) -> None: ...
    def alert_due(self, route: CompiledRoute) -> bool: ...


@dataclass(frozen=True, slots=True)
class Recent:
    """A finished request and the plan it used, for the admin ``/explain`` endpoint."""

    record: RequestRecord
    plan: Plan | None


class Dispatcher:
    def __init__(
        self,
        store: TableStore,
        health: HealthBook,
        pool: UpstreamPool,
        credentials: Credentials,
        observers: Observers,
        budgets: Budgets | None = None,
        rng: random.Random | None = None,
        recent: int = 100,
    ) -> None:
        self.store = store
        self.health = health
        self.pool = pool
        self.credentials = credentials
        self.observers = observers
        self.budgets = budgets
        self.rng = rng or random.Random()
        self.recent: deque[Recent] = deque(maxlen=recent)
        self.mirror = Mirror(pool, credentials, observers, self.rng)
        # response ids say where the response lives (responses.py); the server sets the key
        self.response_ids = responses.ResponseIds(responses.response_id_key())
        self._index: RouteIndex | None = None
        self.in_flight = 0
        self.closing = False  # set by cut_in_flight() when the sidecar stops
        self._tasks: set[asyncio.Task[Any]] = set()  # the handlers in flight, for cut_in_flight
        self.idle = asyncio.Event()  # set whenever nothing is in flight (graceful drain waits)
        self.idle.set()
        self.requests = 0
        self.failures = 0  # requests answered with a 5xx/429 of ours or a broken stream

    def is_closing(self) -> bool:
        return self.closing

    async def cut_in_flight(self, grace: float) -> int:
        """End what is still in flight when the sidecar stops; returns how many were cut.

        Called after the drain period and *before* the server closes its connections:
        aiohttp's own shutdown cancels handlers and closes sockets in one step, so a
        stream's closing error event (or a plain request's 503) would never arrive.
        Cancelled here, each handler still has an open connection to say why.
        """
        self.closing = True
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        return len(tasks)

    # -- table -----------------------------------------------------------------------

    def index(self) -> RouteIndex:
        table = self.store.current
        if self._index is None or self._index.table is not table:
            self._index = RouteIndex(table)
        return self._index

    # -- entry point -------------------------------------------------------------------

    async def handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        """Serve one API request; raises :class:`errors.ModelRouteError` for the error middleware."""
        started = time.perf_counter()
        if self.closing:  # past the drain: nothing new starts an upstream attempt now
            raise errors.UpstreamUnavailable(
                "the sidecar is shutting down; retry the request", code="shutting_down"
            )
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.MalformedJSON(f"request body is not valid JSON: {exc}") from None
        features = extract_features(body, endpoint)
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = RequestRecord(
            endpoint=endpoint.value,
            operation=endpoint.operation,
            requested_model=features.model,
            stream=features.stream,
            started=started,
            wall_started=time.time(),
        )
        self.in_flight += 1
        self.idle.clear()
        self.requests += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.observers.request_started(record, headers)
        used_plan: Plan | None = None
        try:
            response, used_plan = await self._serve(request, body, features, headers, record)
            return response
        except errors.ModelRouteError as exc:
            record.outcome = "rejected" if exc.status < 500 and exc.status != 429 else "error"
            if isinstance(exc, errors.BudgetExhausted):
                record.outcome = "rejected"
            record.status = exc.status
            record.error_code = exc.code
            route_name = record.route or exc.route
            if route_name and ROUTE_HEADER not in exc.headers:
                exc.headers[ROUTE_HEADER] = route_name
            retrysignal.mark_error(exc, len(record.attempts))
            raise
        except asyncio.CancelledError:
            if not self.is_closing():  # a method: the flag changed while we awaited
                record.outcome, record.status = "client_closed", 499
                raise
            if request.get(RESPONSE_STARTED):
                raise  # a stream: it ended with an error event and counted itself
            # cut by cut_in_flight() before any answer went out: say so, don't just hang up
            if task is not None:
                task.uncancel()
            record.outcome, record.status = "error", 503
            raise errors.UpstreamUnavailable(
                "the sidecar is shutting down and this request outlasted its drain period; "
                "it may be retried",
                status=503,
                code="shutting_down",
                route=record.route,
            ) from None
        finally:
            if task is not None:
                self._tasks.discard(task)
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
            record.duration = time.perf_counter() - started
            if record.status >= 500 or record.outcome == "stream_error":
                self.failures += 1
            self.observers.request_finished(record)
            # recordContent's copies served the span; /status keeps the record, not the text
            record.extra.pop("prompt", None)
            record.extra.pop("completion", None)
            self.recent.append(Recent(record, used_plan))

    async def _serve(
        self,
        request: web.Request,
        body: dict[str, Any],
        features: RequestFeatures,
        headers: dict[str, str],
        record: RequestRecord,
    ) -> tuple[web.StreamResponse, Plan]:
        if not self.store.loaded:
            raise errors.UpstreamUnavailable(
                "no route table loaded yet (the sidecar is starting or its table source is unreachable)",
                status=503,
                code="not_ready",
            )
        table = self.store.current
        resolution = resolve_request(self.index(), features.model, body, headers)
        route = resolution.route
        record.route = route.name
        record.namespace = route.namespace or table.namespace
        record.category = resolution.category
        record.classify_reason = resolution.reason
        if route.latency_budget_ms is not None:  # tail sampling keeps slow requests' traces
            record.latency_budget = route.latency_budget_ms / 1000
        record.record_content = route.record_content
        if route.record_content:  # opted in: the span carries what the app asked (tracing.py)
            record.extra["prompt"] = _prompt_of(body)

        cheapest_first = False
        if self.budgets is not None and route.budget is not None:
            state = self.budgets.state(route)
            if state is not None and state.exhausted:
                action = str(state.action)
                record.budget_action = action
                if action == "reject":
                    raise errors.BudgetExhausted(state.message(), route=route.name)
                if action == "downgrade":
                    cheapest_first = True
                elif self.budgets.alert_due(route):
                    log.warning("%s", state.message())

        pinned: responses.Location | None = None
        if features.endpoint is Endpoint.RESPONSES and body.get("previous_response_id") is not None:
            # a follow-up: only the provider and region that store the previous response can
            # serve it, and they know it by their own id
            pinned = self.response_ids.unwrap(
                body["previous_response_id"], table, "previous_response_id"
            )
            body = {**body, "previous_response_id": pinned.upstream_id}
        sticky = headers.get(route.sticky.header.lower()) if route.sticky else None
        now = time.monotonic()
        the_plan = plan(route, table, features, self.health, now, self.rng, sticky, cheapest_first)
        if not the_plan.candidates:
            raise no_candidates_error(route, features, the_plan)
        if pinned is not None:
            the_plan = responses.pinned_plan(the_plan, pinned, route)
        if the_plan.dropped:
            _mark_skipped_primary(route, the_plan, record)
        if sticky and the_plan.candidates:
            record.sticky_arm = the_plan.candidates[0].target.key
        attempts = _Attempts(self, request, route, table, features, body, headers, record)
        if pinned is not None:
            attempts.pin_note = responses.pin_note(pinned)
        response = await attempts.run(the_plan)
        return response, the_plan


def _mark_skipped_primary(route: CompiledRoute, the_plan: Plan, record: RequestRecord) -> None:
    """A sick primary the router left out still makes the first attempt a fallback.

    Without this, a route whose tier-0 target sits behind an open circuit
    serves every request from tier 1 while ``modelroute_fallbacks_total``
    stays flat: the silent downgrade the alert exists to catch.
    """
    first = the_plan.candidates[0]
    tiers = {t.key: t.tier for t in route.targets}
    for dropped in the_plan.dropped:
        if (
            dropped.reason.is_health
            and dropped.target != first.target_key
            and tiers.get(dropped.target, 1 << 30) <= first.target.tier
        ):
            record.extra["skipped_model"] = dropped.target.partition("/")[2]
            record.extra["skipped_reason"] = dropped.reason.value
            return


class _Attempts:
    """The attempt loop of one request (a class only to keep its many locals in one place)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        request: web.Request,
        route: CompiledRoute,
        table: CompiledTable,
        features: RequestFeatures,
        body: dict[str, Any],
        headers: dict[str, str],
        record: RequestRecord,
    ) -> None:
        self.d = dispatcher
        self.request = request
        self.route = route
        self.table = table
        self.features = features
        self.body = body
        self.headers = headers
        self.record = record
        self.deadline = record.started + route.timeouts.total_ms / 1000
        self.failures: list[Failed] = []
        self.strip_usage = False
        self.in_flight: dict[asyncio.Task[Outcome], AttemptRecord] = {}
        self.candidates: list[Candidate] = []
        self.probes: set[str] = set()  # candidates whose half-open probe this request holds
        self.path = features.endpoint.path
        if features.stream and not features.client_wants_usage:
            # ask the upstream for usage on our own account; strip it from what the client sees
            self.strip_usage = True
            body = dict(body)
            options = body.get("stream_options")
            merged = dict(options) if isinstance(options, Mapping) else {}
            merged["include_usage"] = True
            body["stream_options"] = merged
            self.body = body

    # -- the loop ------------------------------------------------------------------------

    async def run(self, the_plan: Plan) -> web.StreamResponse:
        route = self.route
        health = self.d.health
        budget = health.retry_budget(route.name, route.retry.budget_ratio)
        budget.record_first(time.monotonic())
        candidates = self.candidates = the_plan.candidates
        max_attempts = route.retry.max_attempts
        retry_on = route.retry_kinds
        hedge_delay = self._hedge_delay(candidates[0])
        if hedge_delay is None:
            return await self._run_sequential(budget, max_attempts, retry_on)
        hedges_left = route.hedge.max_hedges if route.hedge else 0
        next_index = 0
        attempts = 0
        last_failure: Failed | None = None
        try:
            while True:
                if not self.in_flight:
                    if attempts >= max_attempts:
                        break
                    if attempts > 0 and not await self._may_retry(budget, attempts, last_failure):
                        break
                    cand, next_index = self._next_candidate(candidates, next_index)
                    if cand is None or not await self._wait_for_hold(cand):
                        break
                    attempts += 1
                    self._start(cand, last_failure, hedge=False)
                timeout = self.deadline - time.perf_counter()
                if timeout <= 0:
                    break
                hedge_now = (
                    hedge_delay is not None
                    and hedges_left > 0
                    and attempts < max_attempts
                    and len(self.in_flight) == 1
                )
                wait_for = min(timeout, hedge_delay) if hedge_now and hedge_delay else timeout
                waited_from = time.perf_counter()
                done, _ = await asyncio.wait(
                    self.in_flight, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED
                )
                self.record.upstream_wait += time.perf_counter() - waited_from
                if not done:
                    if hedge_now and time.perf_counter() < self.deadline:
                        cand, next_index = self._next_candidate(candidates, next_index)
                        if (
                            cand is not None
                            and self.d.health.held_until(cand.key) <= time.monotonic()
                            and budget.try_spend(time.monotonic())
                        ):
                            attempts += 1
                            hedges_left -= 1
                            self._start(cand, None, hedge=True)
                        else:
                            hedges_left = 0
                        continue
                    break  # total deadline
                for task in done:
                    attempt = self.in_flight.pop(task)
                    outcome = task.result()
                    if isinstance(outcome, Ready):
                        try:
                            await self._cancel_rest("hedge_lost")
                        except BaseException:  # the client left while the losers were cancelled
                            outcome.response.release()
                            self._end_attempt(attempt, "cancelled")
                            raise
                        self._record_ready(attempt, outcome)
                        return await self._commit(attempt, outcome)
                    last_failure = outcome
                    if self._settle_failure(attempt, outcome, retry_on):
                        await self._cancel_rest("cancelled")
                        return self._passthrough(outcome)
        finally:
            await self._cancel_rest("cancelled")
        raise self._exhausted(attempts)

    async def _run_sequential(
        self, budget: RetryBudget, max_attempts: int, retry_on: frozenset[str]
    ) -> web.StreamResponse:
        """The same loop without hedging: one attempt at a time, awaited in place.

        Most routes don't hedge; for them a task and an ``asyncio.wait`` per
        attempt is pure overhead on every request.  Failure handling, backoff,
        holds and the retry budget are the very same methods as above.
        """
        candidates = self.candidates
        next_index = 0
        attempts = 0
        last_failure: Failed | None = None
        current: AttemptRecord | None = None
        try:
            while attempts < max_attempts:
                if attempts > 0 and not await self._may_retry(budget, attempts, last_failure):
                    break
                cand, next_index = self._next_candidate(candidates, next_index)
                if cand is None or not await self._wait_for_hold(cand):
                    break
                if time.perf_counter() >= self.deadline:
                    break
                attempts += 1
                current = self._begin(cand, last_failure, hedge=False)
                waited_from = time.perf_counter()
                try:
                    outcome = await self._attempt(cand)
                finally:
                    self.record.upstream_wait += time.perf_counter() - waited_from
                attempt, current = current, None
                if isinstance(outcome, Ready):
                    self._record_ready(attempt, outcome)
                    return await self._commit(attempt, outcome)
                last_failure = outcome
                if self._settle_failure(attempt, outcome, retry_on):
                    return self._passthrough(outcome)
        finally:
            if current is not None:  # cancelled mid-attempt (the client went away)
                self._end_attempt(current, "cancelled")
        raise self._exhausted(attempts)

    async def _may_retry(
        self, budget: RetryBudget, attempts: int, last_failure: Failed | None
    ) -> bool:
        """The gate before every attempt after the first: retry budget, then backoff."""
        assert last_failure is not None
        if last_failure.kind.reached_upstream and not budget.try_spend(time.monotonic()):
            self._give_up_note = "retry budget exhausted"
            return False
        return await self._backoff(attempts, last_failure)

    def _settle_failure(
        self, attempt: AttemptRecord, failed: Failed, retry_on: frozenset[str]
    ) -> bool:
        """Record a failed attempt; True when it goes to the client as is instead of falling over."""
        self._record_failure(attempt, failed)
        self.failures.append(failed)
        return failed.kind is Failure.PASSTHROUGH or (
            failed.kind.value in _RETRYABLE and failed.kind.value not in retry_on
        )

    _give_up_note = ""
    pin_note = ""  # a Responses follow-up: why it was tried in one place only
    all_held = False  # the request ended because every candidate is under a Retry-After hold

    def _next_candidate(
        self, candidates: list[Candidate], index: int
    ) -> tuple[Candidate | None, int]:
        """The next candidate in plan order (cycling), skipping ones held by Retry-After or busy.

        A held candidate is skipped while another one is free; when every
        candidate is held, the one freed soonest is returned (``_backoff``
        already waited for it, or the deadline ends the request).
        """
        n = len(candidates)
        holds = self.d.health.holds
        if index == 0 and not self.in_flight and not holds:  # first pick: plan() just checked
            return (candidates[0], 1) if n else (None, index)
        now = time.monotonic()
        busy = {a.target + "@" + a.region for a in self.in_flight.values()}
        health, route = self.d.health, self.route
        for step in range(n):
            cand = candidates[(index + step) % n]
            if cand.key in busy:
                continue
            if health.held_until(cand.key) > now and n > 1:
                continue
            # a circuit that opened during this request (maybe by this very request's
            # failures) is skipped on retries too, while another candidate is left
            if n > 1 and not health.breaker(route.name, cand.key, route.circuit_breaker).available(
                now
            ):
                continue
            return cand, index + step + 1
        # every free candidate held or behind an open circuit: the same "panic" as plan()'s,
        # a sick upstream is a better bet than a certain error
        free = [c for c in candidates if c.key not in busy]
        if not free:
            return None, index
        soonest = min(free, key=lambda c: self.d.health.held_until(c.key))
        return soonest, index + 1

    async def _backoff(self, attempts: int, failure: Failed) -> bool:
        """Full-jitter exponential backoff, at least as long as a Retry-After for the only choice."""
        retry = self.route.retry
        ceiling = min(retry.max_backoff_ms, retry.base_backoff_ms * 2 ** (attempts - 1)) / 1000
        delay = self.d.rng.uniform(0, ceiling)
        if failure.kind is Failure.CONNECT and len(self.failures) == 1:
            delay = 0.0  # nothing reached the upstream; the next region may be fine right now
        holds = [self.d.health.held_until(c.key) for c in self.candidates]
        now = time.monotonic()
        if holds and min(holds) > now:  # every candidate asked us to wait
            delay = max(delay, min(holds) - now)
        if time.perf_counter() + delay >= self.deadline:
            self._give_up_note = (
                f"the next attempt would start after totalMs ({self.route.timeouts.total_ms} ms)"
            )
            return False
        if delay > 0:
            started = time.perf_counter()
            await asyncio.sleep(delay)
            self.record.upstream_wait += time.perf_counter() - started
        return True

    async def _wait_for_hold(self, cand: Candidate) -> bool:
        """Honour a Retry-After on the chosen candidate (only chosen when every one is held).

        Sending anyway would be the one thing the upstream asked us not to do;
        when the hold outlasts the deadline the request ends now with a 429
        that passes the wait on to the client.
        """
        wait = self.d.health.held_until(cand.key) - time.monotonic()
        if wait <= 0:
            return True
        if time.perf_counter() + wait >= self.deadline:
            self.all_held = True
            self._give_up_note = (
                f"every candidate is held by Retry-After for {wait:.1f}s more, "
                f"past totalMs ({self.route.timeouts.total_ms} ms)"
            )
            return False
        started = time.perf_counter()
        await asyncio.sleep(wait)
        self.record.upstream_wait += time.perf_counter() - started
        return True

    def _hedge_delay(self, first: Candidate) -> float | None:
        hedge = self.route.hedge
        if hedge is None:
            return None
        if hedge.after_ms is not None:
            return hedge.after_ms / 1000
        assert hedge.percentile is not None
        tracker = self.d.health.target_ttft(first.target_key)
        return tracker.quantile(hedge.percentile / 100, time.monotonic(), 20)

    # -- one attempt ----------------------------------------------------------------------

    def _start(self, cand: Candidate, previous: Failed | None, *, hedge: bool) -> None:
        attempt = self._begin(cand, previous, hedge=hedge)
        task = asyncio.ensure_future(self._attempt(cand))
        self.in_flight[task] = attempt

    def _begin(self, cand: Candidate, previous: Failed | None, *, hedge: bool) -> AttemptRecord:
        record = self.record
        attempt = AttemptRecord(
            number=len(record.attempts) + 1,
            provider=cand.target.provider,
            model=cand.target.model,
            upstream_model=cand.target.upstream_model,
            region=cand.region,
            server_address=cand.base_url,
            started=time.perf_counter(),
            fallback_reason=(
                "hedge"
                if hedge
                else previous.kind.value
                if previous
                else record.extra.get("skipped_reason")
            ),
            hedge=hedge,
        )
        record.attempts.append(attempt)
        self.d.observers.attempt_started(record, attempt)
        return attempt

    async def _attempt(self, cand: Candidate) -> Outcome:
        health = self.d.health
        now = time.monotonic()
        breaker = health.breaker(self.route.name, cand.key, self.route.circuit_breaker)
        if breaker.state_at(now) is CircuitState.HALF_OPEN and breaker.acquire(now):
            self.probes.add(cand.key)  # this attempt is the one half-open probe
        region = health.region(cand.target.provider, cand.region)
        if region is not None:
            region.acquire(now)
        try:
            headers = self._upstream_headers(cand)
        except MissingCredentials as exc:
            self._release_probe(cand.key, breaker)
            if region is not None:
                region.release()
            return Failed(
                cand, Failure.CREDENTIALS, f"no key for provider {cand.provider.name}: {exc}"
            )
        payload = self._payload(cand.target)
        remaining = max(0.001, self.deadline - time.perf_counter())
        first_byte = min(self.route.timeouts.first_byte_ms / 1000, remaining)
        try:
            return await run_attempt(
                self.d.pool.pool(cand.provider),
                cand,
                cand.base_url,
                self.path,
                payload,
                headers,
                stream=self.features.stream,
                first_byte_timeout=first_byte,
                total_timeout=remaining,
            )
        except asyncio.CancelledError:
            self._release_probe(cand.key, breaker)
            if region is not None:
                region.release()
            raise

    def _release_probe(self, key: str, breaker: Breaker) -> None:
        """Give back a half-open probe this request claimed (never another request's)."""
        if key in self.probes:
            self.probes.discard(key)
            breaker.release()

    def _payload(self, target: CompiledTarget) -> bytes:
        body = dict(self.body)
        body["model"] = target.upstream_model
        return orjson.dumps(body)

    def _upstream_headers(self, cand: Candidate) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        for name in _PASSED_REQUEST_HEADERS:
            value = self.headers.get(name)
            if value is not None:
                headers[name] = value
        if self.route.forward_client_auth and "authorization" in self.headers:
            headers["Authorization"] = self.headers["authorization"]
        else:
            headers.update(self.d.credentials.headers_for(cand.provider.credentials))
        return headers

    def _record_ready(self, attempt: AttemptRecord, ready: Ready) -> None:
        attempt.ttfb = ready.ttfb
        attempt.status = ready.response.status
        now = time.monotonic()
        health = self.d.health
        cand = ready.candidate
        health.breaker(self.route.name, cand.key, self.route.circuit_breaker).record_success(now)
        health.hedge_won(cand.key)
        region = health.region(cand.target.provider, cand.region)
        if region is not None:
            region.record(True, ready.ttfb, now)
        health.target_ttft(cand.target_key).add(ready.ttfb, now)
        if not self.features.stream:
            health.target_latency(cand.target_key).add(ready.ttfb, now)

    def _record_failure(self, attempt: AttemptRecord, failed: Failed) -> None:
        attempt.result = failed.kind.value
        attempt.status = failed.status
        attempt.detail = failed.detail
        attempt.duration = time.perf_counter() - attempt.started
        now = time.monotonic()
        health = self.d.health
        cand = failed.candidate
        breaker = health.breaker(self.route.name, cand.key, self.route.circuit_breaker)
        region = health.region(cand.target.provider, cand.region)
        if failed.kind.upstream_unhealthy:
            breaker.record_failure(now)
            if region is not None:
                region.record(False, None, now)
        else:
            self._release_probe(cand.key, breaker)
            if region is not None:
                region.release()
        if failed.retry_after is not None and failed.kind in (
            Failure.RATE_LIMITED,
            Failure.SERVER_ERROR,
        ):
            health.hold(cand.key, now + failed.retry_after)
        self.d.observers.attempt_finished(self.record, attempt)

    async def _cancel_rest(self, result: str) -> None:
        if not self.in_flight:
            return
        tasks = list(self.in_flight)
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for task, outcome in zip(tasks, outcomes, strict=True):
            attempt = self.in_flight.pop(task)
            if isinstance(outcome, Failed):  # failed just as we cancelled: a verdict all the same
                self._record_failure(attempt, outcome)
                continue
            if isinstance(outcome, Ready):  # finished just as we cancelled: close it
                outcome.response.release()
            elif result == "hedge_lost":
                self._hedge_lost(attempt)
            self._end_attempt(attempt, result)

    def _end_attempt(self, attempt: AttemptRecord, result: str) -> None:
        """An attempt that ends without a verdict of its own (cancelled, lost a hedge race)."""
        attempt.result = result
        attempt.duration = time.perf_counter() - attempt.started
        self.d.observers.attempt_finished(self.record, attempt)

    def _hedge_lost(self, attempt: AttemptRecord) -> None:
        """A candidate that only ever loses hedges is as good as down: open its breaker.

        A cancelled loser gives no verdict of its own, so without this a black-holed
        region behind a hedge never trips its breaker: every request pays the hedge
        delay and a hedge from the retry budget, and once the budget is spent,
        requests fail.  A healthy candidate with a slow tail still wins most of
        its races, and each win resets the streak.
        """
        key = f"{attempt.provider}/{attempt.model}@{attempt.region}"
        config = self.route.circuit_breaker
        if self.d.health.hedge_lost(key) >= config.failure_threshold:
            self.d.health.breaker(self.route.name, key, config).trip(time.monotonic())

    # -- endings --------------------------------------------------------------------------

    def _our_headers(self, attempts: int | None = None) -> dict[str, str]:
        headers = {ROUTE_HEADER: self.route.name}
        if self.record.classify_reason:
            headers[REASON_HEADER] = self.record.classify_reason
        served = self.record.served
        if served is not None:
            headers[TARGET_HEADER] = f"{served.provider}/{served.model}@{served.region}"
        headers[ATTEMPTS_HEADER] = str(attempts or len(self.record.attempts))
        return headers

    def _passthrough(self, failed: Failed) -> web.Response:
        """The upstream judged the request itself bad (or its failure isn't in retryOn): relay it."""
        record = self.record
        record.status = failed.status or 502
        record.outcome = "rejected" if record.status < 500 else "error"
        body = failed.body or orjson.dumps(errors.UpstreamUnavailable(failed.detail).body())
        headers = {**failed.headers, **self._our_headers()}
        if failed.retry_after is not None:  # the app's own retry logic needs the upstream's wait
            headers.update(retrysignal.retry_after_headers(failed.retry_after))
        retrysignal.mark_passthrough(headers)
        return web.Response(
            status=record.status,
            body=body,
            content_type=failed.content_type.split(";")[0] or "application/json",
            headers=headers,
        )

    def _exhausted(self, attempts: int) -> errors.ModelRouteError:
        summaries = [
            errors.AttemptSummary(
                target=f.candidate.target_key,
                region=f.candidate.region,
                result=f.kind.value,
                status=f.status,
                detail=f.detail,
            )
            for f in self.failures
        ]
        kinds = {f.kind for f in self.failures}
        if self.all_held and kinds <= {Failure.RATE_LIMITED}:
            status, code = 429, "rate_limited"
        elif not self.failures:
            status, code = 504, "timeout"
        elif kinds == {Failure.RATE_LIMITED}:
            status, code = 429, "rate_limited"
        elif kinds <= {Failure.TIMEOUT}:
            status, code = 504, "upstream_timeout"
        elif kinds <= {Failure.CONTEXT_LENGTH}:
            status, code = 400, "context_length_exceeded"
        else:
            status, code = 502 if Failure.INVALID_RESPONSE in kinds else 503, "upstream_unavailable"
        notes = [self._give_up_note] if self._give_up_note else []
        if self.pin_note:
            notes.append(self.pin_note)
        if self.route.residency_regions is not None:
            notes.append(
                f"residency.regions {list(self.route.residency_regions)} allows no other "
                "region, so the request was not sent outside them"
            )
        note = f" ({'; '.join(notes)})" if notes else ""
        message = (
            f"route {self.route.name!r}: every attempt failed{note}; "
            f"{errors.attempts_text(summaries)}"
        )
        headers = self._our_headers(attempts)
        holds = [
            self.d.health.held_until(c.key) - time.monotonic()
            for c in ([f.candidate for f in self.failures] or self.candidates)
        ]
        if holds and min(holds) > 0:  # the upstream said how long to wait: pass it on
            headers.update(retrysignal.retry_after_headers(min(holds)))
        error_cls = errors.NoEligibleTarget if code == "context_length_exceeded" else None
        if error_cls is not None:
            return error_cls(message, route=self.route.name, attempts=summaries, code=code)
        return errors.UpstreamUnavailable(
            message,
            status=status,
            code=code,
            route=self.route.name,
            attempts=summaries,
            headers=headers,
        )

    async def _commit(self, attempt: AttemptRecord, ready: Ready) -> web.StreamResponse:
        record = self.record
        record.served = attempt
        try:
            if ready.document is not None:
                return await self._send_whole(attempt, ready)
            return await self._pipe_stream(attempt, ready)
        finally:
            ready.response.release()

    async def _send_whole(self, attempt: AttemptRecord, ready: Ready) -> web.Response:
        record = self.record
        doc = ready.document
        assert doc is not None
        attempt.result = "ok"
        attempt.duration = time.perf_counter() - attempt.started
        usage = doc.get("usage")
        if isinstance(usage, dict):
            record.input_tokens, record.output_tokens = usage_counts(usage)
            record.cached_input_tokens, record.reasoning_tokens = usage_details(usage)
        record.response_model = doc.get("model") if isinstance(doc.get("model"), str) else None
        reasons = [
            str(c["finish_reason"])
            for c in doc.get("choices") or ()
            if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)
        ]
        body = ready.first
        if self.features.endpoint is Endpoint.RESPONSES:
            if isinstance(doc.get("status"), str):
                reasons.append(doc["status"])
            body = responses.wrap_document(
                body, self.d.response_ids, attempt.provider, attempt.region
            )
        record.finish_reasons = tuple(reasons)
        if record.record_content:
            record.extra["completion"] = [
                c.get("message") if "message" in c else {"text": c.get("text")}
                for c in doc.get("choices") or ()
                if isinstance(c, dict)
            ]
        self._account(attempt)
        record.status = ready.response.status
        record.outcome = "ok"
        record.ttft = time.perf_counter() - record.started
        self.d.observers.attempt_finished(record, attempt)
        headers = {**ready.headers, **self._our_headers()}
        response = web.Response(
            status=ready.response.status,
            body=body,
            content_type="application/json",
            headers=headers,
        )
        # send it now, so the shadow copy starts only once the answer is on its way
        self.request[RESPONSE_STARTED] = True  # from here on no second response may follow
        try:
            await response.prepare(self.request)
            await response.write_eof()
        except ConnectionResetError:  # hung up before the answer went out: normal, not an error
            record.outcome, record.status = "client_closed", 499
            return response
        self.d.mirror.maybe_send(self.route, self.table, self.path, self.body)
        return response

    async def _pipe_stream(self, attempt: AttemptRecord, ready: Ready) -> web.StreamResponse:
        record = self.record
        upstream = ready.response
        scanner: SSEScanner | responses.ResponsesScanner
        if self.features.endpoint is Endpoint.RESPONSES:  # typed events; their ids wrapped
            scanner = responses.ResponsesScanner(
                self.d.response_ids, attempt.provider, attempt.region, record.record_content
            )
        else:
            scanner = SSEScanner(self.strip_usage, collect_content=record.record_content)
        response = web.StreamResponse(
            status=upstream.status,
            headers={
                **ready.headers,
                **self._our_headers(),
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        record.status = upstream.status
        idle = (self.route.timeouts.stream_idle_ms or self.route.timeouts.first_byte_ms) / 1000
        failure: str | None = None
        self.request[RESPONSE_STARTED] = True  # from here on no second response may follow
        try:
            await response.prepare(self.request)
            try:
                out = ready.scrub.stream(scanner.feed(ready.first))
            except ValueError as exc:  # not SSE we can follow: end it with an error event
                failure, out = f"the upstream sent a malformed stream ({exc})", b""
            if out:
                await response.write(out)
            record.ttft = time.perf_counter() - record.started
            self.d.mirror.maybe_send(self.route, self.table, self.path, self.body)
            content = upstream.content
            while failure is None:
                remaining = self.deadline - time.perf_counter()
                if remaining <= 0:
                    failure = f"the stream exceeded totalMs ({self.route.timeouts.total_ms} ms)"
                    break
                waited_from = time.perf_counter()
                try:
                    async with asyncio.timeout(min(idle, remaining)):
                        chunk = await content.readany()
                except TimeoutError:
                    if remaining <= idle:  # the deadline fired, not the idle timer
                        failure = f"the stream exceeded totalMs ({self.route.timeouts.total_ms} ms)"
                    else:
                        failure = f"the upstream went silent for {idle * 1000:.0f} ms mid-stream"
                    break
                except UpstreamError as exc:
                    failure = f"the upstream connection broke mid-stream ({type(exc).__name__})"
                    break
                finally:
                    record.upstream_wait += time.perf_counter() - waited_from
                if not chunk:
                    break
                try:
                    out = ready.scrub.stream(scanner.feed(chunk))
                except ValueError as exc:
                    failure = f"the upstream sent a malformed stream ({exc})"
                    break
                if out:
                    await response.write(out)
            rest = scanner.flush()  # scanned before judging: it may hold [DONE] or an error
            facts = scanner.facts
            if failure is None and facts.error is not None:
                said = ready.scrub.text(str(facts.error.get("message", "")))
                failure = f"the upstream sent an error event: {said}"[:300]
            elif failure is None and not facts.complete:
                failure = "the upstream ended the stream before it was complete"
            if rest and failure is None:  # an unfinished event never precedes our error event
                await response.write(ready.scrub.stream(rest))
            if failure is not None:
                served = f"{attempt.provider}/{attempt.model}@{attempt.region}"
                await response.write(
                    error_event(
                        f"route {self.route.name!r}: {failure} (served by {served}); "
                        "the answer is incomplete",
                        "stream_interrupted",
                        self.route.name,
                    )
                )
            await response.write_eof()
        except asyncio.CancelledError:
            if self.d.closing:  # the sidecar is stopping and cut it: say so, count it as ours
                cut = "the sidecar shut down mid-stream"
                with contextlib.suppress(Exception):
                    await response.write(
                        error_event(
                            f"route {self.route.name!r}: {cut}",
                            "stream_interrupted",
                            self.route.name,
                        )
                    )
                self._finish_stream(attempt, scanner, cut)
                raise
            self._client_left(attempt, scanner, failure)
            raise
        except ConnectionResetError:
            # the client hung up and a write found its transport already closing (the
            # upstream's data woke us before the loop delivered the hang-up): as normal as
            # the cancellation above, so counted as client_closed and the handler ends
            # quietly; raised, aiohttp would log it as an ERROR with a traceback
            self._client_left(attempt, scanner, failure)
            return response
        self._finish_stream(attempt, scanner, failure)
        return response

    def _client_left(
        self,
        attempt: AttemptRecord,
        scanner: SSEScanner | responses.ResponsesScanner,
        failure: str | None,
    ) -> None:
        self.record.outcome = "client_closed"
        self.record.status = 499
        attempt.result = "client_closed"
        self._finish_stream(attempt, scanner, failure)

    def _finish_stream(
        self,
        attempt: AttemptRecord,
        scanner: SSEScanner | responses.ResponsesScanner,
        failure: str | None,
    ) -> None:
        record = self.record
        facts = scanner.facts
        record.input_tokens = facts.input_tokens
        record.output_tokens = facts.output_tokens
        record.cached_input_tokens = facts.cached_input_tokens
        record.reasoning_tokens = facts.reasoning_tokens
        if facts.input_tokens is None and facts.output_tokens is None and facts.data_events:
            # no usage event (the client left, the upstream cut the stream, or ignores
            # include_usage), yet the provider bills the prompt and what it generated:
            # charge an estimate rather than nothing, so a budget can't leak through cut
            # streams. Output: one token per data event, the usual granularity (docs/budgets.md)
            record.input_tokens = self.features.prompt_tokens
            record.output_tokens = facts.data_events
            record.usage_estimated = True
        record.response_model = facts.model
        record.finish_reasons = tuple(facts.finish_reasons)
        if record.record_content and facts.content:
            text = "".join(facts.content)
            if facts.content_chars > len(text):
                text += f"… [{facts.content_chars - len(text)} more characters not recorded]"
            record.extra["completion"] = [{"role": "assistant", "content": text}]
        attempt.duration = time.perf_counter() - attempt.started
        now = time.monotonic()
        if record.outcome != "client_closed":
            if failure is None:
                attempt.result = "ok"
                record.outcome = "ok"
                self.d.health.target_latency(attempt.target).add(attempt.duration, now)
            else:
                attempt.result = "stream_error"
                attempt.detail = failure
                record.outcome = "stream_error"
                record.error_code = "stream_interrupted"
                if not self.d.closing:  # our own shutdown cut it: not the upstream's fault
                    cand_key = f"{attempt.target}@{attempt.region}"
                    self.d.health.breaker(
                        self.route.name, cand_key, self.route.circuit_breaker
                    ).record_failure(now)
        self._account(attempt)
        self.d.observers.attempt_finished(record, attempt)

    def _account(self, attempt: AttemptRecord) -> None:
        """Cost at the catalogue price of the model that served; unknown prices stay unknown."""
        record = self.record
        target = self.route_target(attempt)
        cost: float | None = 0.0
        if record.output_tokens:
            if target is not None and target.output_usd_per_mtok is not None:
                cost = (cost or 0.0) + record.output_tokens * target.output_usd_per_mtok / 1e6
            else:
                record.unpriced_output_tokens = record.output_tokens
                cost = None
        if record.input_tokens:
            if target is not None and target.input_usd_per_mtok is not None:
                if cost is not None:
                    cost += record.input_tokens * target.input_usd_per_mtok / 1e6
            else:
                record.unpriced_input_tokens = record.input_tokens
        if record.output_tokens is None and record.input_tokens is None:
            cost = None
        record.cost_usd = cost
        if cost and self.d.budgets is not None and self.route.budget is not None:
            self.d.budgets.spend(self.route, cost)

    def route_target(self, attempt: AttemptRecord) -> CompiledTarget | None:
        for target in self.route.targets:
            if target.provider == attempt.provider and target.model == attempt.model:
                return target
        return None


# Failures a route's ``retry.retryOn`` governs; the others (invalid response, auth, unknown
# model upstream) always fall over, since another target can't be worse.
_RETRYABLE = {
    k.value
    for k in (
        Failure.CONNECT,
        Failure.TIMEOUT,
        Failure.RATE_LIMITED,
        Failure.SERVER_ERROR,
        Failure.CONTEXT_LENGTH,
    )
}


def _prompt_of(body: dict[str, Any]) -> Any:
    """What the app asked: chat messages, a completion prompt or embedding input."""
    for key in ("messages", "prompt", "input"):
        if key in body:
            return body[key]
    return None
