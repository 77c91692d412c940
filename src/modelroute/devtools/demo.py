"""``modelroute demo``: fake providers in three regions, a proxy, a scripted workload, an outage.

Why it exists: the claims modelroute makes – the cheap model serves the
simple majority, ``model: "auto"`` finds the category, a region outage costs
no request, residency holds through failover, cost is counted – can be seen
in twenty seconds on a laptop, with no API key and no cluster.

Nothing here is simulated inside the proxy: it is the real sidecar
(:func:`~modelroute.proxy.server.start_proxy`) on free 127.0.0.1 ports, in
front of real HTTP fakes (:mod:`.fake_provider`), driven over HTTP with
``aiohttp`` (a runtime dependency, so the demo works on a plain install).

* **Topology** – ``modelroute/examples/demo.yaml`` is a normal route file
  whose ``baseURL`` s are placeholders named ``<provider>_<region>``; one
  fake is started per placeholder, with the provider family's speed
  (:data:`PROFILES`) plus the region's distance (:data:`REGION_RTT_MS`).
* **Workload** – :func:`script`: a fixed, open-loop schedule (a request every
  ``1/rate`` s whatever the answers do, as real users behave), mostly
  ``model: "auto"``, with prompts of every category and some streams.
* **Outage** – at ``down_at`` every fake in ``down`` region starts resetting
  connections; at ``back_at`` (if set) it serves again.
* **Measurement** – the client's own view (status, headers, latency, whether
  the answer was complete), the proxy's attempt records (an observer on the
  running proxy, joined by ``x-request-id``), and its ``/metrics`` – polled
  while running for ejections and open circuits, scraped at the end for cost.

:func:`run_demo` returns a :class:`DemoResult`; ``modelroute.cli.demo``
renders it.  Every server is stopped before :func:`run_demo` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import string
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from modelroute.proxy.costreport import CostReport, parse_exposition
from modelroute.proxy.events import AttemptRecord as ProxyAttempt
from modelroute.proxy.events import RequestRecord, ShadowRecord
from modelroute.proxy.server import ProxyConfig, RunningProxy, start_proxy

from .fake_provider import FakeProvider, Knobs, start_fake_provider

__all__ = [
    "CATEGORIES",
    "DemoOptions",
    "DemoResult",
    "RequestResult",
    "run_demo",
    "script",
]

# The five categories of the seeds, in the order the report lists them.
CATEGORIES: Final = ("light", "general", "reasoning", "multimodal", "regional-cn")


# ---------------------------------------------------------------------------------------
# topology: how fast each family and region answers


@dataclass(frozen=True)
class Profile:
    """How a model family's endpoint behaves (time compressed, in the seeds' order of speed).

    The seeds put DeepSeek V4 Flash at ~60 tokens/s and Kimi at 30-35 with
    the slowest p99; Qwen's small models and GLM sit between.  Token rates
    here are ~5x the real ones so a reasoning answer streams in about a
    second, and answers are short; what matters is the ordering.
    """

    latency_ms: float  # before the answer (non-stream) or the stream headers
    ttft_ms: float  # then before the first streamed token
    tokens_per_second: float
    output_tokens: int


PROFILES: Final[Mapping[str, Profile]] = {
    "qwen": Profile(latency_ms=20, ttft_ms=15, tokens_per_second=400, output_tokens=16),
    "deepseek": Profile(latency_ms=30, ttft_ms=25, tokens_per_second=300, output_tokens=48),
    "kimi": Profile(latency_ms=50, ttft_ms=120, tokens_per_second=150, output_tokens=160),
    "glm": Profile(latency_ms=35, ttft_ms=40, tokens_per_second=250, output_tokens=64),
}
DEFAULT_PROFILE: Final = Profile(latency_ms=30, ttft_ms=30, tokens_per_second=300, output_tokens=32)

# Extra round trip from the app (in us-east-1) to each region.
REGION_RTT_MS: Final[Mapping[str, float]] = {
    "us-east-1": 0.0,
    "eu-west-1": 30.0,
    "cn-north-1": 80.0,
}
DEFAULT_RTT_MS: Final = 50.0

# A small slow tail on every endpoint, so p99 is not just p50.
TAIL_SHARE: Final = 0.04
TAIL_EXTRA_MS: Final = 250.0

ROUTES_RESOURCE: Final = "examples/demo.yaml"


def load_template() -> string.Template:
    """The demo's route file (package data), with ``${provider_region}`` base URL placeholders."""
    text = resources.files("modelroute").joinpath(ROUTES_RESOURCE).read_text(encoding="utf-8")
    return string.Template(text)


