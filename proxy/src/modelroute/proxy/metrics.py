"""Prometheus metrics for the sidecar: what happened to requests, and the live state behind it.

Two halves, both on one :class:`~prometheus_client.CollectorRegistry` that the
proxy owns (never the process-global one: a test process runs many proxies):

* :class:`PrometheusObserver` turns finished :class:`~.events.RequestRecord` s
  into counters and histograms.  It does all its work in ``request_finished``
  (one place, every attempt known, nothing half-counted) and caches each
  label child, so a request costs a few dict lookups and increments.
* :class:`StateCollector` reads circuit breakers, region ejection, budgets and
  the route table *at scrape time*: state is never copied on the request path,
  and a scrape always shows the state as it is now.

Money is summed exactly: costs are accumulated as integer picodollars
(1e-12 USD) and divided once at exposition, because adding millions of
~1e-7 USD floats drifts, and ``modelroute report`` compares these totals with
what the premium target would have cost.

Cardinality: every label value comes from the compiled table (route, model,
provider, region, category) or from a small fixed vocabulary (outcome, attempt
result, fallback reason, token type).  Never the requested model string (an
app can send anything), prompts, user ids or sticky keys.  See
``docs/observability.md``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.registry import Collector

from .events import AttemptRecord, RequestRecord, ShadowRecord, idle_hook
from .health import HealthBook
from .keys import endpoint_key, split_candidate, split_endpoint
from .loop_metrics import LoopCounter, LoopHistogram
from .outcomes import ShadowOutcome
from .table import CompiledTable
from .tablestore import TableStore

log = logging.getLogger("modelroute.metrics")

NONE = "none"  # label value when there is nothing to name (no route resolved, nothing served)

# Whole requests to LLMs: tens of milliseconds (a cached embedding) to minutes (long reasoning).
# Edges sit on the latency figures the seeds quote (~320 ms, ~680 ms, 1.1 s, 1.8 s, 3.4 s, 4 s).
DURATION_BUCKETS = (
    0.05, 0.1, 0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5,
    10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
TTFT_BUCKETS = (
    0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip
# The proxy's own added time: its budget is well under a millisecond, so resolve 50 µs steps.
OVERHEAD_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
)  # fmt: skip
# Active health probes: a connect or a GET, loopback to a far region's TLS handshake.
PROBE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

PICO = 10**12  # money is summed in integer picodollars


# ---------------------------------------------------------------------------------------
# small building blocks


class MoneyCounter(Collector):
    """A USD counter summed exactly (integer picodollars), exposed as a float at scrape."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], int] = {}

    def add(self, labels: tuple[str, ...], usd: float) -> None:
        if not math.isfinite(usd) or usd < 0:
            return  # a broken price must not corrupt a monotonic counter
        self.values[labels] = self.values.get(labels, 0) + round(usd * PICO)

    def value(self, *labels: str) -> float:
        return self.values.get(labels, 0) / PICO

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, pico in list(self.values.items()):
            family.add_metric(list(labels), pico / PICO)
        yield family


# ---------------------------------------------------------------------------------------
# per-request metrics


