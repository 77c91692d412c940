"""The router per request: parse, route, budget, plan; then hand the plan to the attempt loop.

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
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .. import errors, responses, retrysignal
from ..credentials import Credentials
from ..events import Observers, RequestRecord
from ..health import HealthBook
from ..keys import split_target
from ..mirror import Mirror
from ..outcomes import RequestOutcome
from ..request import Endpoint, RequestFeatures, extract_features
from ..router import Plan, RouteIndex, no_candidates_error, plan, resolve_request
from ..table import CompiledRoute
from ..tablestore import TableStore
from ..upstream import UpstreamPool
from .attempts import AttemptLoop
from .state import RESPONSE_STARTED, ROUTE_HEADER, Budgets

log = logging.getLogger("modelroute.dispatch")


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
        self.background: set[asyncio.Task[Any]] = set()  # connects a race abandoned (attempts.py)
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
        for connect in list(self.background):  # nobody waits for them: the verdict can go
            connect.cancel()
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
            raise errors.ShuttingDown("the sidecar is shutting down; retry the request")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.MalformedJSON(f"request body is not valid JSON: {exc}") from None
        features = extract_features(body, endpoint)
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = RequestRecord(
            endpoint=endpoint,
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
            record.outcome = (
                RequestOutcome.REJECTED
                if exc.status < 500 and exc.status != 429
                else RequestOutcome.ERROR
            )
            if isinstance(exc, errors.BudgetExhausted):
                record.outcome = RequestOutcome.REJECTED
            record.status = exc.status
            record.error_code = exc.code
            route_name = record.route or exc.route
            if route_name and ROUTE_HEADER not in exc.headers:
                exc.headers[ROUTE_HEADER] = route_name
            retrysignal.mark_error(exc, len(record.attempts))
            raise
        except asyncio.CancelledError:
            if not self.is_closing():  # a method: the flag changed while we awaited
                record.outcome, record.status = RequestOutcome.CLIENT_CLOSED, 499
                raise
            if request.get(RESPONSE_STARTED):
                raise  # a stream: it ended with an error event and counted itself
            # cut by cut_in_flight() before any answer went out: say so, don't just hang up
            if task is not None:
                task.uncancel()
            record.outcome, record.status = RequestOutcome.ERROR, 503
            raise errors.ShuttingDown(
                "the sidecar is shutting down and this request outlasted its drain period; "
                "it may be retried",
                route=record.route,
            ) from None
        finally:
            if task is not None:
                self._tasks.discard(task)
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
            record.duration = time.perf_counter() - started
            if record.status >= 500 or record.outcome == RequestOutcome.STREAM_ERROR:
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
            raise errors.NotReady(
                "no route table loaded yet (the sidecar is starting or its table source is unreachable)"
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
            state = self.budgets.exhausted(route)
            if state is not None:
                action = state.action
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
        attempts = AttemptLoop(self, request, route, table, features, body, headers, record)
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
            record.extra["skipped_model"] = split_target(dropped.target)[1]
            record.extra["skipped_reason"] = dropped.reason.value
            return


def _prompt_of(body: dict[str, Any]) -> Any:
    """What the app asked: chat messages, a completion prompt or embedding input."""
    for key in ("messages", "prompt", "input"):
        if key in body:
            return body[key]
    return None
