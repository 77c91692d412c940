"""One request's state, and what the request path needs from the process.

:class:`RequestRun` is one request's journey after routing: the route, the
table it started on, its body and headers, the deadline, the record
observers see.  Its methods are defined in layers, one module each, as
httpx layers ``send`` over ``_send_handling_redirects`` over
``_send_single_request``:

* :mod:`.commit` (:class:`~.commit.Commit`) – sending or streaming the
  chosen answer to the client, and accounting for it;
* :mod:`.one_attempt` (:class:`~.one_attempt.OneAttempt`) – what each
  upstream attempt does: its pool trip, what it sends, and the health
  feedback of its verdict;
* :mod:`.attempts` (:class:`~.attempts.AttemptLoop`) – the attempt loop over
  the plan's candidates: their order, hedges and connect races, backoff and
  holds; what to try next and how long to wait is :mod:`.policy`'s (pure).

:class:`Services` names what those layers use of the long-lived
:class:`~.dispatcher.Dispatcher`, so none of them imports it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from ..attempt import Failed, Outcome
from ..credentials import Credentials
from ..events import AttemptRecord, Observers, RequestRecord
from ..health import HealthBook
from ..mirror import Mirror
from ..request import RequestFeatures
from ..responses import ResponseIds
from ..router import Candidate
from ..scrub import NO_SECRETS, Scrubber
from ..table import CompiledRoute, CompiledTable
from ..upstream import PoolWait, UpstreamPool

# set on the aiohttp request once a streamed answer's headers went out: from then on an
# unexpected error can't become an error response (server.error_middleware closes instead)
RESPONSE_STARTED = web.RequestKey("modelroute_response_started", bool)
ROUTE_HEADER = "x-modelroute-route"
REASON_HEADER = "x-modelroute-reason"
TARGET_HEADER = "x-modelroute-target"
ATTEMPTS_HEADER = "x-modelroute-attempts"


class BudgetState(Protocol):
    exhausted: bool
    action: str

    def message(self) -> str: ...


class Budgets(Protocol):
    """What the dispatcher needs from the budget book (``budget.py``)."""

    def exhausted(self, route: CompiledRoute) -> Any: ...
    def spend(self, route: CompiledRoute, usd: float) -> None: ...
    def alert_due(self, route: CompiledRoute) -> bool: ...


class Services(Protocol):
    """The long-lived parts of the sidecar a request uses (the dispatcher has them all)."""

    health: HealthBook
    pool: UpstreamPool
    credentials: Credentials
    observers: Observers
    budgets: Budgets | None
    rng: random.Random
    mirror: Mirror
    closing: bool
    response_ids: ResponseIds
    # connects abandoned by a race, left to finish (bounded by the connect timeout) so their
    # verdict reaches endpoint health; held here so nothing collects them half-way
    background: set[asyncio.Task[Outcome]]


class RequestRun:
    """One request after routing (a class only to keep its many locals in one place)."""

    def __init__(
        self,
        dispatcher: Services,
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
        # each attempt task's candidate and trip through the pool (connect racing reads it)
        self.waits: dict[asyncio.Task[Outcome], tuple[Candidate, PoolWait]] = {}
        self.race_at: dict[
            asyncio.Task[Outcome], float
        ] = {}  # perf_counter: still connecting → race
        self.candidates: list[Candidate] = []
        self.reserve: list[Candidate] = []  # the plan's health-dropped candidates (Plan.reserve)
        self.tried: list[Candidate] = []  # every candidate attempted, in order (hedges too)
        self.probes: set[str] = set()  # candidates whose half-open probe this request holds
        # (provider, region)s whose failback probe (RegionHealth.acquire) this request holds
        self.region_claims: set[tuple[str, str]] = set()
        # candidates sent while a gate kept them out (panic mode): which ones, see
        # OneAttempt._gates_out; an answer there is that gate's verdict
        self.sent_out: dict[str, tuple[bool, bool, bool]] = {}
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

    _give_up_note = ""  # why the loop stopped early, for the final error's message
    stream_scrub: Scrubber = NO_SECRETS  # the streaming attempt's: what it sent stays out
    pin_note = ""  # a Responses follow-up: why it was tried in one place only
    all_held = False  # the request ended because every candidate is under a Retry-After hold

    def _our_headers(self, attempts: int | None = None) -> dict[str, str]:
        headers = {ROUTE_HEADER: self.route.name}
        if self.record.classify_reason:
            headers[REASON_HEADER] = self.record.classify_reason
        served = self.record.served
        if served is not None:
            headers[TARGET_HEADER] = served.candidate
        headers[ATTEMPTS_HEADER] = str(attempts or len(self.record.attempts))
        return headers
