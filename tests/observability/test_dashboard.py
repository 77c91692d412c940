"""The Grafana dashboard the chart ships: generated, carried unchanged, covering what operators ask.

Its queries are run against a real Prometheus scraping real sidecars in
``test_prometheus.py`` (``panel_queries`` below is what it runs).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from modelroute.devtools import dashboard

from .test_alert_rules import CHART, helm  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / dashboard.OUTPUT


def committed() -> dict[str, Any]:
    return dict(json.loads(COMMITTED.read_text()))


def panel_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel, in layout order."""
    return [
        (panel["title"], target["expr"])
        for panel in model["panels"]
        for target in panel.get("targets", [])
    ]


def concrete(expr: str, namespace: str = ".*", route: str = ".*") -> str:
    """A panel's PromQL with Grafana's variables filled in, as Grafana sends it."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$namespace", namespace)
        .replace("$route", route)
    )


def metric_names(expr: str) -> set[str]:
    """The series a panel's PromQL selects: the sidecar's own, and ``up``."""
    names = set(re.findall(r"\b(modelroute_[a-z_]+)\b", expr))
    if re.search(r"\bup\{", expr):
        names.add("up")
    return names


# the sidecar's series without a route label (proxy/metrics.py)
NO_ROUTE_LABEL = {
    "modelroute_classified_total",
    "modelroute_region_ejected",
    "modelroute_overhead_seconds_bucket",
    "modelroute_upstream_connections",
    "modelroute_upstream_queued_requests",
    "up",
}


def test_committed_dashboard_matches_its_generator() -> None:
    assert COMMITTED.read_text() == dashboard.render(), (
        "charts/modelroute/dashboards/modelroute.json is stale: run `make dashboard`"
    )
    # the docs' picture of the layout is drawn from the same panels
    assert (ROOT / dashboard.LAYOUT).read_text() == dashboard.layout_svg(committed()), (
        "docs/images/dashboard-layout.svg is stale: run `make dashboard`"
    )


def test_dashboard_answers_the_operators_questions() -> None:
    """Each thing issue 17 asks the dashboard to show is one panel, filtered by the variables."""
    model = committed()
    assert model["uid"] == dashboard.UID
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource", "namespace", "route"]
    queries = panel_queries(model)
    by_title: dict[str, list[str]] = {}
    for title, expr in queries:
        by_title.setdefault(title, []).append(expr)
    wanted = {
        "Spend per route and model": ["modelroute_cost_usd_total"],
        "Budget used per route": ["modelroute_budget_remaining_usd", "modelroute_budget_limit_usd"],
        "Requests per route": ["modelroute_requests_total"],
        "Errors per route": ['outcome!="ok"'],
        "Failovers and why": ["modelroute_fallbacks_total", "reason"],
        "Circuit state per target": ["modelroute_circuit_state"],
        "Region state": ["modelroute_region_ejected"],
        "p50 / p99 per target against the route's latency budget": [
            "histogram_quantile(0.5",
            "histogram_quantile(0.99",
            "modelroute_route_latency_budget_seconds",
        ],
        "Classifier categories": ["modelroute_classified_total"],
        "Sidecar overhead": ["modelroute_overhead_seconds_bucket"],
    }
    for title, needles in wanted.items():
        assert title in by_title, f"no panel {title!r}"
        text = " ".join(by_title[title])
        assert all(n in text for n in needles), (title, needles, text)
    for title, expr in queries:
        assert "$namespace" in expr, f"{title}: not filtered by namespace: {expr}"
        if metric_names(expr) - NO_ROUTE_LABEL:
            assert 'route=~"$route"' in expr, f"{title}: not filtered by route: {expr}"


def test_panels_tile_the_grid_without_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in committed()["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    ids = [p["id"] for p in committed()["panels"]]
    assert len(set(ids)) == len(ids)


def render_chart(helm: str, *sets: str) -> list[dict[str, Any]]:  # noqa: F811
    cmd = [helm, "template", "mr", str(CHART), "--namespace", "modelroute-system"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_ships_the_dashboard_as_an_opt_in_configmap(helm: str) -> None:  # noqa: F811
    def dashboards(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
        ]

    assert dashboards(render_chart(helm)) == []  # off unless asked for
    [cm] = dashboards(
        render_chart(
            helm,
            "monitoring.grafanaDashboard.enabled=true",
            "monitoring.grafanaDashboard.namespace=monitoring",
            "monitoring.grafanaDashboard.annotations.grafana_folder=LLM",
        )
    )
    # what kube-prometheus-stack's Grafana sidecar looks for, by default
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert json.loads(cm["data"]["modelroute.json"]) == committed()
