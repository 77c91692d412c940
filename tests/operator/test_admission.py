"""Admission through the operator as the chart runs it: ``modelroute operator --webhook-*``.

The operator is started as its own process with the chart's flags (HTTPS with a
certificate and key on disk, here a throw-away self-signed pair for 127.0.0.1),
talking to kmock as its API server.  AdmissionReview v1 documents are POSTed to
the paths the chart's webhook configurations name, the way kube-apiserver
does, and the response is what ``kubectl apply`` would turn into its error:
``admission webhook "validate-modelroute.modelroute.io" denied the request: <message>``.

This exercises kopf's whole admission path (webhook server, resource discovery,
handler selection by path, ``AdmissionError`` → ``status``) plus the operator's
own start-up (``memo.service`` with a live API client) and the namespace index
the sidecar injector reads, filled by kopf's watch of kmock's Namespaces.

The last tests drive the same validating handler through kopf's
``serve_admission_request`` in-process, against a stub API server that fails,
to pin down what a user sees when references can't be checked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import kopf
import pytest
from aiohttp import web
from kopf._cogs.configs.configuration import OperatorSettings
from kopf._cogs.structs import references
from kopf._cogs.structs.ephemera import Memo
from kopf._core.engines import admission, indexing
from kopf._core.reactor.inventory import ResourceMemories
from modelroute.operator import handlers  # noqa: F401  (registers the validating webhooks)
from modelroute.operator.kube import KubeApi
from modelroute.operator.service import Service
from modelroute.proxy.kube_source import KubeConfig

from ..certs import self_signed
from .helpers import Api, G, provider, route

POLICY: dict[str, Any] = {
    "apiVersion": "modelroute.io/v1alpha1",
    "kind": "FailoverPolicy",
    "metadata": {"name": "regions"},
    "spec": {"regionPreference": ["eu-west", "us-east"]},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def review(
    obj: dict[str, Any],
    resource: str,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    uid: str = "b3a4c0de-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """An AdmissionReview v1 request as kube-apiserver sends it."""
    group, _, version = obj["apiVersion"].rpartition("/")
    gvk = {"group": group, "version": version, "kind": obj["kind"]}
    gvr = {"group": group, "version": version, "resource": resource}
    request: dict[str, Any] = {
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    ns = obj["metadata"].get("namespace")
    if ns:
        request["namespace"] = ns
    if obj["metadata"].get("name"):
        request["name"] = obj["metadata"]["name"]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@dataclass
class Webhooks:
    """kube-apiserver's side of the webhook: POST a review, read the response."""

    session: aiohttp.ClientSession
    url: str
    log: Path
    readiness: str = ""  # HOST:PORT of /readyz and the operator's /metrics

    def tail(self) -> str:
        """The operator's last log lines, for a failure message."""
        return self.log.read_text(errors="replace")[-4000:]

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(f"{self.url}{path}", json=body) as r:
            assert r.status == 200, await r.text()
            doc: dict[str, Any] = await r.json()
        assert doc["apiVersion"] == "admission.k8s.io/v1"
        assert doc["kind"] == "AdmissionReview"
        assert doc["response"]["uid"] == body["request"]["uid"]
        response: dict[str, Any] = doc["response"]
        return response

    async def allowed(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.post(path, body)
        assert response["allowed"] is True, response.get("status")
        assert "status" not in response
        return response

    async def denied(self, path: str, body: dict[str, Any]) -> str:
        response = await self.post(path, body)
        assert response["allowed"] is False, response
        assert response["status"]["code"] == 422  # an invalid object, not a webhook failure
        message: str = response["status"]["message"]
        return message


async def _seed(cluster: Any) -> None:
    """What the chart and a user leave in the cluster before the operator starts."""
    # The chart ships kopf's peering CRD (crds/kopf-peering.yaml) and the ClusterKopfPeering
    # object the replicas meet in (templates/kopfpeering.yaml); it runs without --standalone.
    cluster.resources["kopf.dev/v1/clusterkopfpeerings"] = cluster.ResourceInfo(
        kind="ClusterKopfPeering",
        namespaced=False,
        verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
    )
    async with aiohttp.ClientSession(str(cluster.url)) as s:
        api = Api(s)
        await api.post(
            "/apis/kopf.dev/v1/clusterkopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
             "metadata": {"name": "modelroute"}},
        )  # fmt: skip
        await api.namespace("team-a")
        await api.namespace("plain", enrolled=False)
        await api.patch(
            "/api/v1/namespaces/team-a",
            {"metadata": {"annotations": {"modelroute.io/secrets": "gw"}}},
        )
        await api.post(f"{G}/namespaces/team-a/modelproviders", provider("team-a"))
        await api.post(f"{G}/namespaces/team-a/modelroutes", route("team-a", "general"))


