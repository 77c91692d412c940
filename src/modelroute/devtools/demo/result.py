"""Everything the demo measured, and the JSON the CLI prints with ``--json``.

Why one object: the CLI's text report, its JSON and the tests all read the
same :class:`DemoResult`, so what the report claims is what was recorded.
The per-category and outage summaries are derived on demand by
:mod:`.categories` and :mod:`.failover`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from modelroute.proxy.costreport import CostReport

from .categories import CategorySummary, summarize_categories
from .failover import FailoverSummary, summarize_failover
from .options import DemoOptions
from .records import HealthEvent, RequestResult
from .stats import ms, percentile, rounded


@dataclass
class DemoResult:
    """One run: its settings, every request, the health changes and the proxy's own counts."""

    options: DemoOptions
    proxy_url: str
    admin_url: str
    endpoints: dict[str, list[str]]  # provider -> regions, as the route file declares them
    endpoint_urls: dict[str, str]  # provider@region -> the fake's base URL (stopped by now)
    requests: list[RequestResult]
    down_region: str
    down_at: float
    back_at: float | None
    sent_until: float  # when the last request was sent
    finished_at: float  # when the last answer arrived
    wall_seconds: float  # the whole demo, start-up and shut-down included
    health_events: list[HealthEvent]
    cost: CostReport
    proxy_requests: dict[str, float]  # modelroute_requests_total by outcome
    metrics_fallbacks: list[tuple[str, str, str, str, float]]  # route, from, to, reason, n

    # -- counts ---------------------------------------------------------------------------

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.requests if r.outcome == outcome)

    @property
    def lost(self) -> list[RequestResult]:
        return [r for r in self.requests if r.outcome == "lost"]

    @property
    def errors(self) -> list[RequestResult]:
        return [r for r in self.requests if r.outcome == "error"]

    @property
    def regions(self) -> list[str]:
        seen: dict[str, None] = {}
        for regions in self.endpoints.values():
            for region in regions:
                seen.setdefault(region, None)
        return list(seen)

    # -- per category -----------------------------------------------------------------------

    def categories(self) -> list[CategorySummary]:
        return summarize_categories(self.requests, self.cost)

    @property
    def misclassified(self) -> list[RequestResult]:
        return [
            r
            for r in self.requests
            if r.model == "auto" and r.route is not None and r.route != r.category
        ]

    # -- the outage -----------------------------------------------------------------------

    def failover(self) -> FailoverSummary:
        return summarize_failover(
            self.requests, self.health_events, self.down_region, self.down_at, self.back_at
        )

    # -- over time --------------------------------------------------------------------------

    def timeline(self, max_columns: int = 24) -> tuple[float, list[dict[str, int]]]:
        """Per time bucket: requests sent, served per region, fallbacks, errors and lost."""
        width = float(max(1, math.ceil(self.sent_until / max_columns)))
        n = max(1, math.ceil((self.sent_until + 1e-9) / width))
        buckets: list[dict[str, int]] = [
            {"sent": 0, "fallbacks": 0, "failed": 0, **{g: 0 for g in self.regions}}
            for _ in range(n)
        ]
        for r in self.requests:
            b = buckets[min(n - 1, int(r.at // width))]
            b["sent"] += 1
            if r.outcome == "ok" and r.region in b:
                b[r.region] += 1
            if r.fell_back:
                b["fallbacks"] += 1
            if r.outcome != "ok":
                b["failed"] += 1
        return width, buckets

    # -- totals ---------------------------------------------------------------------------

    def latency_percentiles(self) -> tuple[float | None, float | None]:
        values = [r.latency for r in self.requests if r.outcome == "ok" and r.latency is not None]
        return percentile(values, 0.5), percentile(values, 0.99)

    @property
    def unpriced_input_tokens(self) -> float:
        return sum(r.unpriced_input_tokens for r in self.cost.routes)

    @property
    def output_tokens(self) -> float:
        return sum(r.output_tokens for r in self.cost.routes)

    def to_dict(self) -> dict[str, Any]:
        failover = self.failover()
        width, buckets = self.timeline()
        p50, p99 = self.latency_percentiles()
        return {
            "proxy": {"baseURL": self.proxy_url + "/v1", "admin": self.admin_url},
            "endpoints": self.endpoints,
            "endpointURLs": self.endpoint_urls,
            "options": {
                "seconds": self.options.seconds,
                "rate": self.options.rate,
                "down": self.down_region,
            },
            "totals": {
                "requests": len(self.requests),
                "ok": self.count("ok"),
                "errors": self.count("error"),
                "lost": self.count("lost"),
                "fellBack": sum(1 for r in self.requests if r.fell_back),
                "misclassified": len(self.misclassified),
                "p50Ms": ms(p50),
                "p99Ms": ms(p99),
                "costUSD": rounded(self.cost.cost_usd, 10),
                "allPremiumUSD": rounded(self.cost.counterfactual_usd, 10),
                "savedFraction": rounded(self.cost.saved_fraction, 4),
                "outputTokens": self.output_tokens,
                "unpricedInputTokens": self.unpriced_input_tokens,
                "proxyCounted": self.proxy_requests,
                "sentUntil": rounded(self.sent_until),
                "finishedAt": rounded(self.finished_at),
                "wallSeconds": rounded(self.wall_seconds),
            },
            "categories": [
                {
                    "category": c.category,
                    "requests": c.requests,
                    "ok": c.ok,
                    "errors": c.errors,
                    "lost": c.lost,
                    "classified": c.classified,
                    "classifiedAsScripted": c.as_scripted,
                    "streamed": c.streamed,
                    "p50Ms": ms(c.p50),
                    "p99Ms": ms(c.p99),
                    "ttftP50Ms": ms(c.ttft_p50),
                    "servedBy": [
                        {"model": m, "region": g, "requests": n} for m, g, n in c.served_by
                    ],
                    "costUSD": rounded(c.cost_usd, 10),
                    "outputTokens": c.output_tokens,
                }
                for c in self.categories()
            ],
            "failover": {
                "region": failover.region,
                "downAt": rounded(failover.down_at),
                "backAt": rounded(failover.back_at),
                "requestsWhileDown": failover.during,
                "okWhileDown": failover.during_ok,
                "failedAttempts": failover.failed_attempts,
                "windowEnd": rounded(failover.window_end),
                "probes": failover.probes,
                "failbackAt": rounded(failover.failback_at),
                "extraMsP50": failover.extra_ms_p50,
                "fallbacks": [
                    {"from": f.first, "to": f.served, "why": f.why, "requests": f.requests}
                    for f in failover.fallbacks
                ],
                "outOfRotation": [
                    {"at": rounded(e.at), "event": e.describe()} for e in failover.out_of_rotation
                ],
                "servedElsewhere": dict(failover.served_elsewhere),
            },
            "healthEvents": [
                {"at": rounded(e.at), "event": e.describe()} for e in self.health_events
            ],
            "metricsFallbacks": [
                {"route": a, "from": b, "to": c, "reason": d, "requests": n}
                for a, b, c, d, n in self.metrics_fallbacks
            ],
            "timeline": {"bucketSeconds": width, "buckets": buckets},
            "requests": [r.to_dict() for r in self.requests],
        }