def endpoint_of(placeholder: str) -> tuple[str, str]:
    """``deepseek_us_east_1`` → ``("deepseek", "us-east-1")`` (provider names have no ``_``)."""
    provider, sep, region = placeholder.partition("_")
    if not sep or not region:
        raise ValueError(f"placeholder {placeholder!r} is not <provider>_<region>")
    return provider, region.replace("_", "-")


def knobs_for(provider: str, region: str) -> Knobs:
    p = PROFILES.get(provider, DEFAULT_PROFILE)
    return Knobs(
        region=region,
        latency_ms=p.latency_ms + REGION_RTT_MS.get(region, DEFAULT_RTT_MS),
        ttft_ms=p.ttft_ms,
        tokens_per_second=p.tokens_per_second,
        output_tokens=p.output_tokens,
        slow_share=TAIL_SHARE,
        slow_extra_ms=TAIL_EXTRA_MS,
    )


# ---------------------------------------------------------------------------------------
# the workload

# A 1x1 PNG: the classifier and the router look at the part's type, never decode it.
_PIXEL: Final = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

PROMPTS: Final[Mapping[str, tuple[Any, ...]]] = {
    "light": (
        "Classify the sentiment of this review as positive, negative or neutral: "
        "'Arrived on time, works great.'",
        "Extract the invoice number and the total from: "
        "'Invoice INV-20931, total due $1,284.00 by 30 May.'",
        "Is this email spam? Answer yes or no. 'You won a free cruise, click here to claim.'",
        "Label the intent of this support ticket (billing, bug, feature request): "
        "'I was charged twice this month.'",
    ),
    "general": (
        "Write a friendly two-paragraph reply to a customer asking when their order will ship.",
        "Summarize the trade-offs between running a service in one region versus three regions.",
        "Draft a short release note for a version that adds multi-region failover to our gateway.",
        "What are good practices for naming Kubernetes namespaces in a large organisation?",
    ),
    "reasoning": (
        "Prove that the sum of the first n odd numbers is n^2, step by step.",
        "A train leaves at 3pm at 60 km/h and another at 4pm at 90 km/h on the same track. "
        "Step by step, find when the second catches up, and show your work.",
        "Prove that there are infinitely many primes, then explain why the argument fails "
        "for primes of the form n^2 + 1.",
    ),
    "multimodal": (
        [
            {"type": "text", "text": "What does this receipt say? Give the vendor and the total."},
            {"type": "image_url", "image_url": {"url": _PIXEL}},
        ],
        [
            {"type": "text", "text": "Describe this architecture diagram in three bullet points."},
            {"type": "image_url", "image_url": {"url": _PIXEL}},
        ],
    ),
    "regional-cn": (
        "请用三句话总结多区域部署对服务可用性的好处。",
        "帮我写一封邮件，通知客户下周二凌晨进行系统维护。",
        "解释一下什么是熔断器，以及它在微服务中的作用。",
    ),
}

# Ten requests in the seeds' proportions: light work is the majority, reasoning is rare.
MIX: Final = (
    "light",
    "general",
    "light",
    "reasoning",
    "general",
    "multimodal",
    "light",
    "regional-cn",
    "general",
    "light",
)
NAMED_EVERY: Final = 7  # every 7th request names its category instead of "auto"


