"""The Grafana dashboard the chart ships, built from code (``make dashboard``).

Written with Grafana's own foundation SDK rather than as hand-kept JSON: the
builders know the schema (panel types, field config, variables), so a panel is
a few lines saying *what* it shows, and the committed
``charts/modelroute/dashboards/modelroute.json`` is regenerated, never edited
(``tests/observability/test_dashboard.py`` fails when the two differ).

Every query names only series the sidecar exports (``proxy/metrics.py``), and
filters by the two dashboard variables ``$namespace`` and ``$route``;
``tests/observability/test_prometheus.py`` runs each one against a real
Prometheus scraping real sidecars.  The layout is one row per question an
operator asks: what does it cost, what is it serving, is anything broken, is it
fast enough, what is the sidecar itself costing.

This is a development tool: the SDK is a test-only dependency, never imported
by the sidecar or the operator.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    piechart,
    prometheus,
    stat,
    statetimeline,
    timeseries,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    GridPos,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
)

UID = "modelroute-overview"
OUTPUT = Path("charts/modelroute/dashboards/modelroute.json")
LAYOUT = Path("docs/images/dashboard-layout.svg")  # the picture in docs/observability.md
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'namespace=~"$namespace", route=~"$route"'  # every route-labelled query filters by both
NS_SEL = 'namespace=~"$namespace"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def _target(q: Query, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(ref).datasource(DS)


def _with_targets(panel: Any, queries: list[Query]) -> Any:
    for i, q in enumerate(queries):
        panel = panel.with_target(_target(q, chr(ord("A") + i)))
    return panel.datasource(DS)


def _series(title: str, description: str, unit: str, queries: list[Query]) -> Any:
    panel = timeseries.Panel().title(title).description(description).unit(unit).min(0)
    return _with_targets(panel, queries)


def _place(panel: Any, x: int, y: int, w: int, h: int) -> Any:
    return panel.grid_pos(GridPos(x=x, y=y, w=w, h=h))


def _hist(q: float, by: str, metric: str, extra: str = "") -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{extra}}}[{RATE}])))"


def _states(mapping: dict[str, tuple[str, str]]) -> list[Any]:
    return [
        ValueMap(
            options={
                value: ValueMappingResult(text=text, color=color, index=i)
                for i, (value, (text, color)) in enumerate(mapping.items())
            }
        )
    ]


def _thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


def build() -> Dashboard:
    """The dashboard: 5 rows, laid out on Grafana's 24-column grid."""
    d = (
        Dashboard("modelroute")
        .uid(UID)
        .description(
            "Spend, traffic, failovers, health and latency of the modelroute sidecars "
            "(metrics in docs/observability.md)."
        )
        .tags(["modelroute", "llm"])
        .time("now-6h", "now")
        .refresh("1m")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            QueryVariable("namespace")
            .label("Namespace")
            .datasource(DS)
            .query("label_values(modelroute_requests_total, namespace)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            QueryVariable("route")
            .label("Route")
            .datasource(DS)
            .query(f"label_values(modelroute_requests_total{{{NS_SEL}}}, route)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )

    y = 0
    d = d.with_row(Row("Spend").grid_pos(GridPos(x=0, y=y, w=24, h=1)))
    y += 1
    d = d.with_panel(
        _place(
            _series(
                "Spend per route and model",
                "USD per hour, from the tokens each serving target reported and the route "
                "table's prices. Unpriced tokens are not in it (panel on the right).",
                "currencyUSD",
                [
                    Query(
                        f"sum by (route, model) (rate(modelroute_cost_usd_total{{{SEL}}}[{RATE}])) * 3600",
                        "{{route}} / {{model}}",
                    )
                ],
            ),
            0,
            y,
            12,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _with_targets(
                bargauge.Panel()
                .title("Budget used per route")
                .description(
                    "Share of each route's budget window spent (limit minus what is left). "
                    "At 100 % the route's budget action applies (docs/budgets.md)."
                )
                .unit("percentunit")
                .min(0)
                .max(1)
                .thresholds(_thresholds((None, "green"), (0.8, "orange"), (0.9, "red"))),
                [
                    Query(
                        f"1 - min by (route) (modelroute_budget_remaining_usd{{{SEL}}})"
                        f" / on (route) max by (route) (modelroute_budget_limit_usd{{{SEL}}})",
                        "{{route}}",
                    )
                ],
            ),
            12,
            y,
            6,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _series(
                "Unpriced tokens",
                "Tokens per second the route table has no price for: cost unknown, not zero.",
                "short",
                [
                    Query(
                        "sum by (route, model, type) "
                        f"(rate(modelroute_unpriced_tokens_total{{{SEL}}}[{RATE}]))",
                        "{{route}} / {{model}} ({{type}})",
                    )
                ],
            ),
            18,
            y,
            6,
            8,
        )
    )
    y += 8
    d = d.with_row(Row("Traffic and failovers").grid_pos(GridPos(x=0, y=y, w=24, h=1)))
    y += 1
    d = d.with_panel(
        _place(
            _series(
                "Requests per route",
                "Requests per second by outcome (ok, error, client_closed, stream_error, rejected).",
                "reqps",
                [
                    Query(
                        f"sum by (route, outcome) (rate(modelroute_requests_total{{{SEL}}}[{RATE}]))",
                        "{{route}} {{outcome}}",
                    )
                ],
            ),
            0,
            y,
            8,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _series(
                "Errors per route",
                "Share of requests that did not end ok.",
                "percentunit",
                [
                    Query(
                        # "or 0 * all": a route without errors reads 0 %, not "No data"
                        f'(sum by (route) (rate(modelroute_requests_total{{{SEL}, outcome!="ok"}}[{RATE}]))'
                        f" or 0 * sum by (route) (rate(modelroute_requests_total{{{SEL}}}[{RATE}])))"
                        f" / sum by (route) (rate(modelroute_requests_total{{{SEL}}}[{RATE}]))",
                        "{{route}}",
                    )
                ],
            ),
            8,
            y,
            8,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _series(
                "Failovers and why",
                "Requests served by a fallback per second, from the first model tried to the "
                "one that served, by the reason the serving attempt exists (5xx, timeout, "
                "circuit_open, hedge, ...).",
                "reqps",
                [
                    Query(
                        "sum by (route, from_model, to_model, reason) "
                        f"(rate(modelroute_fallbacks_total{{{SEL}}}[{RATE}]))",
                        "{{route}}: {{from_model}} → {{to_model}} ({{reason}})",
                    )
                ],
            ),
            16,
            y,
            8,
            8,
        )
    )
    y += 8
    d = d.with_panel(
        _place(
            _series(
                "Failed upstream attempts by result",
                "Attempts per second that did not succeed, by target and result.",
                "reqps",
                [
                    Query(
                        "sum by (provider, model, region, result) "
                        f'(rate(modelroute_upstream_attempts_total{{{SEL}, result!="ok"}}[{RATE}]))',
                        "{{provider}}/{{model}}@{{region}} {{result}}",
                    )
                ],
            ),
            0,
            y,
            12,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _with_targets(
                piechart.Panel()
                .title("Classifier categories")
                .description("Requests for model 'auto' by the category the classifier chose.")
                .unit("short"),
                [
                    Query(
                        f"sum by (category) (increase(modelroute_classified_total{{{NS_SEL}}}[$__range]))",
                        "{{category}}",
                    )
                ],
            ),
            12,
            y,
            12,
            8,
        )
    )
    y += 8
    d = d.with_row(Row("Health").grid_pos(GridPos(x=0, y=y, w=24, h=1)))
    y += 1
    d = d.with_panel(
        _place(
            _with_targets(
                statetimeline.Panel()
                .title("Circuit state per target")
                .description(
                    "Each route's breaker per candidate: closed, open, half-open (probing)."
                )
                .mappings(
                    _states(
                        {
                            "0": ("closed", "green"),
                            "1": ("open", "red"),
                            "2": ("half-open", "orange"),
                        }
                    )
                ),
                [
                    Query(
                        "max by (route, provider, model, region) "
                        f"(modelroute_circuit_state{{{SEL}}})",
                        "{{route}} {{provider}}/{{model}}@{{region}}",
                    )
                ],
            ),
            0,
            y,
            12,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _with_targets(
                statetimeline.Panel()
                .title("Region state")
                .description("Provider regions the FailoverPolicy has ejected from rotation.")
                .mappings(_states({"0": ("in rotation", "green"), "1": ("ejected", "red")})),
                [
                    Query(
                        f"max by (provider, region) (modelroute_region_ejected{{{NS_SEL}}})",
                        "{{provider}}@{{region}}",
                    )
                ],
            ),
            12,
            y,
            12,
            8,
        )
    )
    y += 8
    d = d.with_row(Row("Latency").grid_pos(GridPos(x=0, y=y, w=24, h=1)))
    y += 1
    ok = f'{SEL}, outcome="ok"'
    d = d.with_panel(
        _place(
            _series(
                "p50 / p99 per target against the route's latency budget",
                "Whole-request time of successful requests by the model that served, and the "
                "route's latencyBudgetMs (dashed): the ModelrouteP99OverBudget alert compares "
                "the route's p99 with it.",
                "s",
                [
                    Query(
                        _hist(0.5, "route, model, le", "modelroute_request_duration_seconds", ok),
                        "p50 {{route}} / {{model}}",
                    ),
                    Query(
                        _hist(0.99, "route, model, le", "modelroute_request_duration_seconds", ok),
                        "p99 {{route}} / {{model}}",
                    ),
                    Query(
                        f"max by (route) (modelroute_route_latency_budget_seconds{{{SEL}}})",
                        "budget {{route}}",
                    ),
                ],
            ).override_by_query(
                "C",
                [
                    DynamicConfigValue(
                        id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                    )
                ],
            ),
            0,
            y,
            16,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _series(
                "Time to first token, p99",
                "Until the first byte of the answer reached the app, by the model that served.",
                "s",
                [
                    Query(
                        _hist(
                            0.99, "route, model, le", "modelroute_time_to_first_token_seconds", SEL
                        ),
                        "{{route}} / {{model}}",
                    )
                ],
            ),
            16,
            y,
            8,
            8,
        )
    )
    y += 8
    d = d.with_row(Row("Sidecar").grid_pos(GridPos(x=0, y=y, w=24, h=1)))
    y += 1
    d = d.with_panel(
        _place(
            _series(
                "Sidecar overhead",
                "The proxy's own time per request (total minus waiting on upstreams).",
                "s",
                [
                    Query(
                        _hist(0.5, "le", "modelroute_overhead_seconds", NS_SEL),
                        "p50",
                    ),
                    Query(
                        _hist(0.99, "le", "modelroute_overhead_seconds", NS_SEL),
                        "p99",
                    ),
                ],
            ),
            0,
            y,
            12,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _series(
                "Upstream connections",
                "Connections per provider in use and idle, and requests queued for one "
                "(a lasting queue: raise maxConnections).",
                "short",
                [
                    Query(
                        f"sum by (provider, state) (modelroute_upstream_connections{{{NS_SEL}}})",
                        "{{provider}} {{state}}",
                    ),
                    Query(
                        f"sum by (provider) (modelroute_upstream_queued_requests{{{NS_SEL}}})",
                        "{{provider}} queued",
                    ),
                ],
            ),
            12,
            y,
            8,
            8,
        )
    )
    d = d.with_panel(
        _place(
            _with_targets(
                stat.Panel()
                .title("Sidecars up")
                .description("Sidecars Prometheus scrapes successfully.")
                .unit("short"),
                [Query(f'sum(up{{container="modelroute-proxy", {NS_SEL}}})', "up")],
            ),
            20,
            y,
            4,
            8,
        )
    )
    return d


def render() -> str:
    """The dashboard JSON as committed: stable key order, two-space indent, final newline."""
    model = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(build().build()))
    for number, panel in enumerate(model["panels"], start=1):
        panel["id"] = number  # Grafana links and edits panels by id: unique and stable
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


PANEL_KINDS = {
    "timeseries": "time series",
    "bargauge": "bar gauge",
    "piechart": "pie chart",
    "state-timeline": "state timeline",
    "stat": "stat",
}


def layout_svg(model: dict[str, Any]) -> str:
    """The dashboard's grid drawn from its panels: where each one sits, its title and kind.

    A picture for the docs that can't drift from the dashboard (it is regenerated with
    it); the PNG beside it is this SVG rasterised once.
    """
    col, unit, pad = 40, 28, 4
    width = 24 * col
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in model["panels"]) * unit
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#111217"/>',
    ]
    for panel in model["panels"]:
        g = panel["gridPos"]
        x, y, w, h = g["x"] * col, g["y"] * unit, g["w"] * col, g["h"] * unit
        title = html.escape(panel["title"])
        if panel["type"] == "row":
            out.append(
                f'<text x="{x + pad}" y="{y + unit - 8}" fill="#ccccdc" font-size="15" '
                f'font-weight="bold">▾ {title}</text>'
            )
            continue
        out.append(
            f'<rect x="{x + pad}" y="{y + pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" '
            'rx="3" fill="#181b1f" stroke="#2c3235"/>'
        )
        lines = textwrap.wrap(panel["title"], max(12, (w - 4 * pad) // 8)) or [""]
        for i, line in enumerate(lines):
            out.append(
                f'<text x="{x + 3 * pad}" y="{y + 24 + 17 * i}" fill="#d8d9da" '
                f'font-size="13" font-weight="bold">{html.escape(line)}</text>'
            )
        kind = PANEL_KINDS.get(panel["type"], panel["type"])
        legends = sorted({t.get("legendFormat", "") for t in panel.get("targets", [])})
        detail = html.escape(f"{kind} · " + ", ".join(legends))
        for i, line in enumerate(textwrap.wrap(detail, max(12, (w - 4 * pad) // 7))[:4]):
            out.append(
                f'<text x="{x + 3 * pad}" y="{y + 30 + 17 * len(lines) + 15 * i}" '
                f'fill="#8e8e8e" font-size="11">{line}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write", action="store_true", help=f"write {OUTPUT} and {LAYOUT} (else print the JSON)"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        OUTPUT.write_text(text)
        LAYOUT.parent.mkdir(parents=True, exist_ok=True)
        LAYOUT.write_text(layout_svg(json.loads(text)))
        print(f"wrote {OUTPUT} and {LAYOUT}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