@contextlib.asynccontextmanager
async def run_operator(tmp_path: Path, *flags: str) -> AsyncIterator[Webhooks]:
    """``modelroute operator`` with the chart's webhook flags as its own process; stopped after."""
    cert, key = self_signed(tmp_path)
    port, liveness, readiness = _free_port(), _free_port(), _free_port()
    log_path = tmp_path / "operator.log"
    args = [
        str(Path(sys.executable).parent / "modelroute"),
        "operator", "--verbose", "--priority", "100", *flags,
        "--liveness", f"http://127.0.0.1:{liveness}/healthz",
        "--readiness", f"127.0.0.1:{readiness}",  # never the fixed default port: suites run at once
        "--webhook-listen", f"127.0.0.1:{port}",
        "--webhook-cert", str(cert), "--webhook-key", str(key),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))  # noqa: ASYNC220
        tls = ssl.create_default_context(cafile=str(cert))  # checks the cert and its IP SAN
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls), timeout=aiohttp.ClientTimeout(total=10)
            ) as session:
                hooks = Webhooks(
                    session, f"https://127.0.0.1:{port}", log_path, f"127.0.0.1:{readiness}"
                )
                # kopf opens the port only after start-up and resource discovery.
                deadline = time.monotonic() + 20
                probe = review(route("team-a", "general"), "modelroutes")
                while True:
                    assert proc.poll() is None, hooks.tail()
                    try:
                        await hooks.allowed("/validate-modelroute", probe)
                        break
                    except aiohttp.ClientConnectionError:
                        assert time.monotonic() < deadline, f"no webhook server:\n{hooks.tail()}"
                        await asyncio.sleep(0.1)
                yield hooks
        finally:
            if proc.poll() is None:
                # kopf's graceful stop, as kubelet would.  In peering mode kopf then waits
                # ~10 s on its peering keep-alive task; these tests are about admission,
                # so after a short grace period the process is killed.
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELROUTE_KUBE_VERSION", "v1.30.2")  # helm's .Capabilities.KubeVersion
    for var in ("MODELROUTE_SIDECAR_SECRETS", "MODELROUTE_SIDECAR_PROXY_PORT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
async def operator(cluster: Any, tmp_path: Path, env: None) -> AsyncIterator[Webhooks]:
    """The operator as the chart runs it (peering, no --standalone), against kmock."""
    await _seed(cluster)
    async with run_operator(tmp_path) as hooks:
        yield hooks


async def test_modelroute_admission(operator: Webhooks) -> None:
    hook = "/validate-modelroute"
    good = route("team-a", "chat")
    await operator.allowed(hook, review(good, "modelroutes"))

    # issue 5: a typo'd provider is refused at apply, with the field and the fix.
    msg = await operator.denied(hook, review(route("team-a", "typo", "gatewey"), "modelroutes"))
    assert "ModelRoute team-a/typo" in msg
    assert "spec.targets[0].provider" in msg
    assert "no ModelProvider named 'gatewey'" in msg
    # issue 13: the webhook port answers anyone, so it names no provider of the namespace
    # (the route's status, readable by those who may read the route, keeps the suggestion)
    assert "'gateway'" not in msg and "did you mean" not in msg

    # an unknown model: the suggestion comes from the provider's catalogue.
    msg = await operator.denied(
        hook, review(route("team-a", "m", model="qwen3-8bb"), "modelroutes")
    )
    assert "spec.targets[0].model" in msg
    assert "did you mean 'qwen3-8b'" in msg

    # a bad field: the schema error names the field.
    bad = copy.deepcopy(good)
    bad["spec"]["targets"][0]["weight"] = -1
    msg = await operator.denied(hook, review(bad, "modelroutes"))
    assert "spec.targets[0].weight" in msg
    assert "greater than or equal to 0" in msg

    # an edit that breaks a route that is already stored is refused the same way.
    broken = route("team-a", "general", "gatewey", generation=2)
    msg = await operator.denied(
        hook,
        review(broken, "modelroutes", operation="UPDATE", old=route("team-a", "general")),
    )
    assert "no ModelProvider named 'gatewey'" in msg

    # references are checked in the route's own namespace: "plain" has no provider "gateway".
    msg = await operator.denied(hook, review(route("plain", "chat"), "modelroutes"))
    assert "no ModelProvider named 'gateway' in namespace 'plain'" in msg


async def test_modelprovider_admission(operator: Webhooks) -> None:
    hook = "/validate-modelprovider"
    await operator.allowed(hook, review(provider("team-a", "backup"), "modelproviders"))

    bad = provider("team-a", "broken")
    bad["spec"]["endpoints"][0] = {"region": "US East", "baseURL": "ftp://gateway.internal"}
    msg = await operator.denied(hook, review(bad, "modelproviders"))
    assert "ModelProvider team-a/broken" in msg
    assert "spec.endpoints[0].region" in msg
    assert "spec.endpoints[0].baseURL" in msg

    no_endpoints = provider("team-a", "empty")
    no_endpoints["spec"]["endpoints"] = []
    msg = await operator.denied(hook, review(no_endpoints, "modelproviders"))
    assert "spec.endpoints" in msg


async def test_failoverpolicy_admission(operator: Webhooks) -> None:
    hook = "/validate-failoverpolicy"
    await operator.allowed(hook, review(POLICY, "failoverpolicies"))

    twice = copy.deepcopy(POLICY)
    twice["spec"]["regionPreference"] = ["eu-west", "eu-west"]
    msg = await operator.denied(hook, review(twice, "failoverpolicies"))
    assert "FailoverPolicy regions" in msg
    assert "a region is listed twice" in msg

    gate = copy.deepcopy(POLICY)
    gate["spec"]["rollout"] = {"maxErrorRate": 2}
    msg = await operator.denied(hook, review(gate, "failoverpolicies"))
    assert "spec.rollout.maxErrorRate" in msg
    assert "less than or equal to 1" in msg


def _pod(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "chat-", "namespace": ns, "labels": {"app": "chat"}},
        "spec": {"containers": [{"name": "app", "image": "python:3.11-slim"}]},
    }