@dataclass(frozen=True)
class Step:
    """One scripted request."""

    index: int
    at: float  # seconds after the workload starts
    category: str  # what the script meant it to be
    model: str  # what it sends: "auto" or the category itself
    stream: bool
    body: dict[str, Any]

    @property
    def request_id(self) -> str:
        return f"demo-{self.index:04d}"


def script(seconds: float, rate: float) -> list[Step]:
    """The workload: ``seconds * rate`` requests, one every ``1/rate`` s, deterministic.

    Reasoning always streams (nobody waits for a proof in silence), light and
    image requests never do, general and Chinese chat alternate.
    """
    steps: list[Step] = []
    seen: Counter[str] = Counter()
    for i in range(max(1, int(seconds * rate))):
        category = MIX[i % len(MIX)]
        n = seen[category]
        seen[category] += 1
        prompts = PROMPTS[category]
        stream = category == "reasoning" or (category in ("general", "regional-cn") and n % 2 == 1)
        model = category if i % NAMED_EVERY == NAMED_EVERY - 1 else "auto"
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompts[n % len(prompts)]}],
            "max_tokens": 512 if category == "reasoning" else 256,
        }
        if stream:
            body["stream"] = True
        steps.append(Step(i, i / rate, category, model, stream, body))
    return steps


# ---------------------------------------------------------------------------------------
# what happened


@dataclass(frozen=True)
class Attempt:
    """One upstream attempt as the proxy recorded it."""

    provider: str
    model: str
    region: str
    result: str  # ok | connect | timeout | 429 | 5xx | ...
    at: float  # seconds after the workload started

    @property
    def candidate(self) -> str:
        return f"{self.provider}/{self.model}@{self.region}"


@dataclass
class RequestResult:
    """One request: what the client saw, joined with what the proxy recorded for it."""

    index: int
    at: float  # when it was sent, seconds after the workload started
    category: str  # the script's intent
    model: str  # "auto" or a category name
    stream: bool
    outcome: str = "lost"  # ok | error (a well-formed OpenAI error) | lost (neither)
    status: int | None = None
    route: str | None = None  # x-modelroute-route: for "auto", the category the proxy chose
    target: str | None = None  # x-modelroute-target: provider/model@region that served
    attempts_header: int | None = None
    reason: str | None = None  # x-modelroute-reason: the classifier's evidence
    latency: float | None = None  # until the last byte (or the error)
    ttft: float | None = None  # streams: until the first content chunk
    error: str = ""  # the proxy's error message, or what went wrong on the wire
    error_code: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def served(self) -> Attempt | None:
        ok = [a for a in self.attempts if a.result == "ok"]
        return ok[-1] if ok else None

    @property
    def region(self) -> str | None:
        if self.target and "@" in self.target:
            return self.target.rpartition("@")[2]
        served = self.served
        return served.region if served else None

    @property
    def served_model(self) -> str | None:
        if self.target and "/" in self.target:
            return self.target.partition("/")[2].rpartition("@")[0]
        served = self.served
        return served.model if served else None

    @property
    def fell_back(self) -> bool:
        """Served, but not by the first candidate tried."""
        return self.outcome == "ok" and (len(self.attempts) > 1 or (self.attempts_header or 1) > 1)

    @property
    def served_as(self) -> str:
        """The category that served it: the route the proxy chose, else the script's intent."""
        return self.route or self.category

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "at": _round(self.at),
            "category": self.category,
            "model": self.model,
            "stream": self.stream,
            "outcome": self.outcome,
            "status": self.status,
            "route": self.route,
            "target": self.target,
            "reason": self.reason,
            "latencyMs": _ms(self.latency),
            "ttftMs": _ms(self.ttft),
            "error": self.error or None,
            "errorCode": self.error_code,
            "attempts": [
                {"candidate": a.candidate, "result": a.result, "at": _round(a.at)}
                for a in self.attempts
            ],
            "costUSD": self.cost_usd,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
        }


