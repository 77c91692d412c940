"""A real Prometheus scraping two sidecars and the operator: the series docs and alerts name.

Two sidecars (two pods of one app: same route table, labelled the way the
chart's PodMonitor labels them) sit in front of a primary that answers 503 and
a fallback that serves.  Debian's Prometheus server scrapes both every second
on loopback, with the chart's alert rules loaded, and the queries a person
types into it must answer with what happened: request and attempt rates, the
fallbacks and why, the exact spend per route (summed over both pods), a p99
per serving target from the histograms, circuit and budget state.  Every rule
of the chart must evaluate without error against these real series.

The operator is scraped too: ``modelroute operator`` as the chart runs it (its
own process, peering, HTTPS webhooks) against kmock as the API server
(``tests/operator``'s fixtures), labelled as its PodMonitor labels it.  It
reconciles a namespace, a ModelRoute review is refused and a pod injected, and
its counters must say so through the query API.
"""

from __future__ import annotations

import asyncio
import math
import re
import urllib.error
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from ..operator.conftest import cluster, kubeconfig  # noqa: F401  (kmock as the API server)
from ..operator.helpers import route
from ..operator.test_admission import Webhooks, _seed, review, run_operator
from ..proxy.conftest import (  # fixtures re-used from the proxy suite
    FakeFactory,
    ProxyFactory,
    fakes,  # noqa: F401
    provider_key,  # noqa: F401
    provider_yaml,
    proxies,  # noqa: F401
    route_yaml,
)
from .backends import Server, get_json, query, run_prometheus
from .conftest import require_tool
from .test_alert_rules import helm, render_rules  # noqa: F401
from .test_dashboard import committed, concrete, metric_names, panel_queries

ROOT = Path(__file__).resolve().parents[2]
MODELS = """  models:
    - {name: chat-a, upstreamModel: chat-a-up, outputUSDPerMTok: 1.0, inputUSDPerMTok: 0.5,
       contextTokens: 32000, capabilities: [text]}
    - {name: chat-b, upstreamModel: chat-b-up, outputUSDPerMTok: 2.0, inputUSDPerMTok: 1.0,
       contextTokens: 32000, capabilities: [text]}
"""
ROUTE_EXTRA = (
    "  retry: {maxAttempts: 2, baseBackoffMs: 1, maxBackoffMs: 5}\n"
    "  latencyBudgetMs: 1800\n"
    "  budget: {usdPerDay: 50, action: alert}"
)
REQUESTS_PER_SIDECAR = 6
NS = "llm-apps"
# dashboard panels this traffic leaves empty: every price is known, no request asks for
# model "auto", and without a FailoverPolicy no region is tracked for ejection
QUIET_PANELS = ["Unpriced tokens", "Classifier categories", "Region state"]


def docs_metric_names() -> set[str]:
    """Every ``modelroute_*`` series named in docs/observability.md's metric tables."""
    text = (ROOT / "docs" / "observability.md").read_text()
    return set(re.findall(r"^\| `(modelroute_[a-z_]+)` \|", text, flags=re.M))


def rule_metric_names(rules: dict[str, Any]) -> set[str]:
    exprs = " ".join(str(r["expr"]) for g in rules["groups"] for r in g["rules"])
    return set(re.findall(r"\b(modelroute_[a-z_]+)", exprs))


@pytest.fixture
def prometheus_bin() -> str:
    return require_tool("prometheus", "apt: prometheus")


def scrape_labels(pod: str) -> dict[str, str]:
    # what the PodMonitor's target labels give every sidecar series in a cluster
    return {"namespace": NS, "pod": pod, "container": "modelroute-proxy"}


# what the operator PodMonitor's target labels give its series: the release's namespace
# (the one test_alert_rules renders the chart's rules for) and the container's name
OPERATOR_LABELS = {
    "namespace": "modelroute-system",
    "pod": "mr-modelroute-a",
    "container": "operator",
}


