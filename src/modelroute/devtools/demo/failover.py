"""The outage as the records tell it: who fell back where, and how fast the proxy reacted.

Why derived here and not in the proxy: the demo judges the proxy from the
outside – the client's requests, the proxy's attempt records and the health
changes its ``/metrics`` showed – the way an operator would.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .records import Attempt, HealthEvent, RequestResult
from .stats import most_common, ms, percentile


@dataclass(frozen=True)
class Fallback:
    """Requests whose first attempt failed and that another candidate served."""

    first: str  # provider/model@region tried first
    served: str  # provider/model@region that answered
    why: str  # the first attempt's result (connect, timeout, 5xx ...)
    requests: int


@dataclass(frozen=True)
class FailoverSummary:
    """The outage in numbers: what it cost, how the proxy routed around it, when it came back."""

    region: str
    down_at: float
    back_at: float | None
    during: int  # requests sent while the region was down
    during_ok: int
    fallbacks: list[Fallback]
    failed_attempts: int  # attempts that hit the down region and failed
    window_end: float | None  # the last failed attempt before the proxy took it out of rotation
    probes: int  # failed attempts after that: the proxy checking whether the region is back
    out_of_rotation: list[HealthEvent]  # the first ejection / open circuit of each kind
    failback_at: float | None  # the first request served in the region after it came back
    extra_ms_p50: float | None  # time lost to failed attempts, median over fell-back requests
    served_elsewhere: list[tuple[str, int]]  # regions that served the down region's traffic


def summarize_failover(
    requests: Sequence[RequestResult],
    health_events: Sequence[HealthEvent],
    region: str,
    down_at: float,
    back_at: float | None,
) -> FailoverSummary:
    """The failover of ``region`` (down from ``down_at`` until ``back_at``, None = the end)."""
    end = back_at if back_at is not None else math.inf
    during = [r for r in requests if down_at <= r.at < end]
    pairs: Counter[tuple[str, str, str]] = Counter()
    extra: list[float] = []
    for r in requests:
        served = r.served
        if not r.fell_back or served is None or not r.attempts:
            continue
        first = r.attempts[0]
        pairs[(first.candidate, served.candidate, first.result)] += 1
        extra.append(served.at - first.at)
    # When did the proxy stop sending ordinary traffic to each candidate there?  A region
    # ejection covers every route; an open circuit covers one route's candidate.
    first_out: dict[tuple[str | None, str, str | None], HealthEvent] = {}
    for event in health_events:
        if event.region == region and event.out and event.at >= down_at:
            first_out.setdefault((event.route, event.provider, event.model), event)
    burst: list[Attempt] = []
    probes = 0
    for r in requests:
        for a in r.attempts:
            if a.region != region or a.result == "ok" or a.at < down_at:
                continue
            outs = [
                e.at
                for key in ((None, a.provider, None), (r.route, a.provider, a.model))
                if (e := first_out.get(key)) is not None
            ]
            if outs and a.at >= min(outs):
                probes += 1  # let through after the failback delay / open interval
            else:
                burst.append(a)
    failback_at = None
    if back_at is not None:
        back = [
            r.at for r in requests if r.at >= back_at and r.outcome == "ok" and r.region == region
        ]
        failback_at = min(back) if back else None
    # where the traffic that normally runs in the region went (categories with no answer
    # before the outage count as normally there)
    usual: dict[str, set[str | None]] = {}
    for r in requests:
        if r.at < down_at and r.outcome == "ok":
            usual.setdefault(r.served_as, set()).add(r.region)
    elsewhere: Counter[str] = Counter(
        r.region or "?"
        for r in during
        if r.outcome == "ok" and r.region != region and region in usual.get(r.served_as, {region})
    )
    return FailoverSummary(
        region=region,
        down_at=down_at,
        back_at=back_at,
        during=len(during),
        during_ok=sum(1 for r in during if r.outcome == "ok"),
        fallbacks=[Fallback(f, s, why, n) for (f, s, why), n in most_common(pairs)],
        failed_attempts=len(burst) + probes,
        window_end=max((a.at for a in burst), default=None),
        probes=probes,
        out_of_rotation=sorted(first_out.values(), key=lambda e: e.at),
        failback_at=failback_at,
        extra_ms_p50=ms(percentile(extra, 0.5)),
        served_elsewhere=most_common(elsewhere),
    )