@dataclass(frozen=True)
class HealthEvent:
    """A change seen on ``/metrics``: a region ejected or back, a circuit opened or closed."""

    at: float
    kind: str  # ejected | readmitted | circuit_open | circuit_closed
    provider: str
    region: str
    route: str | None = None
    model: str | None = None

    @property
    def out(self) -> bool:
        return self.kind in ("ejected", "circuit_open")

    def describe(self) -> str:
        what = {
            "ejected": "region ejected",
            "readmitted": "region back in rotation",
            "circuit_open": "circuit opened",
            "circuit_closed": "circuit closed",
        }[self.kind]
        where = f"{self.provider}@{self.region}"
        if self.route is not None:
            where = f"{self.route}: {self.provider}/{self.model}@{self.region}"
        return f"{what} ({where})"


@dataclass(frozen=True)
class CategorySummary:
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


@dataclass(frozen=True)
class Fallback:
    """Requests whose first attempt failed and that another candidate served."""

    first: str  # provider/model@region tried first
    served: str  # provider/model@region that answered
    why: str  # the first attempt's result (connect, timeout, 5xx ...)
    requests: int


@dataclass(frozen=True)
class FailoverSummary:
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


@dataclass
class DemoOptions:
    seconds: float = 16.0  # how long requests are sent
    rate: float = 8.0  # requests per second
    down: str = "us-east-1"  # the region taken down
    down_at: float = 0.35  # share of ``seconds`` at which it goes down
    back_at: float | None = 0.75  # share at which it serves again; None = stays down
    answer_within: float = 20.0  # a request with no answer by then counts as lost
    progress: Callable[[str], None] | None = None  # one-line notes while running

    def check(self) -> None:
        if not 1.0 <= self.seconds <= 600.0:
            raise ValueError("seconds must be between 1 and 600")
        if not 0.5 <= self.rate <= 200.0:
            raise ValueError("rate must be between 0.5 and 200 requests per second")
        if not 0.0 <= self.down_at < 1.0:
            raise ValueError("down_at must be a share of the run in [0, 1)")
        if self.back_at is not None and not self.down_at < self.back_at <= 1.0:
            raise ValueError("back_at must be after down_at and at most 1")


