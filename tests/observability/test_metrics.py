"""The /metrics exposition, read back the way Prometheus reads it (the text parser).

Each test drives :class:`PrometheusObserver` / :class:`StateCollector` with
records built like the dispatcher builds them and checks the numbers a user
would chart or alert on.
"""

from __future__ import annotations

import logging
import subprocess
from types import SimpleNamespace

import pytest
from modelroute.proxy.events import ShadowRecord
from modelroute.proxy.health import HealthBook
from modelroute.proxy.keys import candidate_key
from modelroute.proxy.metrics import PrometheusObserver, StateCollector, render
from modelroute.proxy.table import CompiledTable
from modelroute.proxy.tablestore import TableStore
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from modelroute.resources import CircuitBreaker, Ejection

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(observer: PrometheusObserver) -> Samples:
    body, content_type = render(observer.registry)
    assert content_type.startswith("text/plain; version=")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in samples if n == name]


def test_cost_is_summed_exactly(rec: SimpleNamespace) -> None:
    """10 requests x 20 output tokens on deepseek-v4-flash at $0.25/M = $0.00005, to the digit."""
    obs = PrometheusObserver()
    for _ in range(10):
        obs.request_finished(rec.request([rec.attempt(1, rec.FLASH)], output_tokens=20))
    s = scrape(obs)
    flash = {"route": "general", "model": "deepseek-v4-flash", "provider": "deepseek"}
    assert value(s, "modelroute_cost_usd_total", **flash) == 0.00005
    assert value(s, "modelroute_tokens_total", **flash, type="output") == 200
    assert value(s, "modelroute_tokens_total", **flash, type="input") == 1000
    requests = {**flash, "region": "us-east", "outcome": "ok"}
    assert value(s, "modelroute_requests_total", **requests) == 10
    attempts = {**flash, "region": "us-east", "result": "ok"}
    assert value(s, "modelroute_upstream_attempts_total", **attempts) == 10
    # the seeds give no input price: those tokens are unpriced, not free
    assert value(s, "modelroute_unpriced_tokens_total", **flash, type="input") == 1000


def test_cost_does_not_drift_over_many_requests(rec: SimpleNamespace) -> None:
    """1000 x 13 tokens at $0.38/M is $0.00494; float addition would say 0.004940000000000083."""
    obs = PrometheusObserver()
    v32 = ("deepseek", "deepseek-v3.2", "us-east")
    for _ in range(1000):
        obs.request_finished(
            rec.request([rec.attempt(1, v32)], output_tokens=13, price_per_mtok=0.38)
        )
    s = scrape(obs)
    labels = {"route": "general", "model": "deepseek-v3.2", "provider": "deepseek"}
    assert value(s, "modelroute_cost_usd_total", **labels) == 0.00494


