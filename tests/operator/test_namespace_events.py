"""Namespace enrolment through the real operator (kopf via KopfRunner) against kmock.

What a cluster admin relies on: labelling a namespace writes its table, the sidecar RBAC
and the operator's own pod-list RoleBinding (the only place it may list pods, issue 13
item 3), removing the label removes them all, a transient API error while handling a
label change is repaired by the resync, and the operator never writes to a Namespace
object (it holds no patch/update right on namespaces; kube-system is not its to touch).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from kopf.testing import KopfRunner
from modelroute.operator import handlers

from .helpers import POD_READER_ENV, Api, eventually

ARGS = ["run", "--standalone", "-A", "--verbose", "-m", "modelroute.operator.handlers"]
CM = "/api/v1/namespaces/{ns}/configmaps/modelroute-table"
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/{plural}/modelroute-sidecar"
PODS = "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/modelroute-operator-pods"
ENROLLED = {"metadata": {"labels": {"modelroute.io/enabled": "true"}}}
UNENROLLED = {"metadata": {"labels": {"modelroute.io/enabled": None}}}


def _namespace_writes(cluster: Any) -> list[str]:
    """Writes the operator sent to Namespace objects (kmock's private request log).

    The operator authenticates with the kubeconfig's token; the test's own client
    (which does label the namespaces) sends none, so its requests are not counted.
    """
    out = []
    for r in cluster._requests:
        method = str(r.method).upper().rsplit(".", 1)[-1]
        parts = r.url.path.strip("/").split("/")
        if (
            method in ("PATCH", "PUT", "POST", "DELETE")
            and parts[:3] == ["api", "v1", "namespaces"]
            and (len(parts) == 4 or (len(parts) == 5 and parts[4] in ("status", "finalize")))
            and r.headers.get("Authorization") == "Bearer test-token"
        ):
            out.append(f"{method} {r.url.path}")
    return out


async def _ours(api: Api, ns: str) -> dict[str, bool]:
    return {
        "table": await api.get(CM.format(ns=ns)) is not None,
        "role": await api.get(RBAC.format(ns=ns, plural="roles")) is not None,
        "binding": await api.get(RBAC.format(ns=ns, plural="rolebindings")) is not None,
        "pods": await api.get(PODS.format(ns=ns)) is not None,
    }


ALL = {"table": True, "role": True, "binding": True, "pods": True}
NONE = {"table": False, "role": False, "binding": False, "pods": False}


async def test_label_enrols_and_unenrols_without_writing_namespaces(cluster: Any) -> None:
    async with aiohttp.ClientSession(str(cluster.url)) as s:
        api = Api(s)
        await api.namespace("kube-system", enrolled=False)
        await api.namespace("team-a", enrolled=False)
        await api.namespace("team-b")  # enrolled before the operator starts
        with KopfRunner(ARGS, timeout=20) as runner:
            await eventually(lambda: _is(api, "team-b", ALL), what="team-b table + RBAC")

            # gaining the label writes the table and the sidecar RBAC
            await api.patch("/api/v1/namespaces/team-a", ENROLLED)
            await eventually(lambda: _is(api, "team-a", ALL), what="team-a table + RBAC")

            # losing it removes all three; the other namespace keeps its own
            await api.patch("/api/v1/namespaces/team-a", UNENROLLED)
            await eventually(lambda: _is(api, "team-a", NONE), what="team-a cleaned up")
            assert await _ours(api, "team-b") == ALL
            assert await _ours(api, "kube-system") == NONE
            await asyncio.sleep(0.5)  # let any late handler write show up in the log
    assert _namespace_writes(cluster) == []
    assert runner.exception is None  # last: mypy types it as never None


async def test_the_operator_binds_the_pod_reader_role_to_itself_in_enrolled_namespaces_only(
    cluster: Any,
) -> None:
    """The chart grants no cluster-wide pods right: the operator's own RoleBinding in each
    enrolled namespace is what lets the rollout gate list pods there, and nowhere else."""
    async with aiohttp.ClientSession(str(cluster.url)) as s:
        api = Api(s)
        await api.namespace("kube-system", enrolled=False)
        await api.namespace("team-a")
        with KopfRunner(ARGS, timeout=20) as runner:
            binding = await eventually(lambda: api.get(PODS.format(ns="team-a")), what="binding")
            assert binding["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": POD_READER_ENV["MODELROUTE_POD_READER_CLUSTERROLE"],
            }
            assert binding["subjects"] == [
                {
                    "kind": "ServiceAccount",
                    "name": POD_READER_ENV["MODELROUTE_SERVICE_ACCOUNT"],
                    "namespace": POD_READER_ENV["POD_NAMESPACE"],
                }
            ]
            assert binding["metadata"]["labels"] == {
                "app.kubernetes.io/managed-by": "modelroute-operator"
            }
            assert await api.get(PODS.format(ns="kube-system")) is None
    assert runner.exception is None  # last: mypy types it as never None


async def test_a_failed_label_removal_is_repaired_by_the_resync(
    cluster: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(handlers.OPTIONS, "resync_seconds", 0.5)
    async with aiohttp.ClientSession(str(cluster.url)) as s:
        api = Api(s)
        await api.namespace("team-a")
        with KopfRunner(ARGS, timeout=20) as runner:
            await eventually(lambda: _is(api, "team-a", ALL), what="team-a table + RBAC")
            # The API answers the event handler's first delete with a 500, so the handler
            # stops half-way (kmock still deletes the binding; the Role and the table stay).
            # kopf never retries an event handler: only the resync can finish the job.
            binding = RBAC.format(ns="team-a", plural="rolebindings")
            cluster["delete", binding][:1] << 500
            await api.patch("/api/v1/namespaces/team-a", UNENROLLED)
            await eventually(lambda: _is(api, "team-a", NONE), within=8, what="resync cleanup")
    failed = [r for r in caplog.records if "namespace team-a: 500" in r.getMessage()]
    assert failed, "the injected error reached the event handler"
    assert _namespace_writes(cluster) == []
    assert runner.exception is None  # last: mypy types it as never None


async def test_a_hand_edited_sidecar_role_and_binding_are_put_back_by_the_resync(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sidecars must keep reading their table and the operator its pods: an edited Role or
    RoleBinding is repaired."""
    monkeypatch.setattr(handlers.OPTIONS, "resync_seconds", 0.5)
    role_path = RBAC.format(ns="team-a", plural="roles")
    binding_path = RBAC.format(ns="team-a", plural="rolebindings")
    pods_path = PODS.format(ns="team-a")
    async with aiohttp.ClientSession(str(cluster.url)) as s:
        api = Api(s)
        await api.namespace("team-a")
        with KopfRunner(ARGS, timeout=20) as runner:
            await eventually(lambda: _is(api, "team-a", ALL), what="team-a table + RBAC")
            role, binding = await api.get(role_path), await api.get(binding_path)
            assert role is not None
            assert binding is not None
            pods = await api.get(pods_path)
            assert pods is not None
            await api.patch(role_path, {"rules": []})
            await api.patch(binding_path, {"subjects": []})
            await api.patch(pods_path, {"subjects": []})

            async def repaired() -> bool:
                now_role, now_binding = await api.get(role_path), await api.get(binding_path)
                now_pods = await api.get(pods_path)
                rules_back = (now_role or {}).get("rules") == role["rules"]
                subjects_back = (now_binding or {}).get("subjects") == binding["subjects"]
                pods_back = (now_pods or {}).get("subjects") == pods["subjects"]
                return bool(rules_back and subjects_back and pods_back)

            await eventually(repaired, within=8, what="Role and RoleBindings repaired")

            # roleRef can't be patched on a real server: another role is replaced, not patched
            await api.patch(pods_path, {"roleRef": {**pods["roleRef"], "name": "cluster-admin"}})

            async def replaced() -> bool:
                now = await api.get(pods_path)
                return bool(now and now["roleRef"] == pods["roleRef"])

            await eventually(replaced, within=8, what="the pod-list RoleBinding replaced")
    assert not [
        r
        for r in cluster._requests
        if str(r.method).upper().endswith("PATCH")
        and r.url.path == pods_path
        and r.headers.get("Authorization") == "Bearer test-token"
        and "roleRef" in (r.data or {})
    ], "the operator patched roleRef"
    assert runner.exception is None  # last: mypy types it as never None


async def _is(api: Api, ns: str, want: dict[str, bool]) -> bool:
    return await _ours(api, ns) == want


async def test_the_resync_leaves_a_hand_made_namesake_alone(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `modelroute-table` ConfigMap someone made by hand (e.g. for a sidecar run with
    --kube outside any enrolled namespace) is not ours: the resync must not delete it."""
    monkeypatch.setattr(handlers.OPTIONS, "resync_seconds", 0.3)
    async with aiohttp.ClientSession(str(cluster.url)) as s:
        api = Api(s)
        await api.namespace("team-a")
        await api.namespace("lab", enrolled=False)
        handmade = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "modelroute-table", "namespace": "lab"},
            "data": {"table.json": "{}"},
        }
        await api.post("/api/v1/namespaces/lab/configmaps", handmade)
        with KopfRunner(ARGS, timeout=20) as runner:
            await eventually(lambda: _is(api, "team-a", ALL), what="team-a table + RBAC")
            await asyncio.sleep(1.5)  # several resync periods
            assert await api.get(CM.format(ns="lab")) is not None
    assert runner.exception is None  # last: mypy types it as never None