@dataclass
class DemoResult:
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
        out = []
        spend = {r.route: r for r in self.cost.routes}
        for category in CATEGORIES:
            rows = [r for r in self.requests if r.served_as == category]
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

    @property
    def misclassified(self) -> list[RequestResult]:
        return [
            r
            for r in self.requests
            if r.model == "auto" and r.route is not None and r.route != r.category
        ]

    # -- the outage -----------------------------------------------------------------------

    def failover(self) -> FailoverSummary:
        region = self.down_region
        end = self.back_at if self.back_at is not None else math.inf
        during = [r for r in self.requests if self.down_at <= r.at < end]
        pairs: Counter[tuple[str, str, str]] = Counter()
        extra: list[float] = []
        for r in self.requests:
            served = r.served
            if not r.fell_back or served is None or not r.attempts:
                continue
            first = r.attempts[0]
            pairs[(first.candidate, served.candidate, first.result)] += 1
            extra.append(served.at - first.at)
        # When did the proxy stop sending ordinary traffic to each candidate there?  A region
        # ejection covers every route; an open circuit covers one route's candidate.
        first_out: dict[tuple[str | None, str, str | None], HealthEvent] = {}
        for event in self.health_events:
            if event.region == region and event.out and event.at >= self.down_at:
                first_out.setdefault((event.route, event.provider, event.model), event)
        burst: list[Attempt] = []
        probes = 0
        for r in self.requests:
            for a in r.attempts:
                if a.region != region or a.result == "ok" or a.at < self.down_at:
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
        if self.back_at is not None:
            back = [
                r.at
                for r in self.requests
                if r.at >= self.back_at and r.outcome == "ok" and r.region == region
            ]
            failback_at = min(back) if back else None
        # where the traffic that normally runs in the region went (categories with no answer
        # before the outage count as normally there)
        usual: dict[str, set[str | None]] = {}
        for r in self.requests:
            if r.at < self.down_at and r.outcome == "ok":
                usual.setdefault(r.served_as, set()).add(r.region)
        elsewhere: Counter[str] = Counter(
            r.region or "?"
            for r in during
            if r.outcome == "ok"
            and r.region != region
            and region in usual.get(r.served_as, {region})
        )
        return FailoverSummary(
            region=region,
            down_at=self.down_at,
            back_at=self.back_at,
            during=len(during),
            during_ok=sum(1 for r in during if r.outcome == "ok"),
            fallbacks=[Fallback(f, s, why, n) for (f, s, why), n in _most_common(pairs)],
            failed_attempts=len(burst) + probes,
            window_end=max((a.at for a in burst), default=None),
            probes=probes,
            out_of_rotation=sorted(first_out.values(), key=lambda e: e.at),
            failback_at=failback_at,
            extra_ms_p50=_ms(percentile(extra, 0.5)),
            served_elsewhere=_most_common(elsewhere),
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
                "p50Ms": _ms(p50),
                "p99Ms": _ms(p99),
                "costUSD": _round(self.cost.cost_usd, 10),
                "allPremiumUSD": _round(self.cost.counterfactual_usd, 10),
                "savedFraction": _round(self.cost.saved_fraction, 4),
                "outputTokens": self.output_tokens,
                "unpricedInputTokens": self.unpriced_input_tokens,
                "proxyCounted": self.proxy_requests,
                "sentUntil": _round(self.sent_until),
                "finishedAt": _round(self.finished_at),
                "wallSeconds": _round(self.wall_seconds),
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
                    "p50Ms": _ms(c.p50),
                    "p99Ms": _ms(c.p99),
                    "ttftP50Ms": _ms(c.ttft_p50),
                    "servedBy": [
                        {"model": m, "region": g, "requests": n} for m, g, n in c.served_by
                    ],
                    "costUSD": _round(c.cost_usd, 10),
                    "outputTokens": c.output_tokens,
                }
                for c in self.categories()
            ],
            "failover": {
                "region": failover.region,
                "downAt": _round(failover.down_at),
                "backAt": _round(failover.back_at),
                "requestsWhileDown": failover.during,
                "okWhileDown": failover.during_ok,
                "failedAttempts": failover.failed_attempts,
                "windowEnd": _round(failover.window_end),
                "probes": failover.probes,
                "failbackAt": _round(failover.failback_at),
                "extraMsP50": failover.extra_ms_p50,
                "fallbacks": [
                    {"from": f.first, "to": f.served, "why": f.why, "requests": f.requests}
                    for f in failover.fallbacks
                ],
                "outOfRotation": [
                    {"at": _round(e.at), "event": e.describe()} for e in failover.out_of_rotation
                ],
                "servedElsewhere": dict(failover.served_elsewhere),
            },
            "healthEvents": [
                {"at": _round(e.at), "event": e.describe()} for e in self.health_events
            ],
            "metricsFallbacks": [
                {"route": a, "from": b, "to": c, "reason": d, "requests": n}
                for a, b, c, d, n in self.metrics_fallbacks
            ],
            "timeline": {"bucketSeconds": width, "buckets": buckets},
            "requests": [r.to_dict() for r in self.requests],
        }


# ---------------------------------------------------------------------------------------
# helpers


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (an observed value, never interpolated); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _most_common(counter: Mapping[Any, int]) -> list[Any]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------------------
# the proxy's own records, joined to the client's by x-request-id


@dataclass
class _Trace:
    attempts: list[ProxyAttempt]
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None


