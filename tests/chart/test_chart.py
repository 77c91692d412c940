"""helm lint + template for the defaults and every ci/*-values.yaml, schema-validated.

Built-in kinds are validated with kubernetes-validate (Kubernetes' own OpenAPI
schemas, strict: unknown fields fail) for the version each scenario targets.
Custom resources of other projects (cert-manager, prometheus-operator) have no
schema here; their presence and shape are asserted directly.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .conftest import CHART, SCENARIOS, Render, kube_version_for

FOREIGN_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/", "kopf.dev/")
SCENARIO_IDS = ["defaults", *(p.name for p in SCENARIOS)]
SCENARIO_PATHS: list[Path | None] = [None, *SCENARIOS]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", SCENARIO_PATHS, ids=SCENARIO_IDS)
def test_lint(helm: str, values: Path | None) -> None:
    cmd = [helm, "lint", "--strict", str(CHART)]
    if values is not None:
        cmd += ["--values", str(values)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", SCENARIO_PATHS, ids=SCENARIO_IDS)
def test_rendered_manifests_validate(render: Render, values: Path | None) -> None:
    docs = render(values)
    version = kube_version_for(values)
    for doc in docs:
        if doc["apiVersion"].startswith(FOREIGN_GROUPS):
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "modelroute", doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"


def test_defaults(render: Render) -> None:
    docs = render()
    [deploy] = by_kind(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "operator"
    assert "--webhook-listen=0.0.0.0:9443" in container["args"]
    # No fixed priority: replicas derive distinct ones from their hostnames.
    assert not any(a.startswith("--priority") for a in container["args"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELROUTE_KUBE_VERSION"] == "v1.30.0"
    assert json.loads(env["MODELROUTE_SIDECAR_REQUESTS"]) == {"cpu": "50m", "memory": "64Mi"}
    [mwc] = by_kind(docs, "MutatingWebhookConfiguration")
    [hook] = mwc["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["namespaceSelector"]["matchLabels"] == {"modelroute.io/enabled": "true"}
    assert hook["clientConfig"]["service"]["path"] == "/inject-sidecar"
    [vwc] = by_kind(docs, "ValidatingWebhookConfiguration")
    paths = sorted(h["clientConfig"]["service"]["path"] for h in vwc["webhooks"])
    assert paths == ["/validate-failoverpolicy", "/validate-modelprovider", "/validate-modelroute"]
    assert not by_kind(docs, "NetworkPolicy")
    assert not by_kind(docs, "PodMonitor")


def test_self_signed_certificate_chain(render: Render, tmp_path: Path) -> None:
    """The caBundle in both webhook configurations is the CA that signed the served cert."""
    docs = render()
    [secret] = by_kind(docs, "Secret")
    ca = base64.b64decode(secret["data"]["ca.crt"])
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "tls.crt").write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to verify the chart-generated certificate chain"
    verify = subprocess.run(
        [openssl, "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(
        [openssl, "x509", "-noout", "-text", "-in", str(tmp_path / "tls.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:mr-modelroute-webhook.modelroute-system.svc" in text
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in by_kind(docs, kind)[0]["webhooks"]:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca


def test_cert_manager(render: Render) -> None:
    docs = render(CHART / "ci" / "cert-manager-values.yaml")
    assert not by_kind(docs, "Secret"), "cert-manager owns the TLS Secret"
    [cert] = by_kind(docs, "Certificate")
    [issuer] = by_kind(docs, "Issuer")
    assert cert["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        [conf] = by_kind(docs, kind)
        assert conf["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"modelroute-system/{cert['metadata']['name']}"
        )
        assert all("caBundle" not in h["clientConfig"] for h in conf["webhooks"])


def test_old_kubernetes_gets_regular_container(render: Render) -> None:
    docs = render(CHART / "ci" / "old-k8s-values.yaml")
    [deploy] = by_kind(docs, "Deployment")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELROUTE_KUBE_VERSION"] == "v1.28.0"


def test_monitoring(render: Render) -> None:
    docs = render(CHART / "ci" / "monitoring-values.yaml")
    [pm] = by_kind(docs, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    [rule] = by_kind(docs, "PrometheusRule")
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}


def test_networkpolicy_and_full(render: Render) -> None:
    docs = render(CHART / "ci" / "full-values.yaml")
    [np] = by_kind(docs, "NetworkPolicy")
    assert {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]} == {
        9443,
        8080,
        8081,
    }
    roles = by_kind(docs, "Role")
    assert {r["metadata"]["namespace"] for r in roles} == {"llm-apps", "search"}
    for role in roles:
        assert role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["modelroute-table"],
                "verbs": ["get", "list", "watch"],
            }
        ]
    [mwc] = by_kind(docs, "MutatingWebhookConfiguration")
    assert mwc["webhooks"][0]["failurePolicy"] == "Fail"


def test_schema_rejects_unknown_and_wrong_values(helm: str) -> None:
    for bad in (
        "operator.replicaz=2",
        "webhook.injectionFailurePolicy=Maybe",
        "sidecar.adminPort=0",
    ):
        result = subprocess.run(
            [helm, "template", "mr", str(CHART), "--set", bad], capture_output=True, text=True
        )
        assert result.returncode != 0, bad
        assert "schema" in result.stderr.lower(), result.stderr


def test_schema_covers_every_value() -> None:
    """Every key in values.yaml is declared in values.schema.json, and objects are closed."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(v: Any, s: dict[str, Any], path: str) -> None:
        if not isinstance(v, dict) or "properties" not in s:
            return
        undeclared = set(v) - set(s["properties"])
        assert not undeclared, f"{path or '<root>'}: not in values.schema.json: {undeclared}"
        assert s.get("additionalProperties") is False, path
        for key, sub in v.items():
            walk(sub, s["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


def test_notes_give_next_commands(helm: str) -> None:
    out = subprocess.run(
        [helm, "install", "mr", str(CHART), "--dry-run=client", "--namespace", "modelroute-system"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "kubectl label namespace" in out
    assert "kubectl get mroute" in out


def test_replicas_share_one_peering_object(render: Render) -> None:
    """Two replicas only take turns if the ClusterKopfPeering they name exists (CRD + object)."""
    docs = render(None)
    [peering] = by_kind(docs, "ClusterKopfPeering")
    [deploy] = by_kind(docs, "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--peering={peering['metadata']['name']}" in args
    assert deploy["spec"]["replicas"] == 2
    crd = yaml.safe_load((CHART / "crds" / "kopf-peering.yaml").read_text())
    assert crd["spec"]["group"] == peering["apiVersion"].split("/")[0]
    assert crd["spec"]["names"]["kind"] == "ClusterKopfPeering"
    [binding] = by_kind(docs, "ClusterRoleBinding")
    [role] = [
        r
        for r in by_kind(docs, "ClusterRole")
        if r["metadata"]["name"] == binding["roleRef"]["name"]
    ]
    assert any(
        "clusterkopfpeerings" in r.get("resources", []) and "patch" in r["verbs"]
        for r in role["rules"]
    )