class PrometheusObserver:
    """The :class:`~.events.Observer` that counts requests, attempts, tokens, cost and latency.

    ``PrometheusObserver()`` makes its own registry (``.registry``); pass one to
    share it.  Register a :class:`StateCollector` on the same registry and
    serve it with :func:`render`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = LoopCounter(
            "modelroute_requests_total",
            "Requests by the route and the target (model, provider, region) that served them.",
            ["route", "model", "provider", "region", "outcome"],
            registry=r,
        )
        self.duration = LoopHistogram(
            "modelroute_request_duration_seconds",
            "Whole request time as the app sees it (streams: until the last byte), by the "
            "model that served (per A/B arm; none when nothing did).",
            ["route", "model", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = LoopHistogram(
            "modelroute_time_to_first_token_seconds",
            "Time until the first byte of the answer went to the app, by the model that served.",
            ["route", "model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.attempts = LoopCounter(
            "modelroute_upstream_attempts_total",
            "Upstream attempts by result (ok, connect, timeout, 429, 5xx, ...).",
            ["route", "model", "provider", "region", "result"],
            registry=r,
        )
        self.fallbacks = LoopCounter(
            "modelroute_fallbacks_total",
            "Requests served by another candidate than the first one tried, and why.",
            ["route", "from_model", "to_model", "reason"],
            registry=r,
        )
        self.tokens = LoopCounter(
            "modelroute_tokens_total",
            "Tokens reported by the upstream that served, or estimated for streams that ended "
            "without usage (type: input or output).",
            ["route", "model", "provider", "type"],
            registry=r,
        )
        self.token_details = LoopCounter(
            "modelroute_token_details_total",
            "Parts of modelroute_tokens_total the upstream itemised (type: cached_input, "
            "within input; reasoning, within output). Never add them to the totals.",
            ["route", "model", "provider", "type"],
            registry=r,
        )
        self.estimated_tokens = LoopCounter(
            "modelroute_estimated_tokens_total",
            "Tokens of streams that ended without usage (cut or abandoned), estimated by the "
            "proxy; also in modelroute_tokens_total and charged in cost.",
            ["route", "model", "provider", "type"],
            registry=r,
        )
        self.cost = MoneyCounter(
            "modelroute_cost_usd_total",
            "Cost in USD of the tokens that have a price in the route table.",
            ("route", "model", "provider"),
        )
        r.register(self.cost)
        self.unpriced = LoopCounter(
            "modelroute_unpriced_tokens_total",
            "Tokens the route table has no price for: not counted as $0 in cost.",
            ["route", "model", "provider", "type"],
            registry=r,
        )
        self.overhead = LoopHistogram(
            "modelroute_overhead_seconds",
            "The proxy's own added time per request (total minus time waiting on upstreams).",
            (),
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        ).get()
        self.classified = LoopCounter(
            "modelroute_classified_total",
            "Requests for model 'auto' by the category the classifier chose.",
            ["category"],
            registry=r,
        )
        self.shadow_requests = LoopCounter(
            "modelroute_shadow_requests_total",
            "Mirrored (shadow) requests by outcome; the app never sees these answers.",
            ["route", "model", "provider", "outcome"],
            registry=r,
        )
        self.shadow_duration = LoopHistogram(
            "modelroute_shadow_duration_seconds",
            "Duration of mirrored (shadow) requests.",
            ["route", "model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.shadow_cost = MoneyCounter(
            "modelroute_shadow_cost_usd_total",
            "Cost in USD of mirrored (shadow) requests.",
            ("route", "model", "provider"),
        )
        r.register(self.shadow_cost)
        self.shadow_tokens = LoopCounter(
            "modelroute_shadow_tokens_total",
            "Tokens of mirrored (shadow) requests (type: input or output).",
            ["route", "model", "provider", "type"],
            registry=r,
        )
        # one sample per endpoint per probe interval (about a second): cheap at any traffic
        self.probe_duration = LoopHistogram(
            "modelroute_endpoint_probe_duration_seconds",
            "How long an endpoint's active health probes took (a connect, or the GET's "
            "status line), failed ones included (those that timed out: the timeout).",
            ["provider", "region"],
            buckets=PROBE_BUCKETS,
            registry=r,
        )
        self._warned_unpriced: set[tuple[str, str, str]] = set()

    def probe_finished(self, endpoint: str, result: str, seconds: float) -> None:
        """One active probe ended (probes.py); a probe the guard refused took no time."""
        if result != "not_sent":
            self.probe_duration.get(*split_endpoint(endpoint)).observe(seconds)

    def endpoints_applied(self, endpoints: set[str]) -> None:
        """A table's endpoints: the probe series of the others go (they are no longer probed)."""
        for labels in [
            k for k in self.probe_duration.children if endpoint_key(*k) not in endpoints
        ]:
            self.probe_duration.remove(*labels)

    # -- Observer protocol ------------------------------------------------------------

    @idle_hook
    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        pass

    @idle_hook
    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        pass

    @idle_hook
    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        pass

    def request_finished(self, record: RequestRecord) -> None:
        route = record.route or NONE
        served = record.served
        outcome = record.outcome
        if served is None:
            model = provider = region = NONE
        else:
            model, provider, region = served.model, served.provider, served.region
        self.requests.get(route, model, provider, region, outcome).inc()
        self.duration.get(route, model, outcome).observe(record.duration)
        self.overhead.observe(record.overhead)
        for attempt in record.attempts:
            self.attempts.get(
                route, attempt.model, attempt.provider, attempt.region, attempt.result
            ).inc()
        if record.category is not None:
            self.classified.get(record.category).inc()
        if served is None:
            return
        if record.ttft is not None:
            self.ttft.get(route, model).observe(record.ttft)
        reason = fallback_reason(record, served)
        if reason is not None:
            first = record.attempts[0] if record.attempts else served
            from_model = (
                first.model
                if first is not served
                else str(record.extra.get("skipped_model") or "unknown")
            )
            self.fallbacks.get(route, from_model, model, reason).inc()
        if record.input_tokens:
            self.tokens.get(route, model, provider, "input").inc(record.input_tokens)
        if record.output_tokens:
            self.tokens.get(route, model, provider, "output").inc(record.output_tokens)
        if record.cached_input_tokens:
            self.token_details.get(route, model, provider, "cached_input").inc(
                record.cached_input_tokens
            )
        if record.reasoning_tokens:
            self.token_details.get(route, model, provider, "reasoning").inc(record.reasoning_tokens)
        if record.usage_estimated:
            if record.input_tokens:
                self.estimated_tokens.get(route, model, provider, "input").inc(record.input_tokens)
            if record.output_tokens:
                self.estimated_tokens.get(route, model, provider, "output").inc(
                    record.output_tokens
                )
        if record.cost_usd is not None:
            self.cost.add((route, model, provider), record.cost_usd)
        if record.unpriced_input_tokens:
            self._unpriced(route, model, provider, "input", record.unpriced_input_tokens)
        if record.unpriced_output_tokens:
            self._unpriced(route, model, provider, "output", record.unpriced_output_tokens)

    def shadow_finished(self, record: ShadowRecord) -> None:
        labels = (record.route, record.model, record.provider)
        self.shadow_requests.get(*labels, record.outcome).inc()
        if record.outcome == ShadowOutcome.SKIPPED:
            return  # never sent: no duration to speak of
        self.shadow_duration.get(record.route, record.model).observe(record.duration)
        if record.input_tokens:
            self.shadow_tokens.get(*labels, "input").inc(record.input_tokens)
        if record.output_tokens:
            self.shadow_tokens.get(*labels, "output").inc(record.output_tokens)
        if record.cost_usd is not None:
            self.shadow_cost.add(labels, record.cost_usd)

    # -- helpers ----------------------------------------------------------------------

    def _unpriced(self, route: str, model: str, provider: str, kind: str, tokens: int) -> None:
        self.unpriced.get(route, model, provider, kind).inc(tokens)
        key = (provider, model, kind)
        if key not in self._warned_unpriced:
            self._warned_unpriced.add(key)
            log.warning(
                "%s/%s has no %s-token price in the route table: its %s tokens are counted in "
                "modelroute_unpriced_tokens_total, not as $0 in modelroute_cost_usd_total",
                provider,
                model,
                kind,
                kind,
            )