def test_unpriced_model_is_counted_apart_and_warned_once(
    rec: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    obs = PrometheusObserver()
    caplog.set_level(logging.WARNING, "modelroute.metrics")
    for _ in range(3):
        obs.request_finished(
            rec.request(
                [rec.attempt(1, rec.QWEN_UNPRICED)],
                route="unpriced",
                output_tokens=30,
                price_per_mtok=None,
            )
        )
    s = scrape(obs)
    qwen = {"route": "unpriced", "model": "qwen3.5-32b", "provider": "qwen"}
    assert value(s, "modelroute_unpriced_tokens_total", **qwen, type="output") == 90
    assert value(s, "modelroute_cost_usd_total", **qwen) is None, "unpriced is not $0"
    assert names(s, "modelroute_cost_usd_total") == []
    assert value(s, "modelroute_tokens_total", **qwen, type="output") == 90
    warnings = [r.getMessage() for r in caplog.records if "qwen3.5-32b" in r.getMessage()]
    assert len(warnings) == 2, warnings  # once for output, once for input; not per request
    assert any("no output-token price" in w for w in warnings)


def test_fallback_counted_with_from_to_and_reason(rec: SimpleNamespace) -> None:
    obs = PrometheusObserver()
    first = rec.attempt(1, rec.FLASH, "5xx", status=503)
    second = rec.attempt(2, rec.KIMI, fallback_reason="5xx")
    obs.request_finished(rec.request([first, second], price_per_mtok=3.00))
    # a request its first choice served is not a fallback
    obs.request_finished(rec.request([rec.attempt(1, rec.FLASH)]))
    s = scrape(obs)
    assert names(s, "modelroute_fallbacks_total") == [
        {
            "route": "general",
            "from_model": "deepseek-v4-flash",
            "to_model": "kimi-k2.5",
            "reason": "5xx",
        }
    ]
    assert value(s, "modelroute_fallbacks_total", **names(s, "modelroute_fallbacks_total")[0]) == 1
    served = {"route": "general", "model": "kimi-k2.5", "provider": "kimi", "region": "cn-north"}
    assert value(s, "modelroute_requests_total", **served, outcome="ok") == 1
    flash = {"route": "general", "model": "deepseek-v4-flash", "provider": "deepseek"}
    assert (
        value(s, "modelroute_upstream_attempts_total", **flash, region="us-east", result="5xx") == 1
    )
    assert (
        value(s, "modelroute_upstream_attempts_total", **flash, region="us-east", result="ok") == 1
    )
    # cost and tokens belong to the model that answered
    assert value(
        s, "modelroute_cost_usd_total", route="general", model="kimi-k2.5", provider="kimi"
    ) == (0.00006)


def test_primary_skipped_by_router_is_a_fallback(rec: SimpleNamespace) -> None:
    """Circuit open on the primary: the first attempt already goes to the fallback."""
    obs = PrometheusObserver()
    only = rec.attempt(1, rec.KIMI, fallback_reason="circuit_open")
    obs.request_finished(rec.request([only], extra={"skipped_model": "deepseek-v4-flash"}))
    s = scrape(obs)
    labels = {
        "route": "general",
        "from_model": "deepseek-v4-flash",
        "to_model": "kimi-k2.5",
        "reason": "circuit_open",
    }
    assert value(s, "modelroute_fallbacks_total", **labels) == 1


def test_failed_and_unrouted_requests_are_labelled_none(rec: SimpleNamespace) -> None:
    obs = PrometheusObserver()
    obs.request_finished(
        rec.request([rec.attempt(1, rec.FLASH, "timeout", status=None)], outcome="error")
    )
    obs.request_finished(rec.request([], route=None, outcome="rejected", ttft=None))
    s = scrape(obs)
    none = {"model": "none", "provider": "none", "region": "none"}
    assert value(s, "modelroute_requests_total", route="general", **none, outcome="error") == 1
    assert value(s, "modelroute_requests_total", route="none", **none, outcome="rejected") == 1
    assert (
        value(
            s,
            "modelroute_request_duration_seconds_count",
            route="none",
            model="none",
            outcome="rejected",
        )
        == 1
    )
    assert names(s, "modelroute_cost_usd_total") == []
    assert names(s, "modelroute_time_to_first_token_seconds_count") == []


def test_latency_histograms(rec: SimpleNamespace) -> None:
    obs = PrometheusObserver()
    # 0.5 s in total, 0.4998 s waiting on the upstream: 200 us of our own
    obs.request_finished(
        rec.request([rec.attempt(1, rec.FLASH)], duration=0.5, upstream_wait=0.4998)
    )
    s = scrape(obs)
    assert value(s, "modelroute_overhead_seconds_bucket", le="0.0001") == 0
    assert value(s, "modelroute_overhead_seconds_bucket", le="0.00025") == 1
    assert value(s, "modelroute_overhead_seconds_bucket", le="5e-05") == 0
    # by the model that served: each A/B arm has its own latency
    arm = {"route": "general", "model": "deepseek-v4-flash", "outcome": "ok"}
    assert value(s, "modelroute_request_duration_seconds_bucket", **arm, le="0.4") == 0
    assert value(s, "modelroute_request_duration_seconds_bucket", **arm, le="0.5") == 1
    ttft = {"route": "general", "model": "deepseek-v4-flash"}
    assert value(s, "modelroute_time_to_first_token_seconds_bucket", **ttft, le="0.1") == 0
    assert value(s, "modelroute_time_to_first_token_seconds_bucket", **ttft, le="0.2") == 1


def test_classified_and_shadow(rec: SimpleNamespace) -> None:
    obs = PrometheusObserver()
    obs.request_finished(
        rec.request([rec.attempt(1, rec.FLASH)], category="light", classify_reason="short prompt")
    )
    obs.shadow_finished(
        ShadowRecord(
            route="general",
            provider="kimi",
            model="kimi-k2.5",
            region="cn-north",
            outcome="ok",
            duration=1.2,
            input_tokens=100,
            output_tokens=40,
            cost_usd=40 * 3.00 / 1_000_000,
        )
    )
    obs.shadow_finished(
        ShadowRecord(
            route="general",
            provider="kimi",
            model="kimi-k2.5",
            region="cn-north",
            outcome="skipped",
        )
    )
    s = scrape(obs)
    assert value(s, "modelroute_classified_total", category="light") == 1
    kimi = {"route": "general", "model": "kimi-k2.5", "provider": "kimi"}
    assert value(s, "modelroute_shadow_requests_total", **kimi, outcome="ok") == 1
    assert value(s, "modelroute_shadow_requests_total", **kimi, outcome="skipped") == 1
    assert value(s, "modelroute_shadow_cost_usd_total", **kimi) == 0.00012
    assert value(s, "modelroute_shadow_tokens_total", **kimi, type="output") == 40
    assert (
        value(s, "modelroute_shadow_duration_seconds_count", route="general", model="kimi-k2.5")
        == 1
    )
    # a shadow never counts as a served request or as real spend
    assert value(s, "modelroute_cost_usd_total", **kimi) is None


def state_registry(
    table: CompiledTable, health: HealthBook, clock: list[float], budgets: dict[str, float]
) -> PrometheusObserver:
    obs = PrometheusObserver()
    store = TableStore(table)
    obs.registry.register(StateCollector(health, store, lambda: budgets, clock=lambda: clock[0]))
    return obs


def test_circuit_state_follows_the_breaker(table: CompiledTable) -> None:
    health = HealthBook()
    clock = [1000.0]
    obs = state_registry(table, health, clock, {})
    config = CircuitBreaker(failure_threshold=2, window_seconds=60, open_seconds=30)
    breaker = health.breaker(
        "general", candidate_key("deepseek", "deepseek-v4-flash", "us-east"), config
    )
    labels = {
        "route": "general",
        "provider": "deepseek",
        "model": "deepseek-v4-flash",
        "region": "us-east",
    }

    def state() -> float | None:
        return value(scrape(obs), "modelroute_circuit_state", **labels)

    assert state() == 0
    breaker.record_failure(1000.0)
    breaker.record_failure(1001.0)
    assert state() == 1  # open
    clock[0] = 1031.5
    assert state() == 2  # half-open: open time elapsed, a probe may go
    breaker.acquire(1031.5)
    breaker.record_success(1031.6)
    assert state() == 0


def test_table_budget_and_region_gauges(table: CompiledTable) -> None:
    health = HealthBook()
    health.configure(Ejection(error_rate=0.5, min_requests=2, window_seconds=30), failback_delay=60)
    region = health.region("deepseek", "us-east")
    assert region is not None
    health.region("kimi", "cn-north")
    for t in (10.0, 10.1):
        region.record(False, None, t)
    obs = state_registry(table, health, [11.0], {"general": 12.5})
    s = scrape(obs)
    assert value(s, "modelroute_region_ejected", provider="deepseek", region="us-east") == 1
    assert value(s, "modelroute_region_ejected", provider="kimi", region="cn-north") == 0
    assert value(s, "modelroute_budget_remaining_usd", route="general") == 12.5
    assert value(s, "modelroute_budget_limit_usd", route="general", window="day") == 50
    assert value(s, "modelroute_config_info", hash=table.hash, namespace="llm-apps") == 1
    # the most expensive *priced* target: kimi-k2.5 at $3.00/M (qwen3.5-32b has no price)
    assert value(s, "modelroute_route_max_output_price_usd", route="general") == 3.00 / 1_000_000
    assert names(s, "modelroute_route_max_output_price_usd") == [{"route": "general"}]
    assert value(s, "modelroute_route_latency_budget_seconds", route="general") == 1.8


def test_openmetrics_negotiation(rec: SimpleNamespace) -> None:
    obs = PrometheusObserver()
    obs.request_finished(rec.request([rec.attempt(1, rec.FLASH)]))
    body, content_type = render(obs.registry, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in om_parse(body.decode())}
    [cost] = families["modelroute_cost_usd"].samples
    assert cost.name == "modelroute_cost_usd_total"
    assert cost.value == 20 * 0.25 / 1_000_000


def test_promtool_accepts_the_exposition(
    rec: SimpleNamespace, table: CompiledTable, promtool: str
) -> None:
    """Prometheus' own linter: naming, units, _total suffixes, help text, histogram shape."""
    health = HealthBook()
    obs = state_registry(table, health, [0.0], {"general": 3.0})
    health.breaker("general", candidate_key(*rec.FLASH), CircuitBreaker())
    first = rec.attempt(1, rec.FLASH, "429", status=429)
    obs.request_finished(
        rec.request([first, rec.attempt(2, rec.KIMI, fallback_reason="429")], category="general")
    )
    obs.request_finished(rec.request([rec.attempt(1, rec.QWEN_UNPRICED)], price_per_mtok=None))
    obs.shadow_finished(
        ShadowRecord(
            route="general", provider="kimi", model="kimi-k2.5", region="cn-north", outcome="ok"
        )
    )
    body, _ = render(obs.registry)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "", result.stdout.decode()
