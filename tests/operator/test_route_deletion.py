"""Deletions through the real operator (kopf via KopfRunner) against kmock.

Issue 5: "a deleted route leaves the table".  The operator keeps no finalizer on
routes or providers; it rebuilds the namespace's table from what is left when
the watch reports ``DELETED`` (``handlers.route_or_provider_deleted``).  What a
user relies on:

* deleting one ModelRoute removes its model name from the namespace's table
  (sidecars stop serving it) and leaves the other routes as they were;
* deleting the ModelProvider a route still points at takes that route out of
  the table too, and the route says why: ``ResolvedRefs=False`` /
  ``UnknownProvider`` naming the missing provider, ``Ready=False``, and a
  Warning event on the route.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from kopf.testing import KopfRunner
from modelroute.proxy.table import CompiledTable

from .helpers import Api, G, condition, eventually, provider, route

ARGS = ["run", "--standalone", "-A", "--verbose", "-m", "modelroute.operator.handlers"]
NS = "team-a"
CM = f"/api/v1/namespaces/{NS}/configmaps/modelroute-table"
ROUTES = f"{G}/namespaces/{NS}/modelroutes"
PROVIDERS = f"{G}/namespaces/{NS}/modelproviders"


async def _table(api: Api) -> CompiledTable | None:
    cm = await api.get(CM)
    if cm is None:
        return None
    table = CompiledTable.from_json(cm["data"]["table.json"])
    # the annotation sidecars and the rollout read must name the table actually stored
    assert cm["metadata"]["annotations"]["modelroute.io/hash"] == table.hash
    return table


async def _settled(cluster: Any, quiet: float = 0.5, within: float = 10.0) -> None:
    """Wait until the operator has sent no write for ``quiet`` seconds.

    The start-up handlers (resume for each object, the namespace event) queue several
    reconciles of the namespace; one still queued when a route is deleted would remove
    it from the table too, and the test would not show that the deletion itself did.
    """
    deadline = time.monotonic() + within
    seen = -1
    while time.monotonic() < deadline:
        # kmock keeps every request it served (a private list in 0.8; there is no public one).
        writes = sum(
            1
            for r in cluster._requests
            if str(r.method).upper().rsplit(".", 1)[-1] in ("POST", "PATCH", "PUT", "DELETE")
        )
        if writes == seen:
            return
        seen = writes
        await asyncio.sleep(quiet)
    raise AssertionError(f"the operator kept writing for {within}s")


def _aliases(table: CompiledTable | None) -> set[str]:
    return {a for r in (table.routes if table else ()) for a in r.aliases}


async def test_deleted_route_and_provider_leave_the_table(cluster: Any) -> None:
    async with aiohttp.ClientSession(str(cluster.url)) as s:
        api = Api(s)
        await api.namespace(NS)
        await api.post(PROVIDERS, provider(NS))
        await api.post(ROUTES, route(NS, "general"))
        await api.post(ROUTES, route(NS, "coder"))
        with KopfRunner(ARGS, timeout=20) as runner:

            async def aliases_are(want: set[str]) -> CompiledTable | None:
                table = await _table(api)
                return table if _aliases(table) == want else None

            both = await eventually(
                lambda: aliases_are({"general", "coder"}), within=10, what="both routes in table"
            )

            await _settled(cluster)

            # 1. one route deleted: it leaves the table, the other stays untouched.
            await api.delete(f"{ROUTES}/coder")
            assert await api.get(f"{ROUTES}/coder") is None  # no finalizer holds it back
            only = await eventually(
                lambda: aliases_are({"general"}), within=10, what="deleted route gone from table"
            )
            assert only.hash != both.hash
            kept = next(r for r in only.routes if r.aliases == ("general",))
            before = next(r for r in both.routes if r.aliases == ("general",))
            assert kept == before

            async def general_ready() -> Any:
                c = condition(await api.get(f"{ROUTES}/general"), "Ready")
                return c if c and c["status"] == "True" else None

            await eventually(general_ready, within=10, what="remaining route still Ready")

            # 2. the provider deleted: the remaining route can't resolve, says so, leaves too.
            await _settled(cluster)
            await api.delete(f"{PROVIDERS}/gateway")

            async def unresolved() -> Any:
                obj = await api.get(f"{ROUTES}/general")
                c = condition(obj, "ResolvedRefs")
                return obj if c and c["status"] == "False" else None

            obj = await eventually(unresolved, within=10, what="ResolvedRefs=False")
            resolved = condition(obj, "ResolvedRefs")
            assert resolved is not None
            assert resolved["reason"] == "UnknownProvider"
            assert "no ModelProvider named 'gateway'" in resolved["message"]
            ready = condition(obj, "Ready")
            assert ready is not None
            assert ready["status"] == "False"
            assert ready["message"].startswith("not in the table:")
            assert "'gateway'" in ready["message"]
            # The status is patched after the table is written (same reconcile): no wait needed.
            empty = await _table(api)
            assert empty is not None  # the namespace keeps a table, with no routes in it
            assert _aliases(empty) == set()
            assert obj["status"]["hash"] == empty.hash

            async def warned() -> bool:
                events = await api.get(f"/api/v1/namespaces/{NS}/events")
                return any(
                    e.get("involvedObject", {}).get("name") == "general"
                    and e.get("reason") == "UnknownProvider"
                    and e.get("type") == "Warning"
                    and "'gateway'" in e.get("message", "")
                    for e in (events or {}).get("items", [])
                )

            await eventually(warned, within=5, what="Warning event on the route")
        assert runner.exception is None
