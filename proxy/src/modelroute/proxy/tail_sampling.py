"""Tail decisions inside the sidecar: keep every trace that matters, and a ratio of the rest.

Head sampling (``OTEL_TRACES_SAMPLER``) decides before anything happened, so at
1 % it loses 99 % of the failovers, hedges and errors too – the traces a person
opens.  The sidecar builds a request's spans only when the request has ended
(``tracing_spans.TracingObserver``), so it can decide then, knowing the outcome, at no
extra cost: with ``MODELROUTE_TRACES_TAIL_RATIO=0.01`` it exports every request
that

* failed over (served by a later attempt, or any attempt that did not succeed),
* hedged,
* errored (any outcome but ``ok``: errors, rejections, the app hanging up, a cut stream),
* hit a budget (the route's cost budget was exhausted: rejected, downgraded or alerted),
* ran past its route's ``latencyBudgetMs``,

plus 1 % of the others (decided on the trace id, the way the standard
``traceidratio`` sampler does, so sidecars sampling the same trace agree), plus
every request whose app-side ``traceparent`` is sampled (the app's trace stays
whole, as with ``parentbased_*``).

Pure functions of the request record: no OpenTelemetry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from .events import RequestRecord
from .outcomes import AttemptEnd, RequestOutcome

ENV = "MODELROUTE_TRACES_TAIL_RATIO"

_ID_MASK = (1 << 64) - 1


class TailConfigError(ValueError):
    """``MODELROUTE_TRACES_TAIL_RATIO`` is not a number between 0 and 1."""


def tail_ratio_from_env(environ: Mapping[str, str]) -> float | None:
    """The ratio of ordinary traces to keep, or None when tail decisions are off."""
    text = environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        ratio = float(text)
    except ValueError:
        raise TailConfigError(
            f"{ENV}={text!r} is not a number: set the share of ordinary traces to keep, "
            "between 0 and 1 (e.g. 0.01), or unset it for the OTEL_TRACES_SAMPLER head sampler"
        ) from None
    if not 0.0 <= ratio <= 1.0:
        raise TailConfigError(f"{ENV}={text!r} must be between 0 and 1 (e.g. 0.01)")
    return ratio


class KeepReason(StrEnum):
    """Why a trace was kept: the span attribute ``modelroute.trace.kept``."""

    ERROR = "error"
    FAILOVER = "failover"
    HEDGE = "hedge"
    BUDGET = "budget"
    LATENCY = "latency"
    PARENT = "parent"  # the app's traceparent was sampled
    RATIO = "ratio"  # one of the ordinary traces the ratio keeps


def why_keep(record: RequestRecord) -> KeepReason | None:
    """Why this request's trace matters (the first reason that applies), or None."""
    if record.outcome != RequestOutcome.OK:
        return KeepReason.ERROR
    attempts = record.attempts
    if len(attempts) > 1 or record.fallback or record.extra.get("skipped_reason"):
        return KeepReason.HEDGE if any(a.hedge for a in attempts) else KeepReason.FAILOVER
    for attempt in attempts:
        if attempt.hedge:
            return KeepReason.HEDGE
        if attempt.result != AttemptEnd.OK:
            return KeepReason.FAILOVER
    if record.budget_action is not None:
        return KeepReason.BUDGET
    budget = record.latency_budget
    if budget is not None and record.duration > budget:
        return KeepReason.LATENCY
    return None


class TailSampler:
    """The keep/drop decision for a finished request."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        # as TraceIdRatioBased: keep when the trace id's low 64 bits fall under the bound
        self._bound = round(ratio * (1 << 64))

    def decide(
        self, record: RequestRecord, trace_id: int, parent_sampled: bool
    ) -> KeepReason | None:
        """The reason the trace is kept (``error``, ``failover``, …, ``parent``, ``ratio``) or None."""
        reason = why_keep(record)
        if reason is not None:
            return reason
        if parent_sampled:
            return KeepReason.PARENT
        if trace_id & _ID_MASK < self._bound:
            return KeepReason.RATIO
        return None
