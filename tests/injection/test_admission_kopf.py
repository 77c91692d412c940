"""Sidecar injection through kopf's own admission path, not by calling ``build_patch``.

``test_injection.py`` proves the pure patch builder.  These tests prove the glue
a cluster actually talks to: an AdmissionReview v1 dict goes into
``kopf._core.engines.admission.serve_admission_request`` (the function kopf's
webhook server calls for every POST) with the operator's registry, the
injector's namespace view (``operator/namespaces.py``) filled with Namespace
objects as its watch fills it, and the settings the chart renders into the environment.  What comes
back is the AdmissionReview response the API server reads: ``allowed``, and a
base64 ``JSONPatch`` that kopf computed from ``patch.fns``.  That patch is
applied with ``jsonpatch`` and the pod validated against Kubernetes' own Pod
schema for the claimed server version.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import kopf
import kubernetes_validate
import pytest
from kopf._cogs.configs.configuration import OperatorSettings
from kopf._cogs.structs import references
from kopf._cogs.structs.ephemera import Memo
from kopf._core.engines import admission, indexing
from kopf._core.reactor.inventory import ResourceMemories
from modelroute.operator import mutation  # registers the index and the webhook
from modelroute.operator.injection import SIDECAR_NAME
from modelroute.operator.kube import KubeApi
from modelroute.operator.metrics import OperatorMetrics
from modelroute.operator.namespaces import NamespaceView
from modelroute.proxy.kube_source import KubeConfig

from .reviews import pod_create_review

PODS = references.Resource(
    group="", version="v1", plural="pods", kind="Pod", namespaced=True, verbs=["create"]
)
NAMESPACES = references.Resource(
    group="",
    version="v1",
    plural="namespaces",
    kind="Namespace",
    namespaced=False,
    verbs=["list", "watch"],
)

WEBHOOK = "inject-sidecar"  # the handler id, i.e. the path the chart's webhook posts to
BASE_URL = "http://127.0.0.1:15400/v1"


def namespace(name: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/metadata.name": name, **labels},
            "annotations": annotations,
        },
    }


def review(
    ns: str,
    *,
    pod: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview v1 as the API server sends it for a ReplicaSet's pod (no name yet)."""
    if pod is None:
        metadata: dict[str, Any] = {
            "generateName": "chat-app-7d9f8b6c5-",
            "namespace": ns,
            "labels": {"app.kubernetes.io/name": "chat-app", "pod-template-hash": "7d9f8b6c5"},
        }
        if annotations is not None:
            metadata["annotations"] = annotations
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "containers": [
                    {"name": "app", "image": "python:3.11-slim", "command": ["python", "app.py"]},
                    {
                        "name": "worker",
                        "image": "busybox:1.36",
                        "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    },
                ],
                "restartPolicy": "Always",
            },
        }
    return pod_create_review(pod, ns)


class Webhook:
    """kopf's admission engine wired the way ``kopf run -m modelroute.operator.handlers`` wires it."""

    def __init__(self) -> None:
        self.registry = kopf.get_default_registry()
        self.settings = OperatorSettings()
        self.insights = references.Insights()
        self.insights.webhook_resources.add(PODS)
        self.indexers = indexing.OperatorIndexers()
        self.indexers.ensure(self.registry._indexing.get_all_handlers())
        self.memories = ResourceMemories()
        # the injector's namespace view, filled below as its watch would fill it; a
        # namespace it hasn't seen is asked of an API that isn't there (Ignore: admitted)
        self.view = NamespaceView(KubeApi(KubeConfig(server="http://127.0.0.1:9", token="x")))
        self.view.replace([])
        self.memobase = Memo()
        self.memobase.namespaces = self.view
        self.memobase.metrics = OperatorMetrics()

    async def watch_namespace(self, raw: dict[str, Any]) -> None:
        """What the view does for each Namespace its watch delivers."""
        self.view.apply({"type": "ADDED", "object": raw})

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        response = await admission.serve_admission_request(
            request,
            webhook=WEBHOOK,
            settings=self.settings,
            memories=self.memories,
            memobase=self.memobase,
            registry=self.registry,
            insights=self.insights,
            indices=self.indexers.indices,
        )
        # The webhook server sends exactly this as JSON; round-trip to be sure it serialises.
        out: dict[str, Any] = json.loads(json.dumps(response))
        return out


