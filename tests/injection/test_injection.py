"""Sidecar injection: real AdmissionReview JSON in, JSON patch out, patched pod validated.

The patch is applied with the ``jsonpatch`` library (already installed as kopf's
own dependency, the same code kopf uses to build admission patches), so these
tests check what the API server would store, not our own reading of the ops.
The result is validated against Kubernetes' Pod schema for the server version
the review claims, with ``kubernetes-validate --strict`` semantics.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from modelroute.operator.injection import (
    SIDECAR_NAME,
    Decision,
    InjectionSettings,
    build_patch,
    decide,
    parse_version,
)
from modelroute.operator.mutation import settings_from_env
from modelroute.proxy.tail_sampling import tail_ratio_from_env
from modelroute.proxy.tracing import tracing_configured

from .reviews import pod_create_review

ENROLLED = {"modelroute.io/enabled": "true", "kubernetes.io/metadata.name": "llm-apps"}
NS_ANNOTATIONS = {"modelroute.io/secrets": "gateway-credentials, other-key"}
SETTINGS = InjectionSettings(secrets=("platform-key",))


def admission_review(
    pod_spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it for a Deployment's pod (no name yet)."""
    metadata: dict[str, Any] = {
        "generateName": "chat-app-7d9f8b6c5-",
        "namespace": "llm-apps",
        "labels": {"app.kubernetes.io/name": "chat-app", "pod-template-hash": "7d9f8b6c5"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "chat-app-7d9f8b6c5",
                "uid": "0f6e3a52-6a43-4b8e-9f1c-3f2d2d0b7a11",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotations is not None:
        metadata["annotations"] = annotations
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
    return pod_create_review(pod, "llm-apps")


def app_spec(env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "python:3.11-slim",
        "command": ["python", "app.py"],
        "resources": {"requests": {"cpu": "10m"}},
    }
    if env is not None:
        container["env"] = env
    return {
        "containers": [container, {"name": "worker", "image": "busybox:1.36"}],
        "restartPolicy": "Always",
        "serviceAccountName": "default",
        "volumes": [
            {
                "name": "kube-api-access",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}
                    ]
                },
            }
        ],
    }


def mutate(
    review: dict[str, Any], version: str, labels: dict[str, str] = ENROLLED
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pod = review["request"]["object"]
    ops = build_patch(
        pod,
        namespace_labels=labels,
        namespace_annotations=NS_ANNOTATIONS,
        server_version=parse_version(version),
        settings=SETTINGS,
    )
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    kubernetes_validate.validate(patched, version.lstrip("v").rsplit(".", 1)[0] + ".0", strict=True)
    return ops, patched


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_native_sidecar_on_1_30() -> None:
    ops, pod = mutate(admission_review(app_spec()), "v1.30.4")
    assert ops, "an enrolled pod must be patched"
    [sidecar] = pod["spec"]["initContainers"]
    assert sidecar["name"] == SIDECAR_NAME
    assert sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "worker"]
    assert sidecar["command"] == ["modelroute"]
    assert sidecar["args"] == [
        "proxy",
        "--kube",
        "--table-file",
        "/etc/modelroute/table/table.json",
        "--listen",
        "127.0.0.1:15400",
        "--admin",
        "0.0.0.0:15401",
        "--explain",
        "127.0.0.1:15402",  # /explain: loopback only (issue 13)
        "--secrets-dir",
        "/var/run/secrets/modelroute",
    ]
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 15401}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 15401}
    sc = sidecar["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert sidecar["resources"]["requests"]
    assert sidecar["resources"]["limits"]
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in sidecar["env"]}
    assert downward == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}


def test_regular_container_on_1_28() -> None:
    _, pod = mutate(admission_review(app_spec()), "v1.28.9")
    assert "initContainers" not in pod["spec"]
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["app", "worker", SIDECAR_NAME]
    assert "restartPolicy" not in pod["spec"]["containers"][2]


