"""The chart's PrometheusRule: valid for Prometheus, and each alert fires when (and only when) it should.

The rules are rendered from the chart with the real helm (one source, no copy
to drift), checked with ``promtool check rules`` and unit-tested with
``promtool test rules`` on synthetic series named exactly as
``proxy/metrics.py`` exposes them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelroute"
NS = {"namespace": "llm-apps"}
GENERAL = {**NS, "route": "general"}


@pytest.fixture(scope="module")
def helm() -> str:
    local = ROOT / ".tools" / "bin" / "helm"
    path = str(local) if os.access(local, os.X_OK) else shutil.which("helm")
    if path is None:
        message = "helm not found in .tools/bin or PATH; run scripts/install-test-tools.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def render_rules(helm: str, *sets: str, skip_schema: bool = False) -> dict[str, Any]:
    cmd = [helm, "template", "mr", str(CHART), "--namespace", "modelroute-system"]
    cmd += ["--show-only", "templates/prometheusrule.yaml"]
    cmd += ["--set", "monitoring.prometheusRule.enabled=true"]
    for s in sets:
        cmd += ["--set", s]
    if skip_schema:
        cmd.append("--skip-schema-validation")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    [rule] = [d for d in yaml.safe_load_all(out) if d]
    assert rule["kind"] == "PrometheusRule"
    return {"groups": rule["spec"]["groups"]}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def alert(at: str, name: str, *fired: tuple[dict[str, str], dict[str, str]]) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [{"exp_labels": labels, "exp_annotations": notes} for labels, notes in fired],
    }


def unit_tests() -> list[dict[str, Any]]:
    flash_cost = {**GENERAL, "model": "deepseek-v4-flash", "provider": "deepseek"}
    cost_spike = {
        "interval": "5m",
        "input_series": [
            # $6/h for a day, then $120/h (a fallback to kimi-k2.5, say)
            series("modelroute_cost_usd_total", {**flash_cost, "pod": "a"}, "0+0.5x288 144+10x30"),
            # a route that spends pennies: 20x more, but under the $1/h floor
            series(
                "modelroute_cost_usd_total",
                {**NS, "route": "tiny", "model": "qwen3-8b", "provider": "qwen", "pod": "a"},
                "0+0.0001x288 0.0288+0.002x30",
            ),
        ],
        "alert_rule_test": [
            alert("23h", "ModelrouteCostSpike"),
            alert(
                "26h",
                "ModelrouteCostSpike",
                (
                    {**GENERAL, "severity": "warning"},
                    {
                        "summary": (
                            "route llm-apps/general spends 120 USD/h, over 3x the same hour yesterday"
                        ),
                        "description": (
                            "Check modelroute_cost_usd_total by model: a fallback to a premium "
                            "target, a traffic surge or longer completions."
                        ),
                    },
                ),
            ),
        ],
    }
    budget = {
        "interval": "1m",
        "input_series": [
            series(
                "modelroute_budget_limit_usd", {**GENERAL, "window": "day", "pod": "a"}, "50x40"
            ),
            series("modelroute_budget_remaining_usd", {**GENERAL, "pod": "a"}, "40x5 4x10 0x20"),
            series(
                "modelroute_budget_limit_usd",
                {**NS, "route": "ok", "window": "day", "pod": "a"},
                "50x40",
            ),
            series("modelroute_budget_remaining_usd", {**NS, "route": "ok", "pod": "a"}, "45x40"),
        ],
        "alert_rule_test": [
            alert("4m", "ModelrouteBudgetNearlyExhausted"),
            alert(
                "13m",
                "ModelrouteBudgetNearlyExhausted",
                (
                    {**GENERAL, "severity": "warning"},
                    {
                        "summary": "route llm-apps/general has 8% of its budget left",
                        "description": (
                            "When it runs out the route's budget action "
                            "(alert, downgrade or reject) applies."
                        ),
                    },
                ),
            ),
            alert("14m", "ModelrouteBudgetExhausted"),
            alert(
                "18m",
                "ModelrouteBudgetExhausted",
                (
                    {**GENERAL, "severity": "critical"},
                    {"summary": "route llm-apps/general has spent its whole budget"},
                ),
            ),
        ],
    }
    served = {**GENERAL, "provider": "kimi", "region": "cn-north", "outcome": "ok"}
    fallback = {
        "interval": "1m",
        "input_series": [
            series(
                "modelroute_requests_total", {**served, "model": "kimi-k2.5", "pod": "a"}, "0+10x40"
            ),
            series(
                "modelroute_fallbacks_total",
                {
                    **GENERAL,
                    "from_model": "deepseek-v4-flash",
                    "to_model": "kimi-k2.5",
                    "reason": "5xx",
                    "pod": "a",
                },
                "0+9x40",
            ),
            # hedges that won are not a downgrade
            series(
                "modelroute_requests_total",
                {**served, "route": "hedged", "model": "kimi-k2.5", "pod": "a"},
                "0+10x40",
            ),
            series(
                "modelroute_fallbacks_total",
                {
                    **NS,
                    "route": "hedged",
                    "from_model": "deepseek-v4-flash",
                    "to_model": "kimi-k2.5",
                    "reason": "hedge",
                    "pod": "a",
                },
                "0+9x40",
            ),
        ],
        "alert_rule_test": [
            alert("8m", "ModelrouteServingFromFallback"),  # pending: under the 10m hold
            alert(
                "25m",
                "ModelrouteServingFromFallback",
                (
                    {
                        **GENERAL,
                        "from_model": "deepseek-v4-flash",
                        "to_model": "kimi-k2.5",
                        "severity": "warning",
                    },
                    {
                        "summary": (
                            "route llm-apps/general serves 90% of requests "
                            "from kimi-k2.5 instead of deepseek-v4-flash"
                        ),
                        "description": (
                            "See modelroute_upstream_attempts_total by result and "
                            "modelroute_circuit_state for why the primary fails."
                        ),
                    },
                ),
            ),
        ],
    }

    def histogram(route: str, per_minute: dict[str, int]) -> list[dict[str, str]]:
        labels = {**NS, "route": route, "model": "m", "outcome": "ok", "pod": "a"}
        out = [
            series("modelroute_request_duration_seconds_bucket", {**labels, "le": le}, f"0+{n}x40")
            for le, n in per_minute.items()
        ]
        out.append(
            series(
                "modelroute_request_duration_seconds_count", labels, f"0+{per_minute['+Inf']}x40"
            )
        )
        return out

    p99 = {
        "interval": "1m",
        "input_series": [
            # general: 10 req/min, 9 of them between 1.5 s and 2.5 s; budget 1.8 s
            *histogram("general", {"1.5": 1, "2.5": 10, "+Inf": 10}),
            series("modelroute_route_latency_budget_seconds", {**GENERAL, "pod": "a"}, "1.8x40"),
            # fast: everything under 0.5 s
            *histogram("fast", {"0.5": 10, "2.5": 10, "+Inf": 10}),
            series(
                "modelroute_route_latency_budget_seconds",
                {**NS, "route": "fast", "pod": "a"},
                "1.8x40",
            ),
            # quiet: slow, but 2 requests in 10 minutes are no p99
            *histogram("quiet", {"1.5": 0, "2.5": 0, "+Inf": 0}),
            series(
                "modelroute_route_latency_budget_seconds",
                {**NS, "route": "quiet", "pod": "a"},
                "1.8x40",
            ),
        ],
        "alert_rule_test": [
            alert("8m", "ModelrouteP99OverBudget"),
            alert(
                "25m",
                "ModelrouteP99OverBudget",
                (
                    {**GENERAL, "severity": "warning"},
                    {"summary": "route llm-apps/general p99 is 2.489s, over its latencyBudgetMs"},
                ),
            ),
        ],
    }
    circuit = {
        "interval": "1m",
        "input_series": [
            # open, half-open probes that fail, open again: still not serving
            series(
                "modelroute_circuit_state",
                {
                    **GENERAL,
                    "provider": "deepseek",
                    "model": "deepseek-v4-flash",
                    "region": "us-east",
                    "pod": "a",
                },
                "0 0 1 1 2 1 1 2 1 1 1 1",
            ),
        ],
        "alert_rule_test": [
            alert("3m", "ModelrouteCircuitOpen"),
            alert(
                "9m",
                "ModelrouteCircuitOpen",
                (
                    {
                        **GENERAL,
                        "provider": "deepseek",
                        "model": "deepseek-v4-flash",
                        "region": "us-east",
                        "severity": "warning",
                    },
                    {
                        "summary": "circuit for deepseek/deepseek-v4-flash@us-east on route "
                        "llm-apps/general has been open (or probing half-open) for 5 minutes"
                    },
                ),
            ),
        ],
    }
    sidecar = {"namespace": "llm-apps", "pod": "app-7d9", "container": "modelroute-proxy"}
    down = {
        "interval": "1m",
        "input_series": [
            # scrapes fail from minute 2 on; another sidecar stays up
            series("up", sidecar, "1 1 0x10"),
            series("up", {**sidecar, "pod": "app-8f1"}, "1x12"),
        ],
        "alert_rule_test": [
            alert("4m", "ModelrouteSidecarDown"),  # pending: under the 5m hold
            alert(
                "8m",
                "ModelrouteSidecarDown",
                (
                    {**sidecar, "severity": "warning"},
                    {"summary": "modelroute sidecar llm-apps/app-7d9 is not scrapeable"},
                ),
            ),
        ],
    }
    qwen = {**GENERAL, "model": "qwen3.5-32b", "provider": "qwen", "pod": "a"}
    unpriced = {
        "interval": "1m",
        "input_series": [
            # no output tokens unpriced for 10 minutes, then an unpriced target serves
            series("modelroute_unpriced_tokens_total", {**qwen, "type": "output"}, "0x10 0+50x30"),
            # unpriced input tokens are the seeds' normal case: no alert for them
            series(
                "modelroute_unpriced_tokens_total",
                {**flash_cost, "type": "input", "pod": "a"},
                "0+100x40",
            ),
        ],
        "alert_rule_test": [
            alert("10m", "ModelrouteUnpricedTokens"),
            alert(
                "30m",
                "ModelrouteUnpricedTokens",
                (
                    {**GENERAL, "model": "qwen3.5-32b", "provider": "qwen", "severity": "info"},
                    {
                        "summary": "qwen/qwen3.5-32b serves route llm-apps/general without an "
                        "output price: its cost is unknown, not zero"
                    },
                ),
            ),
        ],
    }
    region = {
        "interval": "1m",
        "input_series": [
            series(
                "modelroute_region_ejected",
                {**NS, "provider": "deepseek", "region": "us-east", "pod": "a"},
                "0 0 1x10",
            ),
            series(
                "modelroute_region_ejected",
                {**NS, "provider": "kimi", "region": "cn-north", "pod": "a"},
                "0x12",
            ),
        ],
        "alert_rule_test": [
            alert("4m", "ModelrouteRegionEjected"),
            alert(
                "8m",
                "ModelrouteRegionEjected",
                (
                    {"provider": "deepseek", "region": "us-east", "severity": "warning"},
                    {"summary": "region deepseek@us-east is ejected by the FailoverPolicy"},
                ),
            ),
        ],
    }
    deployment = {"deployment": "mr-modelroute", "namespace": "modelroute-system"}
    operator = {
        "interval": "1m",
        "input_series": [
            series("kube_deployment_status_replicas_available", deployment, "2 2 0x10"),
            # another release's operator at zero is not this release's alert
            series(
                "kube_deployment_status_replicas_available",
                {**deployment, "deployment": "other"},
                "0x12",
            ),
        ],
        "alert_rule_test": [
            alert("4m", "ModelrouteOperatorUnavailable"),
            alert(
                "8m",
                "ModelrouteOperatorUnavailable",
                (
                    {**deployment, "severity": "critical"},
                    {
                        "summary": "no modelroute operator replica is available; new pods start "
                        "without the sidecar"
                    },
                ),
            ),
        ],
    }
    # the operator's own series, as its PodMonitor labels them
    replica = {"namespace": "modelroute-system", "container": "operator", "pod": "mr-modelroute-a"}
    halted = {
        "interval": "1m",
        "input_series": [
            series(
                "modelroute_operator_rollout_phase",
                {**replica, "policy": "regions", "phase": "Halted"},
                "0 0 1x10",
            ),
            series(
                "modelroute_operator_rollout_phase",
                {**replica, "policy": "regions", "phase": "Progressing"},
                "1 1 0x10",
            ),
            # another policy that completed, and another release's halted one: quiet
            series(
                "modelroute_operator_rollout_phase",
                {**replica, "policy": "zones", "phase": "Halted"},
                "0x12",
            ),
            series(
                "modelroute_operator_rollout_phase",
                {**replica, "namespace": "other-release", "policy": "x", "phase": "Halted"},
                "1x12",
            ),
        ],
        "alert_rule_test": [
            alert("1m", "ModelrouteRolloutHalted"),
            alert(
                "5m",
                "ModelrouteRolloutHalted",
                (
                    {"policy": "regions", "severity": "warning"},
                    {
                        "summary": "the rollout of FailoverPolicy regions halted; its later "
                        "batches keep the previous failover block",
                        "description": "kubectl describe failoverpolicy regions says which "
                        "batch regressed and why; editing the policy starts a new rollout.",
                    },
                ),
            ),
        ],
    }
    injections = "modelroute_operator_injections_total"
    unchecked = {
        "interval": "1m",
        "input_series": [
            # pods injected all along; three admitted unchecked in minutes 20-22
            series(injections, {**replica, "result": "injected"}, "0+5x40"),
            series(injections, {**replica, "result": "admitted_unchecked"}, "0x20 1 2 3x18"),
            series(injections, {**replica, "result": "refused"}, "0x40"),
            series(
                injections,
                {**replica, "namespace": "other-release", "result": "refused"},
                "0+1x40",
            ),
        ],
        "alert_rule_test": [
            alert("15m", "ModelrouteInjectionUnchecked"),
            alert(
                "25m",
                "ModelrouteInjectionUnchecked",
                (
                    {"result": "admitted_unchecked", "severity": "warning"},
                    {
                        "summary": "3 pods admitted_unchecked in 10 minutes: the sidecar "
                        "injector could not read their namespace",
                        "description": "See the operator's log and "
                        "modelroute_operator_namespace_view_synced: the Kubernetes API was "
                        "unreachable from a replica whose namespace view was not synced.",
                    },
                ),
            ),
            alert("40m", "ModelrouteInjectionUnchecked"),  # ten quiet minutes later: over
        ],
    }
    return [
        cost_spike, budget, fallback, p99, circuit, down, unpriced, region, operator,
        halted, unchecked,
    ]  # fmt: skip


def threshold_tests() -> list[dict[str, Any]]:
    """ModelrouteCostOverThreshold, rendered with thresholds.costPerHourUsd=20."""
    labels = {**GENERAL, "model": "kimi-k2.5", "provider": "kimi", "pod": "a"}
    return [
        {
            "interval": "5m",
            "input_series": [
                # $12/h for two hours (under $20), then $36/h
                series("modelroute_cost_usd_total", labels, "0+1x24 24+3x24"),
                series(
                    "modelroute_cost_usd_total",
                    {**labels, "route": "steady"},
                    "0+1x48",
                ),
            ],
            "alert_rule_test": [
                alert("2h", "ModelrouteCostOverThreshold"),
                alert(
                    "3h30m",
                    "ModelrouteCostOverThreshold",
                    (
                        {**GENERAL, "severity": "warning"},
                        {
                            "summary": "route llm-apps/general spent 36 USD in the last hour "
                            "(threshold 20)"
                        },
                    ),
                ),
            ],
        }
    ]


def test_rules_pass_promtool(helm: str, promtool: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(render_rules(helm)))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert {
        "ModelrouteCostSpike",
        "ModelrouteBudgetNearlyExhausted",
        "ModelrouteServingFromFallback",
        "ModelrouteP99OverBudget",
    } <= alerts


def test_alerts_fire_on_synthetic_series(helm: str, promtool: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(render_rules(helm)))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": unit_tests()}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_absolute_cost_threshold_is_opt_in(helm: str, promtool: str, tmp_path: Path) -> None:
    """Rendered only when monitoring.prometheusRule.thresholds.costPerHourUsd is set."""
    names = {r.get("alert") for g in render_rules(helm)["groups"] for r in g["rules"]}
    assert "ModelrouteCostOverThreshold" not in names
    # set through the values schema (it declares every threshold)
    rules = render_rules(helm, "monitoring.prometheusRule.thresholds.costPerHourUsd=20")
    [rule] = [
        r
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "ModelrouteCostOverThreshold"
    ]
    assert rule["expr"].strip().endswith("> 20")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_opt_in_cost_threshold_fires_on_synthetic_series(
    helm: str, promtool: str, tmp_path: Path
) -> None:
    rules = render_rules(helm, "monitoring.prometheusRule.thresholds.costPerHourUsd=20")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": threshold_tests()}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shipped_alert_has_a_firing_and_a_quiet_case(helm: str) -> None:
    """A new alert in the chart needs its unit test here: one eval where it fires, one not."""
    rules = render_rules(helm, "monitoring.prometheusRule.thresholds.costPerHourUsd=20")
    shipped = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in unit_tests() + threshold_tests():
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert shipped - fires == set(), "alerts never shown firing"
    assert shipped - quiet == set(), "alerts never shown staying quiet"