@pytest.fixture
async def operator(
    cluster: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """The operator process against kmock, with a namespace, a provider and a route to work on."""
    monkeypatch.setenv("MODELROUTE_KUBE_VERSION", "v1.30.2")
    await _seed(cluster)
    workdir = tmp_path / "operator"
    workdir.mkdir()
    async with run_operator(workdir) as hooks:
        yield hooks


async def operator_work(hooks: Webhooks) -> None:
    """A review refused (a typo'd provider) and a pod injected, as kube-apiserver sends them."""
    await hooks.denied(
        "/validate-modelroute", review(route("team-a", "t", "gatewey"), "modelroutes")
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "chat-", "namespace": "team-a", "labels": {"app": "chat"}},
        "spec": {"containers": [{"name": "app", "image": "python:3.11-slim"}]},
    }
    for _ in range(100):  # the namespace view syncs shortly after start
        if "patch" in await hooks.allowed("/inject-sidecar", review(pod, "pods")):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pod was injected:\n{hooks.tail()}")


async def wait_for(server: Server, promql: str, check: Any, seconds: float = 20.0) -> Any:
    """Poll an instant query until ``check(result)`` holds (scrapes come every second)."""
    result: Any = None
    for _ in range(int(seconds / 0.25)):
        result = await asyncio.to_thread(query, server, promql)
        if check(result):
            return result
        await asyncio.sleep(0.25)
    raise AssertionError(f"{promql} never satisfied the check; last: {result}")


def values(result: list[dict[str, Any]], *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(k, "") for k in keys): float(r["value"][1]) for r in result}