async def _injected(hooks: Webhooks, request: dict[str, Any]) -> dict[str, Any]:
    """The first response with a patch: kopf fills the index from its watch after start-up."""
    deadline = time.monotonic() + 10
    while "patch" not in (response := await hooks.allowed("/inject-sidecar", request)):
        assert time.monotonic() < deadline, f"no patch for an enrolled pod:\n{hooks.tail()}"
        await asyncio.sleep(0.1)
    return response


async def test_sidecar_injection_through_the_running_operator(operator: Webhooks) -> None:
    """The index the injector reads is the one kopf fills from its Namespace watch."""
    request = review(_pod("team-a"), "pods")
    response = await _injected(operator, request)
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    pod = jsonpatch.apply_patch(copy.deepcopy(request["request"]["object"]), ops)
    [sidecar] = pod["spec"]["initContainers"]  # 1.30: a native sidecar
    assert sidecar["name"] == "modelroute-proxy"
    assert sidecar["restartPolicy"] == "Always"
    assert {m["mountPath"] for m in sidecar["volumeMounts"]} >= {
        "/var/run/secrets/modelroute/gw/"  # the namespace's modelroute.io/secrets annotation
    }
    [app] = pod["spec"]["containers"]
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:15400/v1"} in app["env"]
    assert pod["metadata"]["annotations"]["modelroute.io/injected"] == "true"

    again = await operator.allowed("/inject-sidecar", review(pod, "pods"))
    assert "patch" not in again  # idempotent

    plain = await operator.allowed("/inject-sidecar", review(_pod("plain"), "pods"))
    assert "patch" not in plain  # namespace not enrolled