@pytest.mark.parametrize("version", ["v1.28.9", "v1.30.4"])
def test_volumes_only_in_sidecar(version: str) -> None:
    _, pod = mutate(admission_review(app_spec()), version)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["modelroute-table"]["configMap"]["name"] == "modelroute-table"
    items = volumes["modelroute-table"]["configMap"]["items"]
    assert items == [{"key": "table.json", "path": "table.json"}]
    secrets = sorted(v["secret"]["secretName"] for v in volumes.values() if "secret" in v)
    assert secrets == ["gateway-credentials", "other-key", "platform-key"]
    assert "kube-api-access" in volumes, "the pod's own volumes are kept"
    sidecar = next(
        c
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
        if c["name"] == SIDECAR_NAME
    )
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts == {
        "/etc/modelroute/table/",
        "/var/run/secrets/modelroute/gateway-credentials/",
        "/var/run/secrets/modelroute/other-key/",
        "/var/run/secrets/modelroute/platform-key/",
    }
    for app in pod["spec"]["containers"]:
        if app["name"] != SIDECAR_NAME:
            assert not app.get("volumeMounts"), "credentials must never reach app containers"


def test_base_url_and_annotations() -> None:
    _, pod = mutate(admission_review(app_spec(), annotations={"team": "search"}), "v1.30.0")
    for app in pod["spec"]["containers"]:
        assert env_of(app)["OPENAI_BASE_URL"] == "http://127.0.0.1:15400/v1"
    assert pod["metadata"]["labels"]["modelroute.io/injected"] == "true"
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "chat-app"
    assert pod["metadata"]["annotations"] == {
        "team": "search",
        "modelroute.io/injected": "true",
        "modelroute.io/admin-port": "15401",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "15401",
        "prometheus.io/path": "/metrics",
    }


def test_own_base_url_is_kept() -> None:
    own = [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "OPENAI_BASE_URL", "value": "https://api.example/v1"},
    ]
    _, pod = mutate(admission_review(app_spec(env=own)), "v1.30.0")
    app, worker = pod["spec"]["containers"]
    assert app["env"] == own
    assert env_of(worker)["OPENAI_BASE_URL"] == "http://127.0.0.1:15400/v1"


def test_existing_env_is_appended_to() -> None:
    _, pod = mutate(admission_review(app_spec(env=[{"name": "A", "value": "1"}])), "v1.28.0")
    assert env_of(pod["spec"]["containers"][0]) == {
        "A": "1",
        "OPENAI_BASE_URL": "http://127.0.0.1:15400/v1",
    }


def test_opt_out() -> None:
    review = admission_review(app_spec(), annotations={"modelroute.io/inject": "false"})
    ops, _ = mutate(review, "v1.30.0")
    assert ops == []


def test_namespace_not_enrolled() -> None:
    ops, _ = mutate(admission_review(app_spec()), "v1.30.0", labels={"team": "x"})
    assert ops == []
    ops, _ = mutate(
        admission_review(app_spec()), "v1.30.0", labels={"modelroute.io/enabled": "false"}
    )
    assert ops == []


@pytest.mark.parametrize("version", ["v1.28.9", "v1.30.4"])
def test_idempotent(version: str) -> None:
    review = admission_review(app_spec())
    _, once = mutate(review, version)
    review["request"]["object"] = once
    ops, twice = mutate(review, version)
    assert ops == []
    assert twice == once
    sidecars = [
        c
        for c in once["spec"].get("initContainers", []) + once["spec"]["containers"]
        if c["name"] == SIDECAR_NAME
    ]
    assert len(sidecars) == 1


def test_existing_sidecar_from_template_is_not_duplicated() -> None:
    spec = app_spec()
    spec["initContainers"] = [
        {"name": SIDECAR_NAME, "image": "custom:1", "restartPolicy": "Always"}
    ]
    ops, pod = mutate(admission_review(spec), "v1.30.0")
    assert ops == []
    assert len(pod["spec"]["initContainers"]) == 1