class _AttemptLog:
    """An observer on the running proxy: the attempts behind each demo request.

    The client only sees the target that finally served and the attempt
    count; where a request fell back *from* is known to the proxy alone.
    """

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self.traces: dict[str, _Trace] = {}

    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        rid = headers.get("x-request-id")
        if rid is not None:
            self._ids[id(record)] = rid

    def attempt_started(self, record: RequestRecord, attempt: ProxyAttempt) -> None:
        pass

    def attempt_finished(self, record: RequestRecord, attempt: ProxyAttempt) -> None:
        pass

    def request_finished(self, record: RequestRecord) -> None:
        rid = self._ids.pop(id(record), None)
        if rid is not None:
            self.traces[rid] = _Trace(
                list(record.attempts), record.cost_usd, record.input_tokens, record.output_tokens
            )

    def shadow_finished(self, record: ShadowRecord) -> None:
        pass


# ---------------------------------------------------------------------------------------
# /metrics while running


class _HealthWatch:
    """Polls ``/metrics`` like a fast Prometheus and notes when regions and circuits change."""

    def __init__(self, session: aiohttp.ClientSession, url: str, t0: float) -> None:
        self.session = session
        self.url = url
        self.t0 = t0
        self.events: list[HealthEvent] = []
        self._regions: dict[tuple[str, str], bool] = {}
        self._circuits: dict[tuple[str, str, str, str], bool] = {}

    async def run(self, interval: float) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                await self.scrape()
            await asyncio.sleep(interval)

    async def scrape(self) -> str:
        async with self.session.get(self.url) as response:
            text = await response.text()
        now = time.perf_counter() - self.t0
        for family in text_string_to_metric_families(text):
            if family.name == "modelroute_region_ejected":
                for s in family.samples:
                    key = (s.labels["provider"], s.labels["region"])
                    out = s.value != 0
                    if self._regions.get(key, False) != out:
                        kind = "ejected" if out else "readmitted"
                        self.events.append(HealthEvent(now, kind, *key))
                    self._regions[key] = out
            elif family.name == "modelroute_circuit_state":
                for s in family.samples:
                    labels = s.labels
                    ckey = (labels["route"], labels["provider"], labels["model"], labels["region"])
                    out = s.value != 0  # open or half-open: not taking ordinary traffic
                    if self._circuits.get(ckey, False) != out:
                        kind = "circuit_open" if out else "circuit_closed"
                        self.events.append(
                            HealthEvent(now, kind, ckey[1], ckey[3], route=ckey[0], model=ckey[2])
                        )
                    self._circuits[ckey] = out
        return text


def _metric_sums(text: str) -> tuple[dict[str, float], list[tuple[str, str, str, str, float]]]:
    """Requests by outcome and fallbacks by (route, from, to, reason) from one scrape."""
    outcomes: Counter[str] = Counter()
    fallbacks: list[tuple[str, str, str, str, float]] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "modelroute_requests_total":
                outcomes[s.labels["outcome"]] += int(s.value)
            elif s.name == "modelroute_fallbacks_total" and s.value:
                lab = s.labels
                fallbacks.append(
                    (lab["route"], lab["from_model"], lab["to_model"], lab["reason"], s.value)
                )
    return {k: float(v) for k, v in sorted(outcomes.items())}, sorted(fallbacks)


# ---------------------------------------------------------------------------------------
# the client


async def _send(
    session: aiohttp.ClientSession, url: str, step: Step, t0: float, within: float
) -> RequestResult:
    """Send one scripted request and judge the answer: complete, a well-formed error, or lost."""
    sent = time.perf_counter()
    result = RequestResult(step.index, sent - t0, step.category, step.model, step.stream)
    headers = {"x-request-id": step.request_id, "Authorization": "Bearer demo-app-key"}
    try:
        async with asyncio.timeout(within):
            async with session.post(url, data=orjson.dumps(step.body), headers=headers) as resp:
                result.status = resp.status
                h = resp.headers
                result.route = h.get("x-modelroute-route")
                result.target = h.get("x-modelroute-target")
                result.reason = h.get("x-modelroute-reason")
                attempts = h.get("x-modelroute-attempts")
                result.attempts_header = int(attempts) if attempts and attempts.isdigit() else None
                if resp.status == 200 and step.stream:
                    await _read_stream(resp, result, sent)
                else:
                    _judge_body(await resp.read(), resp.status, result)
    except TimeoutError:
        result.outcome = "lost"
        result.error = f"no complete answer within {within:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        result.outcome = "lost"
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    result.latency = time.perf_counter() - sent
    return result


