"""The chart's side of issue 13: availability hygiene, admin port, Redis, image pinning.

Rendered with the real helm (``ci/security-values.yaml`` also goes through
``test_chart.py``'s lint and strict schema validation with every other scenario).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from .conftest import CHART, Render

SECURITY = CHART / "ci" / "security-values.yaml"


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deploy] = by_kind(docs, "Deployment")
    return deploy  # type: ignore[no-any-return]


def _env(docs: list[dict[str, Any]]) -> dict[str, str]:
    [container] = _operator(docs)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_operator_survives_drains_and_node_loss(render: Render) -> None:
    docs = render()
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    selector = _operator(docs)["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    affinity = _operator(docs)["spec"]["template"]["spec"]["affinity"]
    [term] = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector


def test_readiness_waits_for_the_namespace_view(render: Render) -> None:
    [container] = _operator(render())["spec"]["template"]["spec"]["containers"]
    assert "--readiness=0.0.0.0:8081" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ready"}
    assert {"name": "ready", "containerPort": 8081, "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize("policy", ["Ignore", "Fail"])
def test_the_injector_knows_the_failure_policy(render: Render, policy: str) -> None:
    docs = render(None, "--set", f"webhook.injectionFailurePolicy={policy}")
    assert _env(docs)["MODELROUTE_INJECTION_FAILURE_POLICY"] == policy


def test_injection_never_selects_kube_system_or_the_operators_namespace(render: Render) -> None:
    [mwc] = by_kind(render(), "MutatingWebhookConfiguration")
    [hook] = mwc["webhooks"]
    assert {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", "modelroute-system"],
    } in hook["namespaceSelector"]["matchExpressions"]


def test_equal_peering_priorities_are_refused(helm: str) -> None:
    cmd = [helm, "template", "mr", str(CHART), "--set", "operator.priority=7"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0
    assert "operator.priority" in result.stderr and "pauses" in result.stderr
    one = subprocess.run([*cmd, "--set", "operator.replicas=1"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr


def test_image_digest_pins_operator_and_sidecar(render: Render) -> None:
    docs = render(SECURITY)
    digest = "sha256:4f9c1f3a7b0e2d5c8a6b9e1d3f7a2c4b6d8e0f1a3c5e7b9d2f4a6c8e0b1d3f5a"
    [container] = _operator(docs)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/modelroute/modelroute@{digest}"
    assert _env(docs)["MODELROUTE_SIDECAR_IMAGE"] == f"ghcr.io/modelroute/modelroute@{digest}"


def test_redis_values_reach_the_injector_without_a_password(render: Render) -> None:
    env = _env(render(SECURITY))
    assert env["MODELROUTE_SIDECAR_REDIS_URL"] == "rediss://redis.modelroute-system.svc:6380/0"
    assert env["MODELROUTE_SIDECAR_REDIS_PASSWORD_SECRET"] == "modelroute-redis"
    assert env["MODELROUTE_SIDECAR_REDIS_PASSWORD_KEY"] == "password"
    assert env["MODELROUTE_SIDECAR_REDIS_CA_CONFIGMAP"] == "modelroute-redis-ca"
    assert env["MODELROUTE_SIDECAR_REDIS_CA_KEY"] == "ca.crt"
    assert "MODELROUTE_SIDECAR_REDIS_CA_SECRET" not in env
    assert "MODELROUTE_SIDECAR_REDIS_URL" not in _env(render())
    secret = _env(
        render(None, "--set", "sidecar.redis.url=rediss://r:6380", "--set",
               "sidecar.redis.caBundle.secret=redis-ca")
    )  # fmt: skip
    assert secret["MODELROUTE_SIDECAR_REDIS_CA_SECRET"] == "redis-ca"
    assert "MODELROUTE_SIDECAR_REDIS_CA_CONFIGMAP" not in secret


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (["sidecar.redis.caBundle.configMap=ca"], "must be rediss://"),
        (["sidecar.redis.url=redis://r:6379", "sidecar.redis.caBundle.secret=ca"], "must be rediss://"),
        (
            ["sidecar.redis.url=rediss://r", "sidecar.redis.caBundle.configMap=a",
             "sidecar.redis.caBundle.secret=b"],
            "not both",
        ),
    ],
)  # fmt: skip
def test_a_redis_ca_bundle_without_tls_or_from_two_places_is_refused(
    helm: str, values: list[str], says: str
) -> None:
    """A CA for a plain-text URL would be ignored while the values say the link is verified."""
    sets = [arg for value in values for arg in ("--set", value)]
    result = subprocess.run(
        [helm, "template", "mr", str(CHART), *sets], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "sidecar.redis.caBundle" in result.stderr and says in result.stderr, result.stderr


def test_sidecar_admin_port_is_only_for_the_operator_and_prometheus(render: Render) -> None:
    policies = {p["metadata"]["name"]: p for p in by_kind(render(SECURITY), "NetworkPolicy")}
    sidecar = policies["mr-modelroute-sidecar-admin"]
    assert sidecar["metadata"]["namespace"] == "llm-apps"
    assert sidecar["spec"]["podSelector"] == {"matchLabels": {"modelroute.io/injected": "true"}}
    open_rule, admin_rule = sidecar["spec"]["ingress"]
    tcp = [(p["port"], p["endPort"]) for p in open_rule["ports"] if p["protocol"] == "TCP"]
    assert tcp == [(1, 15400), (15402, 65535)]  # everything but the admin port, from anywhere
    assert admin_rule["ports"] == [{"port": 15401, "protocol": "TCP"}]
    sources = [f["namespaceSelector"]["matchLabels"] for f in admin_rule["from"]]
    assert sources == [
        {"kubernetes.io/metadata.name": "modelroute-system"},
        {"kubernetes.io/metadata.name": "monitoring"},
    ]