def fallback_reason(record: RequestRecord, served: AttemptRecord) -> str | None:
    """Why the request was served by a fallback, or None when the first choice served it.

    A fallback is a serving attempt that isn't the first one tried (its
    ``fallback_reason`` says why it exists), or a first attempt the dispatcher
    marked with a ``fallback_reason`` because the router skipped the primary
    (circuit open, Retry-After hold, region ejected): then the primary's model
    is in ``record.extra["skipped_model"]``.
    """
    if served.number > 1:
        return served.fallback_reason or ("hedge" if served.hedge else "unknown")
    return served.fallback_reason


# ---------------------------------------------------------------------------------------
# state read at scrape time


class StateCollector(Collector):
    """Gauges computed from live state when Prometheus scrapes, never on the request path.

    ``clock`` must be the clock the dispatcher passes as ``now`` to the
    breakers (a breaker past its open time reads as half-open).
    ``budget_remaining`` maps route name to USD left in its budget window;
    ``pools`` maps provider name to (connections in use, idle, requests queued).
    """

    def __init__(
        self,
        health: HealthBook,
        store: TableStore,
        budget_remaining: Callable[[], Mapping[str, float]],
        clock: Callable[[], float] = time.monotonic,
        pools: Callable[[], Mapping[str, tuple[int, int, int]]] | None = None,
    ) -> None:
        self.pools = pools
        self.health = health
        self.store = store
        self.budget_remaining = budget_remaining
        self.clock = clock
        self._table_hash = ""
        self._table_families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._circuits()
            yield from self._regions()
            yield from self._endpoints()
            yield from self._budgets()
            yield from self._pools()
            yield from self._table()
        except Exception:  # a scrape must never fail because one piece of state is odd
            log.exception("collecting modelroute state metrics failed")

    def _circuits(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "modelroute_circuit_state",
            "Circuit breaker per route and candidate: 0 closed, 1 open, 2 half-open.",
            labels=("route", "provider", "model", "region"),
        )
        now = self.clock()
        for (route, candidate), breaker in list(self.health.breakers.items()):
            provider, model, region = split_candidate(candidate)
            family.add_metric([route, provider, model, region], int(breaker.state_at(now)))
        return [family]

    def _regions(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "modelroute_region_ejected",
            "1 while a provider region is ejected by the FailoverPolicy's health thresholds.",
            labels=("provider", "region"),
        )
        for key, health in list(self.health.regions.items()):
            provider, region = split_endpoint(key)
            family.add_metric([provider, region], 0 if health.ejected_at is None else 1)
        return [family]

    def _endpoints(self) -> Iterable[Metric]:
        """Per endpoint (provider × region, never a URL): in rotation, ejections, probe results."""
        ejected = GaugeMetricFamily(
            "modelroute_endpoint_ejected",
            "1 while an endpoint (a provider's base URL in one region) is ejected for "
            "connect failures or failed probes, for every route and model using it.",
            labels=("provider", "region"),
        )
        ejections = CounterMetricFamily(
            "modelroute_endpoint_ejections",
            "Times an endpoint was ejected (outlier detection or probes).",
            labels=("provider", "region"),
        )
        probes = CounterMetricFamily(
            "modelroute_endpoint_probes",
            "Active health probes of an endpoint, by result.",
            labels=("provider", "region", "result"),
        )
        now = self.clock()
        for key, e in list(self.health.endpoints.endpoints.items()):
            provider, region = split_endpoint(key)
            e.settle(now)
            ejected.add_metric([provider, region], 1 if e.ejected else 0)
            ejections.add_metric([provider, region], e.ejections)
            probes.add_metric([provider, region, "ok"], e.probes - e.probe_errors)
            probes.add_metric([provider, region, "failed"], e.probe_errors)
            probes.add_metric([provider, region, "not_sent"], e.probes_not_sent)
        return [ejected, ejections, probes]

    def _budgets(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "modelroute_budget_remaining_usd",
            "USD left in the route's budget window.",
            labels=("route",),
        )
        for route, usd in sorted(self.budget_remaining().items()):
            family.add_metric([route], usd)
        return [family]

    def _pools(self) -> Iterable[Metric]:
        if self.pools is None:
            return []
        connections = GaugeMetricFamily(
            "modelroute_upstream_connections",
            "Connections to a provider: in use by a request, or idle and kept alive.",
            labels=("provider", "state"),
        )
        queued = GaugeMetricFamily(
            "modelroute_upstream_queued_requests",
            "Requests waiting for a connection: the provider's maxConnections are all in use.",
            labels=("provider",),
        )
        for provider, (in_use, idle, waiting) in sorted(self.pools().items()):
            connections.add_metric([provider, "in_use"], in_use)
            connections.add_metric([provider, "idle"], idle)
            queued.add_metric([provider], waiting)
        return [connections, queued]

    def _table(self) -> list[Metric]:
        if not self.store.loaded:
            return []
        table = self.store.current
        if table.hash != self._table_hash:  # the table changes rarely: build its gauges once
            self._table_families = table_families(table)
            self._table_hash = table.hash
        return self._table_families


