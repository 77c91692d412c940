"""A replica that isn't the kopf peering leader still injects correctly (issue 13, item 2).

With peering, the standby replica pauses its kopf watches, the namespace index
included, but its webhook server keeps answering: the API server spreads pod
reviews over both replicas.  The injector therefore reads namespaces from its
own view (``operator/namespaces.py``: a list+watch that peering does not pause)
and, when that view can't know (not synced yet, or the namespace isn't in it),
from the API; when the API doesn't answer either it refuses under
``failurePolicy: Fail`` and admits with a warning under ``Ignore``, as the API
server itself would.  Readiness (``/readyz``) passes only once the view is synced,
so a replica that can't know isn't sent reviews in the first place.

kopf's admission engine is driven as its webhook server drives it, with an
empty kopf index: what a paused replica has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kopf._cogs.structs.ephemera import Memo
from modelroute.operator.kube import KubeApi
from modelroute.operator.metrics import OperatorMetrics
from modelroute.operator.namespaces import NamespaceView, readiness_app
from modelroute.proxy.kube_source import KubeConfig

from ..injection.test_admission_kopf import Webhook, admitted, review
from .helpers import Api, eventually

SECRETS = {"modelroute.io/secrets": "gateway-credentials"}


@pytest.fixture
async def api(cluster: Any) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=str(cluster.url).rstrip("/")) as s:
        yield Api(s)


@pytest.fixture
async def kube(cluster: Any) -> AsyncIterator[KubeApi]:
    async with KubeApi(KubeConfig.resolve()) as k:
        yield k


@contextlib.asynccontextmanager
async def running(view: NamespaceView) -> AsyncIterator[NamespaceView]:
    task = asyncio.create_task(view.run())
    try:
        yield view
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def standby_webhook(view: NamespaceView, monkeypatch: pytest.MonkeyPatch) -> Webhook:
    """kopf's admission path with nothing in kopf's own index (a paused replica's)."""
    monkeypatch.setenv("MODELROUTE_KUBE_VERSION", "v1.30.4")
    hook = Webhook()
    memo = Memo()
    memo.namespaces = view
    memo.metrics = OperatorMetrics()
    hook.memobase = memo
    return hook


async def _enrol(api: Api, name: str, **annotations: str) -> None:
    await api.post(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {"modelroute.io/enabled": "true"},
                "annotations": annotations,
            },
        },
    )


def _sidecar_mounts(ops: list[dict[str, Any]]) -> set[str]:
    for op in ops:
        value = op.get("value")
        containers = value if isinstance(value, list) else [value]
        for c in containers:
            if isinstance(c, dict) and c.get("name") == "modelroute-proxy":
                return {m["mountPath"] for m in c["volumeMounts"]}
    return set()


async def test_standby_replica_injects_a_namespace_enrolled_after_it_paused(
    api: Api, kube: KubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(NamespaceView(kube)) as view:
        await eventually(lambda: asyncio.sleep(0, view.synced), what="view synced")
        await _enrol(api, "late-apps", **SECRETS)  # enrolled while this replica is paused
        hook = standby_webhook(view, monkeypatch)
        request = review("late-apps")
        ops = admitted(await hook(request), request)
        assert ops, "a pod of an enrolled namespace must get the sidecar from any replica"
        assert "/var/run/secrets/modelroute/gateway-credentials/" in _sidecar_mounts(ops)


async def test_unsynced_view_answers_from_the_api(
    api: Api, kube: KubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _enrol(api, "llm-apps", **SECRETS)
    view = NamespaceView(kube)  # never ran: knows nothing
    hook = standby_webhook(view, monkeypatch)
    request = review("llm-apps")
    assert _sidecar_mounts(admitted(await hook(request), request))


async def test_view_follows_label_changes(api: Api, kube: KubeApi) -> None:
    async with running(NamespaceView(kube)) as view:
        await eventually(lambda: asyncio.sleep(0, view.synced), what="view synced")
        await _enrol(api, "moving")

        async def enrolled() -> bool:
            entry = view.cached("moving")
            return entry is not None and entry[0].get("modelroute.io/enabled") == "true"

        await eventually(enrolled, what="the watch delivering the new namespace")


@pytest.mark.parametrize(("policy", "allowed"), [("Fail", False), ("Ignore", True)])
async def test_a_replica_that_cannot_know_lets_the_failure_policy_decide(
    monkeypatch: pytest.MonkeyPatch, policy: str, allowed: bool
) -> None:
    monkeypatch.setenv("MODELROUTE_INJECTION_FAILURE_POLICY", policy)
    dead = KubeConfig(server="http://127.0.0.1:9", token="x")
    async with KubeApi(dead) as unreachable:
        hook = standby_webhook(NamespaceView(unreachable), monkeypatch)
        request = review("llm-apps")
        body = (await hook(request))["response"]
    assert body["allowed"] is allowed
    assert "patch" not in body
    if allowed:
        assert any("without the modelroute sidecar" in w for w in body.get("warnings", []))
    else:
        assert body["status"]["code"] == 503
        assert "namespace llm-apps" in body["status"]["message"]


async def test_readiness_passes_only_once_the_view_is_synced(kube: KubeApi) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    view = NamespaceView(kube)
    async with TestClient(TestServer(readiness_app(view))) as client:
        assert (await client.get("/readyz")).status == 503
        async with running(view):
            await eventually(lambda: asyncio.sleep(0, view.synced), what="view synced")
            assert (await client.get("/readyz")).status == 200