def _judge_body(body: bytes, status: int, result: RequestResult) -> None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        result.outcome = "lost"
        result.error = f"HTTP {status} with a body that is not JSON: {body[:80]!r}"
        return
    if not isinstance(doc, dict):
        result.outcome = "lost"
        result.error = f"HTTP {status} with a JSON body that is not an object"
        return
    error = doc.get("error")
    if status == 200 and isinstance(doc.get("choices"), list) and doc["choices"]:
        result.outcome = "ok"
    elif status >= 400 and isinstance(error, dict) and isinstance(error.get("message"), str):
        result.outcome = "error"
        result.error = error["message"]
        code = error.get("code")
        result.error_code = str(code) if code is not None else None
    else:
        result.outcome = "lost"
        result.error = f"HTTP {status} that is neither an answer nor an OpenAI error"


async def _read_stream(resp: aiohttp.ClientResponse, result: RequestResult, sent: float) -> None:
    """Read SSE to the end: ok only with ``[DONE]`` and no error event on the way."""
    done = False
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            result.outcome = "lost"
            result.error = f"a stream event that is not JSON: {data[:80]!r}"
            return
        if not isinstance(doc, dict):
            continue
        error = doc.get("error")
        if isinstance(error, dict):
            result.outcome = "error"
            result.error = str(error.get("message", ""))
            code = error.get("code")
            result.error_code = str(code) if code is not None else "stream_error"
            return
        if result.ttft is None and any(
            isinstance(c, dict) and (c.get("delta") or {}).get("content")
            for c in doc.get("choices") or ()
        ):
            result.ttft = time.perf_counter() - sent
    if done:
        result.outcome = "ok"
    else:
        result.outcome = "lost"
        result.error = "the stream ended without [DONE] or an error event"


# ---------------------------------------------------------------------------------------
# the run


@dataclass
class _Fake:
    provider: str
    region: str
    fake: FakeProvider
    url: str


async def _start_fakes(
    template: string.Template, stack: contextlib.AsyncExitStack
) -> dict[str, _Fake]:
    fakes: dict[str, _Fake] = {}
    for n, placeholder in enumerate(template.get_identifiers()):
        provider, region = endpoint_of(placeholder)
        fake, runner, port = await start_fake_provider(
            "127.0.0.1", 0, knobs_for(provider, region), seed=1000 + n
        )
        stack.push_async_callback(runner.cleanup)
        fakes[placeholder] = _Fake(provider, region, fake, f"http://127.0.0.1:{port}/v1")
    return fakes


