"""Failover settings that can't work are refused by ``modelroute validate``, with the field and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROVIDER = """apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: global, namespace: default}
spec:
  api: openai
  endpoints:
    - {region: us-east-1, baseURL: "http://127.0.0.1:9/v1"}
    - {region: eu-west-1, baseURL: "http://127.0.0.1:9/v1"}
  credentials: {env: FAKE_PROVIDER_KEY}
  models:
    - {name: chat-a, outputUSDPerMTok: 1.0, capabilities: [text]}
---
"""


def route(extra: str) -> str:
    return f"""apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: chat, namespace: default}}
spec:
  models: [chat]
  targets:
    - {{provider: global, model: chat-a}}
{extra}
---
"""


def policy(ejection: str) -> str:
    return f"""apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {{name: regions}}
spec:
  regionPreference: [us-east-1, eu-west-1]
  ejection: {ejection}
  failbackDelaySeconds: 30
"""


def validate(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "modelroute", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


GOOD = route(
    "  circuitBreaker: {failureThreshold: 5, windowSeconds: 60, openSeconds: 30}\n"
    "  hedge: {afterMs: 50}\n"
    "  connectRacing: {enabled: true, floorMs: 100, initialMs: 250}\n"
    "  latencyBudgetMs: 2000\n"
    "  residency: {regions: [eu-west-1]}"
) + policy("{errorRate: 0.5, p99LatencyMs: 5000, minRequests: 20, windowSeconds: 30}")


def test_a_sound_failover_setup_validates(tmp_path: Path) -> None:
    code, out = validate(tmp_path, PROVIDER + GOOD)
    assert code == 0, out
    assert out.startswith("ok: 3 resource(s)")


@pytest.mark.parametrize(
    ("text", "field", "why"),
    [
        (route("  circuitBreaker: {failureThreshold: 0}"), "circuitBreaker.failureThreshold", "0"),
        (route("  circuitBreaker: {openSeconds: -1}"), "circuitBreaker.openSeconds", "0"),
        (route("  circuitBreaker: {windowSeconds: 0}"), "circuitBreaker.windowSeconds", "0"),
        (route("  latencyBudgetMs: 0"), "latencyBudgetMs", "0"),
        (route("  hedge: {afterMs: 0}"), "hedge.afterMs", "greater than 0"),
        (route("  hedge: {percentile: 0}"), "hedge.percentile", "greater than 0"),
        (route("  hedge: {afterMs: 50, percentile: 95}"), "hedge", "exactly one"),
        (route("  retry: {budgetRatio: -0.1}"), "retry.budgetRatio", "0"),
        (route("  connectRacing: {floorMs: 0}"), "connectRacing.floorMs", "greater than"),
        (route("  connectRacing: {initialMs: -1}"), "connectRacing.initialMs", "greater than"),
        (route("  connectRacing: {enabled: maybe}"), "connectRacing.enabled", "bool"),
        (
            route("") + policy("{errorRate: 0}"),
            "ejection.errorRate",
            "greater than 0",
        ),
        (route("") + policy("{minRequests: 0}"), "ejection.minRequests", "greater than 0"),
        (route("") + policy("{p99LatencyMs: -5}"), "ejection.p99LatencyMs", "greater than 0"),
        (route("") + policy("{windowSeconds: 0}"), "ejection.windowSeconds", "greater than 0"),
        (
            route("  residency: {regions: [cn-north-1]}"),
            "residency.regions",
            "no target can be served from the allowed regions ['cn-north-1']",
        ),
        (route("  residency: {regions: []}"), "residency.regions", "at least 1"),
    ],
    ids=lambda v: v if isinstance(v, str) and "\n" not in v and v[0].isalpha() else None,
)
def test_settings_that_cannot_work_are_refused_with_the_field_and_why(
    tmp_path: Path, text: str, field: str, why: str
) -> None:
    code, out = validate(tmp_path, PROVIDER + text)
    assert code == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert any(field in line and why in line for line in errors), out
    assert "nothing was applied" in out
