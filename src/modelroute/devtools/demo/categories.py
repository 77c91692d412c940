"""What served each category: counts, latency, the models and regions, the spend.

Why a module of its own: the first table of the report and the ``categories``
of the JSON are both read from here, so they cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from modelroute.proxy.costreport import CostReport

from .records import RequestResult
from .stats import percentile
from .workload import CATEGORIES


@dataclass(frozen=True)
class CategorySummary:
    """One row of the report's first table: a category and what served it."""

    category: str
    requests: int
    ok: int
    errors: int
    lost: int
    classified: int  # sent as "auto" and put here by the classifier
    as_scripted: int  # of those, how many the script meant for this category
    streamed: int
    p50: float | None
    p99: float | None
    ttft_p50: float | None
    served_by: list[tuple[str, str, int]]  # (model, region, requests), most first
    cost_usd: float
    output_tokens: float


def summarize_categories(
    requests: Sequence[RequestResult], cost: CostReport
) -> list[CategorySummary]:
    """One summary per category, in :data:`CATEGORIES` order; spend from the proxy's metrics."""
    out = []
    spend = {r.route: r for r in cost.routes}
    for category in CATEGORIES:
        rows = [r for r in requests if r.served_as == category]
        ok = [r for r in rows if r.outcome == "ok"]
        latencies = [r.latency for r in ok if r.latency is not None]
        ttfts = [r.ttft for r in ok if r.stream and r.ttft is not None]
        served: Counter[tuple[str, str]] = Counter(
            (r.served_model or "?", r.region or "?") for r in ok
        )
        first_seen = {key: i for i, key in enumerate(served)}
        classified = [r for r in rows if r.model == "auto"]
        route_spend = spend.get(category)
        out.append(
            CategorySummary(
                category=category,
                requests=len(rows),
                ok=len(ok),
                errors=sum(1 for r in rows if r.outcome == "error"),
                lost=sum(1 for r in rows if r.outcome == "lost"),
                classified=len(classified),
                as_scripted=sum(1 for r in classified if r.category == category),
                streamed=sum(1 for r in rows if r.stream),
                p50=percentile(latencies, 0.50),
                p99=percentile(latencies, 0.99),
                ttft_p50=percentile(ttfts, 0.50),
                # most first; on a tie, the one that served first (the route's preference)
                served_by=[
                    (m, g, n)
                    for (m, g), n in sorted(
                        served.items(), key=lambda kv: (-kv[1], first_seen[kv[0]])
                    )
                ],
                cost_usd=route_spend.cost_usd if route_spend else 0.0,
                output_tokens=route_spend.output_tokens if route_spend else 0.0,
            )
        )
    return out