@pytest.fixture
async def webhook(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Webhook]:
    for var in (
        "MODELROUTE_SIDECAR_IMAGE",
        "MODELROUTE_SIDECAR_PULL_POLICY",
        "MODELROUTE_SIDECAR_PROXY_PORT",
        "MODELROUTE_SIDECAR_ADMIN_PORT",
        "MODELROUTE_SIDECAR_REQUESTS",
        "MODELROUTE_SIDECAR_LIMITS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELROUTE_SIDECAR_SECRETS", "platform-key")
    monkeypatch.setenv("MODELROUTE_KUBE_VERSION", "v1.30.4")
    hook = Webhook()
    await hook.watch_namespace(
        namespace(
            "llm-apps",
            {"modelroute.io/enabled": "true"},
            {"modelroute.io/secrets": "gateway-credentials"},
        )
    )
    await hook.watch_namespace(namespace("plain-apps", {"team": "web"}, {}))
    async with hook.view.api:
        yield hook


def admitted(response: dict[str, Any], request: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch of an allowed response ([] when there is none)."""
    assert response["apiVersion"] == "admission.k8s.io/v1"
    assert response["kind"] == "AdmissionReview"
    body = response["response"]
    assert body["uid"] == request["request"]["uid"]
    assert body["allowed"] is True, body.get("status")
    if "patch" not in body:
        assert "patchType" not in body
        return []
    assert body["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(body["patch"]))
    return ops


def apply(request: dict[str, Any], ops: list[dict[str, Any]], version: str) -> dict[str, Any]:
    pod: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(request["request"]["object"]), ops)
    kubernetes_validate.validate(pod, version, strict=True)
    return pod


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def check_injected(pod: dict[str, Any], sidecar: dict[str, Any]) -> None:
    """What every injected pod carries, whichever form the sidecar takes."""
    apps = [c for c in pod["spec"]["containers"] if c["name"] != SIDECAR_NAME]
    assert [c["name"] for c in apps] == ["app", "worker"]
    for c in apps:
        assert env_of(c)["OPENAI_BASE_URL"] == BASE_URL
        assert not any(
            m["mountPath"].startswith("/var/run/secrets/modelroute")
            for m in c.get("volumeMounts", [])
        )  # credentials: sidecar only
    assert env_of(apps[1])["LOG_LEVEL"] == "info"  # existing env kept
    assert pod["metadata"]["annotations"]["modelroute.io/injected"] == "true"
    assert pod["metadata"]["labels"]["modelroute.io/injected"] == "true"
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "chat-app"
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert set(mounts) == {
        "/etc/modelroute/table/",
        "/var/run/secrets/modelroute/platform-key/",  # operator-wide, from the chart's env
        "/var/run/secrets/modelroute/gateway-credentials/",  # from the namespace annotation
    }
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert set(mounts.values()) <= set(volumes)
    assert volumes[mounts["/etc/modelroute/table/"]]["configMap"]["name"] == "modelroute-table"
    assert "--listen" in sidecar["args"]
    assert sidecar["args"][sidecar["args"].index("--listen") + 1] == "127.0.0.1:15400"


async def test_native_sidecar_on_1_30_through_kopf(webhook: Webhook) -> None:
    request = review("llm-apps")
    ops = admitted(await webhook(request), request)
    assert ops, "a pod in an enrolled namespace must come back with a patch"
    pod = apply(request, ops, "1.30.0")
    [sidecar] = pod["spec"]["initContainers"]
    assert sidecar["name"] == SIDECAR_NAME
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: starts first, outlives the app
    check_injected(pod, sidecar)


async def test_regular_container_on_1_28_through_kopf(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELROUTE_KUBE_VERSION", "v1.28.9")  # what helm passes from the cluster
    request = review("llm-apps")
    pod = apply(request, admitted(await webhook(request), request), "1.28.0")
    assert "initContainers" not in pod["spec"]
    sidecar = pod["spec"]["containers"][-1]
    assert sidecar["name"] == SIDECAR_NAME
    assert "restartPolicy" not in sidecar  # 1.28 rejects restartPolicy on a regular container
    check_injected(pod, sidecar)


async def test_chart_settings_reach_the_patch(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's env (rendered from chart values) is read per review, not baked in."""
    monkeypatch.setenv("MODELROUTE_SIDECAR_IMAGE", "registry.example/modelroute:9.9.9")
    monkeypatch.setenv("MODELROUTE_SIDECAR_PROXY_PORT", "18080")
    request = review("llm-apps")
    pod = apply(request, admitted(await webhook(request), request), "1.30.0")
    [sidecar] = pod["spec"]["initContainers"]
    assert sidecar["image"] == "registry.example/modelroute:9.9.9"
    assert {env_of(c)["OPENAI_BASE_URL"] for c in pod["spec"]["containers"]} == {
        "http://127.0.0.1:18080/v1"
    }


async def test_second_review_of_an_injected_pod_adds_nothing(webhook: Webhook) -> None:
    first = review("llm-apps")
    injected = apply(first, admitted(await webhook(first), first), "1.30.0")
    again = review("llm-apps", pod=injected)
    response = await webhook(again)
    assert admitted(response, again) == []
    assert "patch" not in response["response"]


async def test_app_that_sets_its_own_base_url_keeps_it(webhook: Webhook) -> None:
    request = review("llm-apps")
    app = request["request"]["object"]["spec"]["containers"][0]
    app["env"] = [{"name": "OPENAI_BASE_URL", "value": "https://api.internal/v1"}]
    pod = apply(request, admitted(await webhook(request), request), "1.30.0")
    assert env_of(pod["spec"]["containers"][0])["OPENAI_BASE_URL"] == "https://api.internal/v1"
    assert env_of(pod["spec"]["containers"][1])["OPENAI_BASE_URL"] == BASE_URL


@pytest.mark.parametrize(
    ("ns", "annotations"),
    [
        pytest.param("llm-apps", {"modelroute.io/inject": "false"}, id="opted-out"),
        pytest.param("plain-apps", None, id="namespace-not-enrolled"),
        pytest.param("never-seen", None, id="namespace-not-in-index"),
    ],
)
async def test_pods_left_alone(
    webhook: Webhook, ns: str, annotations: dict[str, str] | None
) -> None:
    request = review(ns, annotations=annotations)
    response = await webhook(request)
    assert admitted(response, request) == []


async def test_namespace_losing_its_label_stops_injection(webhook: Webhook) -> None:
    """The index follows the namespace: kopf re-indexes on every watch event."""
    await webhook.watch_namespace(namespace("llm-apps", {"modelroute.io/enabled": "false"}, {}))
    request = review("llm-apps")
    assert admitted(await webhook(request), request) == []


async def test_reinvocation_gives_a_later_added_container_the_base_url(webhook: Webhook) -> None:
    first = review("llm-apps")
    injected = apply(first, admitted(await webhook(first), first), "1.30.0")
    # Another mutating webhook (e.g. a log shipper) appended a container after ours ran.
    injected["spec"]["containers"].append({"name": "shipper", "image": "busybox:1.36"})
    again = review("llm-apps", pod=injected)
    pod = apply(again, admitted(await webhook(again), again), "1.30.0")
    shipper = pod["spec"]["containers"][-1]
    assert env_of(shipper).get("OPENAI_BASE_URL") == BASE_URL
    assert [c["name"] for c in pod["spec"]["initContainers"]] == [SIDECAR_NAME]  # still one


async def test_every_review_is_counted_by_what_the_injector_did(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``modelroute_operator_injections_total{result}``: one increment per review, by branch."""
    metrics: OperatorMetrics = webhook.memobase.metrics
    first = review("llm-apps")
    injected = apply(first, admitted(await webhook(first), first), "1.30.0")
    again = review("llm-apps", pod=injected)
    admitted(await webhook(again), again)
    for ns, pod_annotations in (
        ("llm-apps", {"modelroute.io/inject": "false"}),
        ("plain-apps", None),
    ):
        request = review(ns, annotations=pod_annotations)
        admitted(await webhook(request), request)
    unknown = review("never-seen")  # the view hasn't seen it and the API can't be reached
    admitted(await webhook(unknown), unknown)
    monkeypatch.setenv("MODELROUTE_INJECTION_FAILURE_POLICY", "Fail")
    refused = await webhook(review("never-seen"))
    assert refused["response"]["allowed"] is False
    counts = {
        s.labels["result"]: s.value
        for s in metrics.injections.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert counts == {
        "injected": 1,
        "reinvoked": 1,
        "skipped_opted_out": 1,
        "skipped_not_enrolled": 1,
        "skipped_host_network": 0,
        "skipped_own_sidecar": 0,
        "admitted_unchecked": 1,
        "refused": 1,
    }


def test_the_handler_under_test_is_the_operators() -> None:
    """Guard: the webhook these tests drive is the one ``mutation`` registers at /inject-sidecar."""
    fns = {h.id: h.fn for h in kopf.get_default_registry()._webhooks.get_all_handlers()}
    assert fns.get(WEBHOOK) is mutation.inject_sidecar