def table_families(table: CompiledTable) -> list[Metric]:
    """Gauges that only depend on the route table (its identity, prices, budgets)."""
    info = GaugeMetricFamily(
        "modelroute_config_info",
        "The route table this sidecar serves (always 1; the hash is the table's).",
        labels=("hash", "namespace"),
    )
    info.add_metric([table.hash, table.namespace], 1)
    max_price = GaugeMetricFamily(
        "modelroute_route_max_output_price_usd",
        "USD per output token of the route's most expensive priced target.",
        labels=("route",),
    )
    budget = GaugeMetricFamily(
        "modelroute_route_latency_budget_seconds",
        "The route's p99 latency budget (latencyBudgetMs).",
        labels=("route",),
    )
    limit = GaugeMetricFamily(
        "modelroute_budget_limit_usd",
        "The route's spending budget per window (hour, day or month).",
        labels=("route", "window"),
    )
    for route in table.routes:
        prices = [t.output_usd_per_mtok for t in route.targets if t.output_usd_per_mtok is not None]
        if prices:
            max_price.add_metric([route.name], max(prices) / 1_000_000)
        if route.latency_budget_ms is not None:
            budget.add_metric([route.name], route.latency_budget_ms / 1000)
        if route.budget is not None:
            for window, usd in (
                ("hour", route.budget.usd_per_hour),
                ("day", route.budget.usd_per_day),
                ("month", route.budget.usd_per_month),
            ):
                if usd is not None:
                    limit.add_metric([route.name, window], usd)
    return [info, max_price, budget, limit]


# ---------------------------------------------------------------------------------------
# exposition


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """Body and content type for ``GET /metrics``; OpenMetrics when the scraper asks for it."""
    if accept and "application/openmetrics-text" in accept:
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type
    return generate_latest(registry), CONTENT_TYPE_LATEST
