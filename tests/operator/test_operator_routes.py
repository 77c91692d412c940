"""The real operator (kopf via KopfRunner) against kmock: tables, RBAC, status, events."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from kopf.testing import KopfRunner
from modelroute.proxy.table import CompiledTable

from .helpers import Api, G, condition, eventually, provider, route

ARGS = ["run", "--standalone", "-A", "--verbose", "-m", "modelroute.operator.handlers"]
CM = "/api/v1/namespaces/{ns}/configmaps/modelroute-table"


def _writes(cluster: Any) -> list[str]:
    # kmock keeps every request it served (a private list in 0.8; there is no public one).
    return [
        f"{r.method} {r.url.path}"
        for r in cluster._requests
        if str(r.method).upper().rsplit(".", 1)[-1] in ("POST", "PATCH", "PUT", "DELETE")
    ]


async def test_route_compiles_into_table_and_bad_ref_is_reported(cluster: Any) -> None:
    async with aiohttp.ClientSession(str(cluster.url)) as s:
        api = Api(s)
        await api.namespace("team-a")
        await api.post(f"{G}/namespaces/team-a/modelproviders", provider("team-a"))
        await api.post(f"{G}/namespaces/team-a/modelroutes", route("team-a", "general"))
        with KopfRunner(ARGS, timeout=20) as runner:
            # 1. the ModelRoute lands in the namespace's table, and reports Ready.
            cm = await eventually(lambda: api.get(CM.format(ns="team-a")), what="ConfigMap")
            table = CompiledTable.from_json(cm["data"]["table.json"])
            assert cm["metadata"]["annotations"]["modelroute.io/hash"] == table.hash
            assert table.namespace == "team-a"
            assert [r.aliases for r in table.routes] == [("general",)]

            async def ready() -> Any:
                obj = await api.get(f"{G}/namespaces/team-a/modelroutes/general")
                c = condition(obj, "Ready")
                return obj if c and c["status"] == "True" else None

            obj = await eventually(ready, what="Ready=True")
            assert obj["status"]["observedGeneration"] == 1
            assert obj["status"]["hash"] == table.hash
            assert obj["status"]["primaryTarget"] == "gateway/qwen3-8b"

            # sidecar RBAC: read only the table ConfigMap, bound to the namespace's SAs.
            role = await api.get(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/modelroute-sidecar"
            )
            assert role is not None
            assert role["rules"][0]["resourceNames"] == ["modelroute-table"]
            binding = await api.get(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings/modelroute-sidecar"
            )
            assert binding is not None
            assert binding["subjects"][0]["name"] == "system:serviceaccounts:team-a"

            # 2. unknown provider: ResolvedRefs=False with a message; the table is unchanged.
            await api.post(f"{G}/namespaces/team-a/modelroutes", route("team-a", "typo", "gatewey"))

            async def unresolved() -> Any:
                obj = await api.get(f"{G}/namespaces/team-a/modelroutes/typo")
                c = condition(obj, "ResolvedRefs")
                return c if c and c["status"] == "False" else None

            c = await eventually(unresolved, what="ResolvedRefs=False")
            assert c["reason"] == "UnknownProvider"
            assert "gatewey" in c["message"]
            assert "gateway" in c["message"]  # the suggestion says what to fix
            cm2 = await api.get(CM.format(ns="team-a"))
            assert cm2 is not None
            assert cm2["metadata"]["annotations"]["modelroute.io/hash"] == table.hash
            assert cm2["data"]["table.json"] == cm["data"]["table.json"]
            events = await api.get("/api/v1/namespaces/team-a/events")
            assert any(
                e.get("involvedObject", {}).get("name") == "typo"
                and e.get("reason") == "UnknownProvider"
                for e in (events or {}).get("items", [])
            )

            # 3. idempotent: once the handlers have settled (on a loaded machine the last
            # status patch can land late), an unchanged world gets no further writes; a
            # handler that rewrites in a loop never settles and fails here.
            writes = _writes(cluster)
            for _ in range(20):
                await asyncio.sleep(0.5)
                now = _writes(cluster)
                if now == writes:
                    break
                writes = now
            else:
                raise AssertionError(f"the operator kept writing: {now[len(writes) :]}")
            await asyncio.sleep(1.0)
            after = _writes(cluster)
            assert after == writes, after[len(writes) :]

            # 4. the namespace leaves: table and RBAC go.
            await api.patch(
                "/api/v1/namespaces/team-a",
                {"metadata": {"labels": {"modelroute.io/enabled": "false"}}},
            )

            role_path = (
                "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/modelroute-sidecar"
            )

            async def gone() -> bool:
                # the handler deletes the table, then the sidecar Role: wait for both
                table_gone = await api.get(CM.format(ns="team-a")) is None
                return table_gone and await api.get(role_path) is None

            await eventually(gone, what="table and sidecar Role removed")
        assert runner.exception is None
