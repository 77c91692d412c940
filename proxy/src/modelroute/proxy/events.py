"""What happened to a request, as plain records the observers (metrics, traces, cost) consume.

The dispatcher fills these in as it goes and calls the observers at four
points; observers must be cheap and must never raise into the request path
(:class:`Observers` guards each call).  Nothing here knows Prometheus or
OpenTelemetry: those live in their own modules behind :class:`Observer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from modelroute.resources import BudgetAction

from .keys import candidate_key, target_key
from .outcomes import AttemptEnd, AttemptResult, RequestOutcome, ShadowOutcome
from .request import Endpoint

log = logging.getLogger("modelroute.events")


@dataclass(slots=True)
class AttemptRecord:
    number: int  # 1-based within the request
    provider: str
    model: str
    upstream_model: str
    region: str
    server_address: str
    started: float  # perf_counter
    fallback_reason: str | None = None  # why this attempt exists (the previous one's result)
    hedge: bool = False
    result: AttemptResult = AttemptEnd.PENDING
    status: int | None = None
    duration: float = 0.0
    ttfb: float | None = None  # time to first body byte from this upstream
    detail: str = ""
    span: Any = None  # the tracing observer's handle

    @property
    def target(self) -> str:
        return target_key(self.provider, self.model)

    @property
    def candidate(self) -> str:
        """``provider/model@region``: the key health state and ``x-modelroute-target`` use."""
        return candidate_key(self.provider, self.model, self.region)


@dataclass(slots=True)
class RequestRecord:
    endpoint: Endpoint
    operation: str  # gen_ai.operation.name
    requested_model: str
    stream: bool
    started: float  # perf_counter
    wall_started: float  # time.time(), for logs and explain
    route: str | None = None
    namespace: str | None = None
    category: str | None = None  # the classifier's answer, when the model was classified
    classify_reason: str | None = None
    sticky_arm: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    served: AttemptRecord | None = None
    outcome: RequestOutcome = RequestOutcome.PENDING
    status: int = 0
    error_code: str | None = None
    duration: float = 0.0
    ttft: float | None = None  # time to first byte sent to the client (streams: first chunk)
    upstream_wait: float = 0.0  # time spent waiting on upstreams (attempts, not our own work)
    input_tokens: int | None = None
    output_tokens: int | None = None
    # True when a stream carried no usage (cut, abandoned, or an upstream that ignores
    # include_usage) and the tokens above are the proxy's estimate, charged all the same
    usage_estimated: bool = False
    # parts of the two counts above the upstream itemised (None: not reported); counted in
    # modelroute_token_details_total; priced as part of input/output
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    response_model: str | None = None
    finish_reasons: tuple[str, ...] = ()
    cost_usd: float | None = None
    unpriced_input_tokens: int = 0
    unpriced_output_tokens: int = 0
    budget_action: BudgetAction | None = None
    latency_budget: float | None = None  # the route's latencyBudgetMs, in seconds
    record_content: bool = False
    span: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """The proxy's own added time: total minus time spent waiting on upstreams."""
        return max(0.0, self.duration - self.upstream_wait)

    @property
    def fallback(self) -> bool:
        return self.served is not None and self.served.number > 1


@dataclass(slots=True)
class ShadowRecord:
    """A mirrored copy of a request (``mirror:``): measured on its own, never seen by the client."""

    route: str
    provider: str
    model: str
    region: str
    outcome: ShadowOutcome = ShadowOutcome.PENDING
    status: int | None = None
    duration: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    detail: str = ""


class Observer(Protocol):
    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None: ...
    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None: ...
    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None: ...
    def request_finished(self, record: RequestRecord) -> None: ...
    def shadow_finished(self, record: ShadowRecord) -> None: ...


_IDLE = "__modelroute_idle_hook__"
_HOOKS = (
    "request_started",
    "attempt_started",
    "attempt_finished",
    "request_finished",
    "shadow_finished",
)

F = TypeVar("F", bound=Callable[..., None])


def idle_hook(hook: F) -> F:
    """Marks an observer's hook that does nothing, so :class:`Observers` never calls it.

    Each request fires four hooks at every observer; most observers use one or
    two, and a call into an empty method (inside a ``try``) is still a call.
    """
    setattr(hook, _IDLE, True)
    return hook


class Observers:
    """Fan-out to every observer; an observer that raises is logged, never propagated.

    Each hook keeps the list of observers that use it (those not marked
    :func:`idle_hook`), rebuilt when one is added.
    """

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.observers: list[Observer] = list(observers or [])
        self._using: dict[str, list[tuple[Observer, Callable[..., None]]]] = {}
        self._index()

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)
        self._index()

    def _index(self) -> None:
        self._using = {
            hook: [
                (o, method)
                for o in self.observers
                # a hook an observer lacks is one it doesn't use
                if (method := getattr(o, hook, None)) is not None
                and not getattr(method, _IDLE, False)
            ]
            for hook in _HOOKS
        }

    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        for o, hook in self._using["request_started"]:
            try:
                hook(record, headers)
            except Exception:
                log.exception("observer %r failed in request_started", o)

    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        for o, hook in self._using["attempt_started"]:
            try:
                hook(record, attempt)
            except Exception:
                log.exception("observer %r failed in attempt_started", o)

    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        for o, hook in self._using["attempt_finished"]:
            try:
                hook(record, attempt)
            except Exception:
                log.exception("observer %r failed in attempt_finished", o)

    def request_finished(self, record: RequestRecord) -> None:
        for o, hook in self._using["request_finished"]:
            try:
                hook(record)
            except Exception:
                log.exception("observer %r failed in request_finished", o)

    def shadow_finished(self, record: ShadowRecord) -> None:
        for o, hook in self._using["shadow_finished"]:
            try:
                hook(record)
            except Exception:
                log.exception("observer %r failed in shadow_finished", o)