async def test_standalone_operator_watches(cluster: Any, tmp_path: Path, env: None) -> None:
    await _seed(cluster)
    async with run_operator(tmp_path, "--standalone") as hooks:
        await _injected(hooks, review(_pod("team-a"), "pods"))


# ---- when the API server can't answer: kopf's admission engine in-process ----------------
#
# The references of a ModelRoute are checked against the API.  These drive the same handler
# through ``serve_admission_request`` (what kopf's webhook server calls per POST) with the
# operator's registry and a ``Service`` on a stub API that fails in the ways a cluster does.

CHART_WEBHOOK_TIMEOUT = 5.0  # charts/modelroute/values.yaml webhook.timeoutSeconds


@contextlib.asynccontextmanager
async def stub_api(mode: str) -> AsyncIterator[str]:
    """An API server on 127.0.0.1 that answers 500 ("error") or not at all ("hang")."""

    async def handle(request: web.Request) -> web.Response:
        if mode == "hang":
            await asyncio.sleep(30)  # cancelled at cleanup; the client gives up long before
        return web.json_response({"kind": "Status", "message": "etcd down"}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _admit_in_process(server: str) -> tuple[dict[str, Any], float]:
    registry = kopf.get_default_registry()
    insights = references.Insights()
    insights.webhook_resources.add(
        references.Resource(
            group="modelroute.io",
            version="v1alpha1",
            plural="modelroutes",
            kind="ModelRoute",
            namespaced=True,
            verbs=["create", "update"],
        )
    )
    indexers = indexing.OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())
    async with KubeApi(KubeConfig(server=server)) as api:
        memo = Memo()
        memo.service = Service(api)
        started = time.monotonic()
        response = await admission.serve_admission_request(
            review(route("team-a", "chat"), "modelroutes"),
            webhook="validate-modelroute",
            settings=OperatorSettings(),
            memories=ResourceMemories(),
            memobase=memo,
            registry=registry,
            insights=insights,
            indices=indexers.indices,
        )
        elapsed = time.monotonic() - started
    body: dict[str, Any] = dict(response["response"])
    return body, elapsed


async def test_api_error_refuses_with_503_and_says_why() -> None:
    async with stub_api("error") as server:
        response, _ = await _admit_in_process(server)
    assert response["allowed"] is False
    assert response["status"]["code"] == 503
    assert response["status"]["message"].startswith("could not check references: 500")


async def test_unreachable_api_refuses_with_503_and_says_why() -> None:
    server = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    response, _ = await _admit_in_process(server)
    assert response["allowed"] is False
    assert response["status"]["code"] == 503, response["status"]
    assert response["status"]["message"].startswith("could not check references")


async def test_slow_api_is_answered_within_the_webhook_timeout() -> None:
    async with stub_api("hang") as server:
        response, elapsed = await _admit_in_process(server)
    assert response["allowed"] is False
    assert response["status"]["code"] == 503
    assert elapsed < CHART_WEBHOOK_TIMEOUT, f"answered after {elapsed:.1f}s"
