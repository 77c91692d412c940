"""FailoverPolicy rollout through the real operator: batches in order, rollback on regression.

Each namespace gets a fake sidecar: a real aiohttp server on 127.0.0.1 that follows its
namespace's table through :class:`KubeTableSource` (the sidecar's own ``--kube`` code) and
answers ``/status`` with the hash it serves.  The sidecar of ``ns-3`` (batch 2) turns
unhealthy as soon as it serves a table carrying the failover block: the injected regression.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kopf.testing import KopfRunner
from modelroute.proxy.kube_source import KubeTableSource
from modelroute.proxy.table import CompiledTable
from modelroute.proxy.tablestore import TableStore

from .helpers import Api, G, eventually, provider, route

ARGS = ["run", "--standalone", "-A", "--verbose", "-m", "modelroute.operator.handlers"]
NAMESPACES = [f"ns-{i}" for i in range(1, 6)]
BROKEN = "ns-3"


@contextlib.asynccontextmanager
async def fake_sidecar(ns: str, kubeconfig: Path) -> AsyncIterator[int]:
    store = TableStore()
    source = KubeTableSource(store, namespace=ns, kubeconfig=str(kubeconfig))
    await source.start()

    async def status(_: web.Request) -> web.Response:
        table = store.current if store.loaded else None
        bad = ns == BROKEN and table is not None and table.failover is not None
        return web.json_response(
            {
                "table": {"hash": table.hash if table else "", "namespace": ns},
                "health": {
                    "ready": not bad,
                    "requests": 100,
                    "errors": 60 if bad else 0,
                    "errorRate": 0.6 if bad else 0.0,
                },
            }
        )

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()
        await source.stop()


def _cm_patches(cluster: Any, since: int) -> list[str]:
    """Namespaces whose table was re-written, in order (kmock's private request log)."""
    out = []
    for r in cluster._requests[since:]:
        parts = r.url.path.strip("/").split("/")
        if (
            str(r.method).endswith("PATCH")
            and len(parts) == 6
            and parts[4] == "configmaps"
            and parts[5] == "modelroute-table"
        ):
            out.append(parts[3])
    return out


async def _failover(api: Api, ns: str) -> Any:
    cm = await api.get(f"/api/v1/namespaces/{ns}/configmaps/modelroute-table")
    assert cm is not None
    return CompiledTable.from_json(cm["data"]["table.json"]).failover


async def test_policy_rolls_out_in_batches_and_rolls_back_a_regression(
    cluster: Any, kubeconfig: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        s = await stack.enter_async_context(aiohttp.ClientSession(str(cluster.url)))
        api = Api(s)
        for ns in NAMESPACES:
            await api.namespace(ns, tier="prod")
            await api.post(f"{G}/namespaces/{ns}/modelproviders", provider(ns))
            await api.post(f"{G}/namespaces/{ns}/modelroutes", route(ns, "general"))
        runner = stack.enter_context(KopfRunner(ARGS, timeout=30))
        for ns in NAMESPACES:
            await eventually(
                lambda ns=ns: api.get(f"/api/v1/namespaces/{ns}/configmaps/modelroute-table"),
                what=f"table in {ns}",
            )
            port = await stack.enter_async_context(fake_sidecar(ns, kubeconfig))
            await api.post(
                f"/api/v1/namespaces/{ns}/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": "app",
                        "namespace": ns,
                        "annotations": {
                            "modelroute.io/injected": "true",
                            "modelroute.io/admin-port": str(port),
                        },
                    },
                    "status": {"podIP": "127.0.0.1"},
                },
            )
        assert all([await _failover(api, ns) is None for ns in NAMESPACES])

        mark = len(cluster._requests)
        await api.post(
            f"{G}/failoverpolicies",
            {
                "apiVersion": "modelroute.io/v1alpha1",
                "kind": "FailoverPolicy",
                # kopf >= 1.45 adds the daemon's finalizer by JSON patch with a `test` of
                # metadata.resourceVersion, which kmock 0.8 never assigns: without one the
                # test fails (500) and kopf backs off for longer than this test waits.
                "metadata": {"name": "regions", "generation": 1, "resourceVersion": "1"},
                "spec": {
                    "namespaceSelector": {"matchLabels": {"tier": "prod"}},
                    "regionPreference": ["eu-west", "us-east"],
                    "rollout": {
                        "batchSize": 2,
                        "pauseSeconds": 0,
                        "healthTimeoutSeconds": 5,
                        "maxErrorRate": 0.05,
                    },
                },
            },
        )

        async def halted() -> Any:
            obj = await api.get(f"{G}/failoverpolicies/regions")
            st = (obj or {}).get("status") or {}
            return st if st.get("phase") == "Halted" else None

        # two batches, each gated up to healthTimeoutSeconds on a loaded 2-core CI box: the
        # bound is how long a broken rollout may take to notice, not how fast it usually is
        status = await eventually(halted, within=30, what="rollout halted")
        states = {n["namespace"]: (n["batch"], n["state"]) for n in status["namespaces"]}
        assert states == {
            "ns-1": (0, "healthy"),
            "ns-2": (0, "healthy"),
            "ns-3": (1, "rolledBack"),
            "ns-4": (1, "rolledBack"),
            "ns-5": (2, "pending"),
        }
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert "ns-3" in ready["message"]

        # The status is written before the rollback's re-writes (they read it): wait for them.
        async def rolled_back() -> bool:
            return all([await _failover(api, ns) is None for ns in ("ns-3", "ns-4")])

        await eventually(rolled_back, within=5, what="batch 2 tables rolled back")
        await asyncio.sleep(0.3)
        # What reached the API, in order: batch 1, batch 2, batch 2 rolled back; never ns-5.
        patches = _cm_patches(cluster, mark)
        assert sorted(patches[:2]) == ["ns-1", "ns-2"], patches
        assert sorted(patches[2:4]) == ["ns-3", "ns-4"], patches
        assert sorted(patches[4:]) == ["ns-3", "ns-4"], patches
        assert (await _failover(api, "ns-1")).region_preference == ("eu-west", "us-east")
        assert (await _failover(api, "ns-2")) is not None
        for ns in ("ns-3", "ns-4", "ns-5"):
            assert await _failover(api, ns) is None, ns

        # A policy change mid-way starts a new rollout from a clean plan.
        await api.patch(
            f"{G}/failoverpolicies/regions", {"spec": {"regionPreference": ["us-east", "eu-west"]}}
        )

        async def replanned() -> Any:
            obj = await api.get(f"{G}/failoverpolicies/regions")
            st = (obj or {}).get("status") or {}
            return st if st.get("hash") != status["hash"] else None

        fresh = await eventually(replanned, within=30, what="new rollout")
        assert fresh["namespaces"][0]["namespace"] == "ns-1"
        assert fresh["namespaces"][0]["state"] in ("applied", "healthy")
    assert runner.exception is None