def test_decide_names_the_branch_build_patch_takes() -> None:
    """The metrics' vocabulary: each decision, and a patch exactly when one is due."""
    pod = admission_review(app_spec())["request"]["object"]
    host = copy.deepcopy(pod)
    host["spec"]["hostNetwork"] = True
    opted = admission_review(app_spec(), annotations={"modelroute.io/inject": "false"})
    own = copy.deepcopy(pod)
    own["spec"]["initContainers"] = [{"name": SIDECAR_NAME, "image": "custom:1"}]
    _, injected = mutate(admission_review(app_spec()), "v1.30.0")
    cases = {
        Decision.INJECTED: (pod, ENROLLED),
        Decision.NOT_ENROLLED: (pod, {"modelroute.io/enabled": "false"}),
        Decision.HOST_NETWORK: (host, ENROLLED),
        Decision.OPTED_OUT: (opted["request"]["object"], ENROLLED),
        Decision.OWN_SIDECAR: (own, ENROLLED),
        Decision.REINVOKED: (injected, ENROLLED),
    }
    for expected, (obj, labels) in cases.items():
        assert decide(obj, labels) is expected
        ops = build_patch(
            obj,
            namespace_labels=labels,
            namespace_annotations={},
            server_version=(1, 30),
            settings=SETTINGS,
        )
        assert bool(ops) == (expected is Decision.INJECTED), expected


def test_native_sidecar_goes_first_among_init_containers() -> None:
    spec = app_spec()
    spec["initContainers"] = [{"name": "migrate", "image": "busybox:1.36"}]
    _, pod = mutate(admission_review(spec), "v1.30.0")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == [SIDECAR_NAME, "migrate"]


def test_pod_without_volumes() -> None:
    spec = app_spec()
    del spec["volumes"]
    _, pod = mutate(admission_review(spec), "v1.30.0")
    assert {v["name"] for v in pod["spec"]["volumes"]} >= {"modelroute-table"}


def test_version_parsing() -> None:
    assert parse_version({"major": "1", "minor": "29+", "gitVersion": "v1.29.3-eks"}) == (1, 29)
    assert parse_version("v1.28.15") == (1, 28)
    with pytest.raises(ValueError, match="unparseable"):
        parse_version("latest")


def test_settings_from_chart_env() -> None:
    s = settings_from_env(
        {
            "MODELROUTE_SIDECAR_IMAGE": "registry.local/modelroute:1.2.3",
            "MODELROUTE_SIDECAR_ADMIN_PORT": "16401",
            "MODELROUTE_SIDECAR_REQUESTS": '{"cpu": "100m", "memory": "128Mi"}',
            "MODELROUTE_SIDECAR_SECRETS": "a, b",
        }
    )
    assert s.image == "registry.local/modelroute:1.2.3"
    assert s.admin_port == 16401
    assert s.requests == {"cpu": "100m", "memory": "128Mi"}
    assert tuple(s.secrets) == ("a", "b")


def _expand(value: str, env: dict[str, str]) -> str:
    """kubelet's $(VAR) expansion from the variables defined earlier in the container's list."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def sidecar_environment(settings: InjectionSettings) -> dict[str, str]:
    """The injected sidecar's environment as its process sees it (downward API filled in)."""
    _, pod = mutate_with(admission_review(app_spec()), settings)
    [sidecar] = pod["spec"]["initContainers"]
    env: dict[str, str] = {}
    for var in sidecar["env"]:
        if "valueFrom" in var:
            field = var["valueFrom"].get("fieldRef", {}).get("fieldPath")
            env[var["name"]] = {"metadata.namespace": "llm-apps", "metadata.name": "chat-0"}.get(
                field, "?"
            )
        else:
            env[var["name"]] = _expand(var["value"], env)
    return env


def mutate_with(
    review: dict[str, Any], settings: InjectionSettings
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pod = review["request"]["object"]
    ops = build_patch(
        pod,
        namespace_labels=ENROLLED,
        namespace_annotations={},
        server_version=(1, 30),
        settings=settings,
    )
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    kubernetes_validate.validate(patched, "1.30.0", strict=True)
    return ops, patched


def test_no_tracing_endpoint_writes_no_otel_variable() -> None:
    env = sidecar_environment(settings_from_env({}))
    assert not [k for k in env if k.startswith("OTEL_") or "TRACES" in k]
    assert not tracing_configured(env)  # the sidecar: tracing off, the SDK never imported


def test_chart_tracing_values_become_the_sidecars_otel_environment() -> None:
    """The operator env the chart renders from ``sidecar.tracing`` → what the sidecar reads."""
    settings = settings_from_env(
        {
            "MODELROUTE_SIDECAR_OTEL_ENDPOINT": "http://otel-collector.observability.svc:4318",
            "MODELROUTE_SIDECAR_OTEL_PROTOCOL": "http/protobuf",
            "MODELROUTE_SIDECAR_TRACES_TAIL_RATIO": "0.02",
            "MODELROUTE_SIDECAR_OTEL_SERVICE_NAME": "modelroute-sidecar",
            "MODELROUTE_SIDECAR_OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
        }
    )
    env = sidecar_environment(settings)
    assert {k: v for k, v in env.items() if k.startswith("OTEL_") or "TRACES" in k} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability.svc:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "modelroute-sidecar",
        # the pod's identity first (expanded by kubelet), then the chart's own attributes
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=llm-apps,k8s.pod.name=chat-0,"
        "deployment.environment=prod",
        "MODELROUTE_TRACES_TAIL_RATIO": "0.02",
    }
    # and the sidecar's own readers take it: tracing on, tail decisions at 2 %
    assert tracing_configured(env)
    assert tail_ratio_from_env(env) == 0.02