@pytest.fixture
def rules_file(helm: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:  # noqa: F811
    rules = render_rules(helm, "monitoring.prometheusRule.thresholds.costPerHourUsd=20")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path, rules


async def test_prometheus_scrapes_two_sidecars(
    prometheus_bin: str,
    rules_file: tuple[Path, dict[str, Any]],
    fakes: FakeFactory,  # noqa: F811
    proxies: ProxyFactory,  # noqa: F811
    operator: Webhooks,
    tmp_path: Path,
) -> None:
    primary = await fakes("us-east-1", error_rate=1.0, error_status=503)
    backup = await fakes("eu-west-1", output_tokens=7)
    routes = (
        provider_yaml("primary", [("us-east-1", primary.url)], MODELS)
        + provider_yaml("backup", [("eu-west-1", backup.url)], MODELS)
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-b, tier: 1}"],
            ROUTE_EXTRA,
        )
    )
    sidecars = [await proxies(routes), await proxies(routes)]
    targets = []
    for pod, sidecar in zip("ab", sidecars, strict=True):
        assert sidecar.admin_url is not None
        targets.append((sidecar.admin_url.removeprefix("http://"), scrape_labels(pod)))
    targets.append((operator.readiness, OPERATOR_LABELS))
    await operator_work(operator)

    spent = 0.0

    async def traffic(count: int) -> None:
        """``count`` requests through each sidecar; adds what they cost as the app's usage says."""
        nonlocal spent
        for sidecar in sidecars:
            async with openai.AsyncOpenAI(
                base_url=sidecar.base_url, api_key="sk-app", max_retries=0
            ) as client:
                for i in range(count):
                    answer = await client.chat.completions.create(
                        model="chat", messages=[{"role": "user", "content": f"question {i}"}]
                    )
                    assert answer.usage is not None
                    usage = answer.usage
                    spent += (usage.completion_tokens * 2.0 + usage.prompt_tokens * 1.0) / 1e6

    total = 2 * REQUESTS_PER_SIDECAR
    rules_path, rules = rules_file
    with run_prometheus(prometheus_bin, tmp_path, targets, [str(rules_path)]) as prom:
        # both sidecars up, as the SidecarDown alert reads them
        up = await wait_for(
            prom,
            'up{container="modelroute-proxy"}',
            lambda r: len(r) == 2 and all(v == 1 for v in values(r, "pod").values()),
        )
        assert set(values(up, "pod")) == {("a",), ("b",)}

        # the operator: its namespace reconciled and table written, the review refused, the
        # pod injected, its view synced, each counted where a person would look for it
        await wait_for(
            prom,
            'up{container="operator"}',
            lambda r: values(r, "pod") == {("mr-modelroute-a",): 1},
        )
        ops = "modelroute_operator"
        reconciled = await wait_for(
            prom,
            f'sum by (kind, result) ({ops}_reconciles_total{{container="operator"}})',
            lambda r: values(r, "kind", "result").get(("Namespace", "ok"), 0) > 0,
        )
        assert values(reconciled, "kind", "result").get(("Namespace", "error")) == 0
        applied = await asyncio.to_thread(query, prom, f"sum({ops}_tables_applied_total)")
        assert float(applied[0]["value"][1]) >= 1  # team-a's table
        reviews = await asyncio.to_thread(
            query, prom, f"sum by (kind, result) ({ops}_admission_reviews_total) > 0"
        )
        assert values(reviews, "kind", "result") == {
            ("ModelRoute", "allowed"): 1,  # run_operator's probe for the webhook server
            ("ModelRoute", "refused"): 1,
        }
        injected = await asyncio.to_thread(
            query, prom, f"sum by (result) ({ops}_injections_total) > 0"
        )
        assert values(injected, "result").get(("injected",), 0) >= 1
        assert set(values(injected, "result")) <= {("injected",), ("skipped_not_enrolled",)}
        synced = await asyncio.to_thread(query, prom, f"{ops}_namespace_view_synced")
        assert values(synced, "pod") == {("mr-modelroute-a",): 1}

        # a counter's first scrape is its starting point: one request each, scraped, then
        # the rest, so that rate() sees them as a dashboard would
        await traffic(1)
        await wait_for(
            prom, "sum(modelroute_requests_total)", lambda r: bool(r) and r[0]["value"][1] == "2"
        )
        await traffic(REQUESTS_PER_SIDECAR - 1)

        # requests per route and served model, summed over the pods
        served = await wait_for(
            prom,
            "sum by (route, model, outcome) (modelroute_requests_total)",
            lambda r: sum(values(r, "route").values()) == total,
        )
        assert values(served, "route", "model", "outcome") == {("chat", "chat-b", "ok"): total}

        # every request failed over from chat-a: for a 5xx, and once the primary's circuit
        # opened on those 5xx, because the router skipped it; attempts say so by result
        fallbacks = await asyncio.to_thread(
            query, prom, "sum by (route, from_model, to_model, reason) (modelroute_fallbacks_total)"
        )
        why = values(fallbacks, "route", "from_model", "to_model", "reason")
        assert sum(why.values()) == total
        assert set(why) == {
            ("chat", "chat-a", "chat-b", "5xx"),
            ("chat", "chat-a", "chat-b", "circuit_open"),
        }
        attempts = await asyncio.to_thread(
            query, prom, "sum by (model, result) (modelroute_upstream_attempts_total)"
        )
        assert values(attempts, "model", "result") == {
            ("chat-a", "5xx"): why[("chat", "chat-a", "chat-b", "5xx")],
            ("chat-b", "ok"): total,
        }

        # spend per route: the exact sum of what both pods charged
        spend = await asyncio.to_thread(
            query, prom, "sum by (namespace, route) (modelroute_cost_usd_total)"
        )
        assert values(spend, "namespace", "route") == {(NS, "chat"): pytest.approx(spent, rel=1e-9)}

        # rates need two samples after the traffic: the dashboard's and the alerts' shape
        rates = await wait_for(
            prom,
            'sum by (route) (rate(modelroute_requests_total{model!="none"}[1m]))',
            lambda r: bool(r) and float(r[0]["value"][1]) > 0,
        )
        assert set(values(rates, "route")) == {("chat",)}

        # p99 per serving target, from the histograms of both pods; the budget beside it
        p99 = await asyncio.to_thread(
            query,
            prom,
            "histogram_quantile(0.99, sum by (route, model, le) "
            '(rate(modelroute_request_duration_seconds_bucket{outcome="ok"}[1m])))',
        )
        p99_values = values(p99, "route", "model")
        assert set(p99_values) == {("chat", "chat-b")}
        assert 0 < p99_values[("chat", "chat-b")] <= 0.05  # a loopback fake: the first bucket
        budget = await asyncio.to_thread(
            query, prom, "max by (route) (modelroute_route_latency_budget_seconds)"
        )
        assert values(budget, "route") == {("chat",): 1.8}

        # state gauges: the primary's circuit, budget left against the limit
        circuit = await asyncio.to_thread(
            query, prom, "max by (route, provider, model) (modelroute_circuit_state)"
        )
        circuits = values(circuit, "route", "provider", "model")
        assert circuits[("chat", "primary", "chat-a")] == 1  # open
        assert circuits.get(("chat", "backup", "chat-b"), 0) == 0
        left = await asyncio.to_thread(
            query,
            prom,
            "min by (route) (modelroute_budget_remaining_usd)"
            " / on (route) max by (route) (modelroute_budget_limit_usd)",
        )
        [[ratio]] = [list(values(left, "route").values())]
        assert 0.99 < ratio < 1  # a few micro-dollars of $50/day spent

        # the sidecar's own overhead histogram is there to chart
        overhead = await asyncio.to_thread(
            query,
            prom,
            "histogram_quantile(0.99, sum by (le) (rate(modelroute_overhead_seconds_bucket[1m])))",
        )
        assert overhead and math.isfinite(float(overhead[0]["value"][1]))

        # every series the docs' tables and the alert rules name is one sidecars or operator export
        metadata = await asyncio.to_thread(get_json, f"{prom.url}/api/v1/targets/metadata")
        exported = {m["metric"] for m in metadata["data"]}
        named = docs_metric_names() | rule_metric_names(rules)
        assert len(named) > 20
        missing = sorted(
            name
            for name in named
            # metadata names the family: a counter without _total, a histogram without _bucket
            if name not in exported
            and re.sub(r"_(bucket|count|sum|total)$", "", name) not in exported
        )
        assert not missing, f"named in docs/alerts but never exported: {missing}"

        # and every shipped rule evaluates without error against these real series (health
        # is "unknown" until a rule's group has run once: at most a couple of intervals)
        def rule_health() -> dict[str, str]:
            groups = get_json(f"{prom.url}/api/v1/rules")["data"]["groups"]
            return {
                r["name"]: r["health"] + " " + r.get("lastError", "")
                for g in groups
                for r in g["rules"]
            }

        health = await asyncio.to_thread(rule_health)
        for _ in range(40):
            if "unknown " not in health.values():
                break
            await asyncio.sleep(0.25)
            health = await asyncio.to_thread(rule_health)
        assert len(health) == sum(len(g["rules"]) for g in rules["groups"])
        assert {name: h for name, h in health.items() if h != "ok "} == {}

        # the chart's Grafana dashboard: every panel's query parses and runs here (as
        # Grafana sends it, variables filled in), selects only series the sidecars export,
        # and shows data where this traffic made some
        empty = []
        for title, expr in panel_queries(committed()):
            family = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in metric_names(expr)}
            assert family - {"up"} <= exported, f"{title}: {expr} names {family - exported}"
            try:
                result = await asyncio.to_thread(query, prom, concrete(expr, namespace=NS))
            except urllib.error.HTTPError as e:  # 400: the query does not parse
                raise AssertionError(f"{title}: {expr}: {e.read().decode()}") from e
            if not result:
                empty.append(title)
        assert sorted(set(empty)) == sorted(QUIET_PANELS)