async def _at(t0: float, offset: float) -> None:
    delay = t0 + offset - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_demo(options: DemoOptions | None = None) -> DemoResult:
    """Start everything, run the workload with the outage, stop everything, return what happened.

    Raises ``ValueError`` for bad options and
    :class:`~modelroute.proxy.sources.ConfigError` if the route file is broken.
    """
    options = options or DemoOptions()
    options.check()
    say = options.progress or (lambda _line: None)
    wall_started = time.perf_counter()
    template = load_template()
    async with contextlib.AsyncExitStack() as stack:
        fakes = await _start_fakes(template, stack)
        regions = {f.region for f in fakes.values()}
        if options.down not in regions:
            raise ValueError(f"no region {options.down!r} in the demo (it has {sorted(regions)})")
        endpoints: dict[str, list[str]] = {}
        for f in fakes.values():
            endpoints.setdefault(f.provider, []).append(f.region)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelroute-demo-")))
        routes = workdir / "demo-routes.yaml"
        routes.write_text(
            template.substitute({name: f.url for name, f in fakes.items()}), encoding="utf-8"
        )
        running: RunningProxy = await start_proxy(
            ProxyConfig(
                listen=("127.0.0.1", 0),
                admin=("127.0.0.1", 0),
                route_files=[routes],
                drain_seconds=1.0,
                reload_seconds=3600.0,  # the file never changes during the run
                tracing=False,
            )
        )
        stack.push_async_callback(running.stop)
        log = _AttemptLog()
        running.proxy.observers.add(log)
        assert running.admin_url is not None
        steps = script(options.seconds, options.rate)
        down_at = options.seconds * options.down_at
        back_at = None if options.back_at is None else options.seconds * options.back_at
        say(
            f"{len(fakes)} fake endpoints in {len(regions)} regions, the proxy on "
            f"{running.base_url}"
        )
        say(
            f"sending {len(steps)} requests over {options.seconds:g} s; "
            f"{options.down} goes down at {down_at:.1f} s"
            + (f", back at {back_at:.1f} s" if back_at is not None else "")
        )

        connector = aiohttp.TCPConnector(limit=0)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        t0 = time.perf_counter()
        watch = _HealthWatch(session, running.admin_url + "/metrics", t0)
        watcher = asyncio.create_task(watch.run(0.1), name="demo-metrics-watch")
        in_region = [f for f in fakes.values() if f.region == options.down]

        async def outage() -> None:
            await _at(t0, down_at)
            for f in in_region:
                f.fake.knobs.update({"down": True})
            say(
                f"t={time.perf_counter() - t0:5.1f} s  {options.down} is DOWN: its "
                f"{len(in_region)} endpoints reset every connection"
            )
            if back_at is not None:
                await _at(t0, back_at)
                for f in in_region:
                    f.fake.knobs.update({"down": False})
                say(f"t={time.perf_counter() - t0:5.1f} s  {options.down} is back")

        chaos = asyncio.create_task(outage(), name="demo-outage")
        url = running.base_url + "/chat/completions"
        tasks: list[asyncio.Task[RequestResult]] = []
        try:
            for step in steps:
                await _at(t0, step.at)
                tasks.append(
                    asyncio.create_task(_send(session, url, step, t0, options.answer_within))
                )
            sent_until = time.perf_counter() - t0
            pending = sum(1 for t in tasks if not t.done())
            say(f"t={sent_until:5.1f} s  last request sent; waiting for {pending} in flight")
            results = list(await asyncio.gather(*tasks))
            finished_at = time.perf_counter() - t0
            await chaos
            # the proxy accounts a request just after its last byte: let it catch up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.proxy.dispatcher.idle.wait(), 2.0)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            final = await watch.scrape()
        finally:
            for task in (*tasks, chaos, watcher):
                task.cancel()
            await asyncio.gather(*tasks, chaos, watcher, return_exceptions=True)

    for r in results:
        trace = log.traces.get(f"demo-{r.index:04d}")
        if trace is None:
            continue
        r.attempts = [
            Attempt(a.provider, a.model, a.region, a.result, a.started - t0) for a in trace.attempts
        ]
        r.cost_usd = trace.cost_usd
        r.input_tokens = trace.input_tokens
        r.output_tokens = trace.output_tokens
    outcomes, metric_fallbacks = _metric_sums(final)
    return DemoResult(
        options=options,
        proxy_url=running.api_url,
        admin_url=running.admin_url,
        endpoints=endpoints,
        endpoint_urls={f"{f.provider}@{f.region}": f.url for f in fakes.values()},
        requests=results,
        down_region=options.down,
        down_at=down_at,
        back_at=back_at,
        sent_until=sent_until,
        finished_at=finished_at,
        wall_seconds=time.perf_counter() - wall_started,
        health_events=watch.events,
        cost=parse_exposition(final, source="the demo proxy's /metrics"),
        proxy_requests=outcomes,
        metrics_fallbacks=metric_fallbacks,
    )