def test_collector_credentials_reach_the_sidecar_only_through_a_secret_ref() -> None:
    """``sidecar.tracing.headersSecret``: OTEL_EXPORTER_OTLP_HEADERS by reference, never a value.

    Optional, so a namespace that lacks the Secret still starts its pods (the app
    must not stop because a collector's key is missing).
    """
    base = {"MODELROUTE_SIDECAR_OTEL_ENDPOINT": "https://c:4318"}
    _, pod = mutate_with(admission_review(app_spec()), settings_from_env(base))
    [sidecar] = pod["spec"]["initContainers"]
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in {v["name"] for v in sidecar["env"]}
    secret = {**base, "MODELROUTE_SIDECAR_OTEL_HEADERS_SECRET": "otel-auth"}
    _, pod = mutate_with(admission_review(app_spec()), settings_from_env(secret))
    [sidecar] = pod["spec"]["initContainers"]
    [var] = [v for v in sidecar["env"] if v["name"] == "OTEL_EXPORTER_OTLP_HEADERS"]
    assert var == {
        "name": "OTEL_EXPORTER_OTLP_HEADERS",
        "valueFrom": {"secretKeyRef": {"name": "otel-auth", "key": "headers", "optional": True}},
    }
    keyed = {**secret, "MODELROUTE_SIDECAR_OTEL_HEADERS_KEY": "otlp-headers"}
    _, pod = mutate_with(admission_review(app_spec()), settings_from_env(keyed))
    [sidecar] = pod["spec"]["initContainers"]
    [var] = [v for v in sidecar["env"] if v["name"] == "OTEL_EXPORTER_OTLP_HEADERS"]
    assert var["valueFrom"]["secretKeyRef"]["key"] == "otlp-headers"
    # no endpoint, no tracing: a headers Secret alone writes nothing
    _, pod = mutate_with(
        admission_review(app_spec()),
        settings_from_env({"MODELROUTE_SIDECAR_OTEL_HEADERS_SECRET": "otel-auth"}),
    )
    [sidecar] = pod["spec"]["initContainers"]
    assert not [v for v in sidecar["env"] if v["name"].startswith("OTEL_")]


def test_head_sampler_is_written_only_without_a_tail_ratio() -> None:
    head = {
        "MODELROUTE_SIDECAR_OTEL_ENDPOINT": "http://c:4318",
        "MODELROUTE_SIDECAR_OTEL_SAMPLER": "parentbased_traceidratio",
        "MODELROUTE_SIDECAR_OTEL_SAMPLER_ARG": "0.01",
    }
    env = sidecar_environment(settings_from_env(head))
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.01"
    assert tail_ratio_from_env(env) is None
    # the tail ratio replaces the sampler (the sidecar would only log that it ignores it)
    env = sidecar_environment(
        settings_from_env({**head, "MODELROUTE_SIDECAR_TRACES_TAIL_RATIO": "0.01"})
    )
    assert "OTEL_TRACES_SAMPLER" not in env and "OTEL_TRACES_SAMPLER_ARG" not in env
    assert tail_ratio_from_env(env) == 0.01


def test_handler_is_registered_at_the_chart_path() -> None:
    """kopf serves a webhook at /<handler id>; the chart points at /inject-sidecar."""
    import kopf
    from modelroute.operator import mutation

    registry = kopf.get_default_registry()
    ids = {h.id for h in registry._webhooks.get_all_handlers()}
    assert "inject-sidecar" in ids
    assert mutation.inject_sidecar.__name__ == "inject_sidecar"
