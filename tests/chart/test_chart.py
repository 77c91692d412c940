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
    sidecars, operator = by_kind(docs, "PodMonitor")
    assert sidecars["metadata"]["name"] == "mr-modelroute-sidecars"
    assert sidecars["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    [rule] = by_kind(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"ModelrouteRolloutHalted", "ModelrouteInjectionUnchecked"} <= alerts

    # the operator's: its own replicas only, on the port its /metrics is served from
    assert operator["metadata"]["name"] == "mr-modelroute-operator"
    assert operator["metadata"]["labels"]["release"] == "prometheus"  # podMonitor.labels
    assert operator["spec"]["namespaceSelector"] == {"matchNames": ["modelroute-system"]}
    [deploy] = by_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]
    assert operator["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert operator["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [endpoint] = operator["spec"]["podMetricsEndpoints"]
    assert endpoint == {"port": "ready", "path": "/metrics", "interval": "15s"}
    [container] = pod["spec"]["containers"]
    [port] = [p for p in container["ports"] if p["name"] == endpoint["port"]]
    assert f"--readiness=0.0.0.0:{port['containerPort']}" in container["args"]
    # the injector labels sidecar pods only: the sidecars' PodMonitor never picks the operator
    assert "modelroute.io/injected" not in pod["metadata"]["labels"]


def test_operator_podmonitor_can_be_left_out_and_scraped_at_its_own_interval(
    render: Render,
) -> None:
    values = CHART / "ci" / "monitoring-values.yaml"
    docs = render(values, "--set", "monitoring.podMonitor.operator.enabled=false")
    assert [pm["metadata"]["name"] for pm in by_kind(docs, "PodMonitor")] == [
        "mr-modelroute-sidecars"
    ]
    docs = render(values, "--set", "monitoring.podMonitor.operator.interval=1m")
    [interval] = [
        pm["spec"]["podMetricsEndpoints"][0]["interval"]
        for pm in by_kind(docs, "PodMonitor")
        if pm["metadata"]["name"].endswith("-operator")
    ]
    assert interval == "1m"
    # without podMonitor.enabled there is no PodMonitor at all, the operator's included
    assert not by_kind(render(), "PodMonitor")


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


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    [deploy] = by_kind(docs, "Deployment")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_sidecar_tracing_values_reach_the_operator(render: Render, tmp_path: Path) -> None:
    """``sidecar.tracing`` becomes the operator's MODELROUTE_SIDECAR_OTEL_* (read by the injector)."""
    assert not {k for k in operator_env(render()) if "OTEL" in k or "TAIL" in k}  # off: nothing
    env = operator_env(render(CHART / "ci" / "full-values.yaml"))
    assert {k: v for k, v in env.items() if "OTEL" in k or "TAIL" in k} == {
        "MODELROUTE_SIDECAR_OTEL_ENDPOINT": "http://otel-collector.observability.svc:4318",
        "MODELROUTE_SIDECAR_OTEL_PROTOCOL": "http/protobuf",
        "MODELROUTE_SIDECAR_TRACES_TAIL_RATIO": "0.02",
        "MODELROUTE_SIDECAR_OTEL_SERVICE_NAME": "modelroute-sidecar",
        "MODELROUTE_SIDECAR_OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=ml-platform",
        "MODELROUTE_SIDECAR_OTEL_HEADERS_SECRET": "otel-collector-auth",
        "MODELROUTE_SIDECAR_OTEL_HEADERS_KEY": "headers",
    }
    head = tmp_path / "head.yaml"
    head.write_text(
        yaml.safe_dump(
            {
                "sidecar": {
                    "tracing": {
                        "endpoint": "https://collector.example:4318",
                        "sampler": "parentbased_traceidratio",
                        "samplerArg": "0.05",
                    }
                }
            }
        )
    )
    env = operator_env(render(head))
    assert env["MODELROUTE_SIDECAR_OTEL_SAMPLER"] == "parentbased_traceidratio"
    assert env["MODELROUTE_SIDECAR_OTEL_SAMPLER_ARG"] == "0.05"
    assert "MODELROUTE_SIDECAR_TRACES_TAIL_RATIO" not in env


@pytest.mark.parametrize(
    ("tracing", "says"),
    [
        ({"tail": {"enabled": True}}, "set endpoint"),
        ({"sampler": "always_on"}, "set endpoint"),
        (
            {"endpoint": "http://c:4318", "sampler": "always_on", "tail": {"enabled": True}},
            "not both",
        ),
        ({"endpoint": "http://c:4317", "protocol": "grpc"}, "http/protobuf"),
        ({"endpoint": "http://c:4318", "tail": {"enabled": True, "ratio": 2}}, "ratio"),
        ({"endpoint": "http://c:4318", "sampler": "sometimes"}, "sampler"),
        ({"endpoint": "collector:4318"}, "endpoint"),
        # OTEL_RESOURCE_ATTRIBUTES is k=v,k=v: a ',' or '=' inside would split an attribute
        ({"endpoint": "http://c:4318", "resourceAttributes": {"team": "a,b"}}, "team"),
        ({"endpoint": "http://c:4318", "resourceAttributes": {"a=b": "c"}}, "a=b"),
        # a Secret name Kubernetes would refuse: the pods would never start
        ({"endpoint": "http://c:4318", "headersSecret": {"name": "Otel_Auth"}}, "headersSecret"),
    ],
)
def test_sidecar_tracing_values_that_would_trace_nothing_or_fail_are_refused(
    helm: str, tmp_path: Path, tracing: dict[str, Any], says: str
) -> None:
    values = tmp_path / "tracing.yaml"
    values.write_text(yaml.safe_dump({"sidecar": {"tracing": tracing}}))
    result = subprocess.run(
        [helm, "template", "mr", str(CHART), "--values", str(values)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0, tracing
    assert says in result.stderr, result.stderr


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
