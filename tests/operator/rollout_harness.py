"""Driving :meth:`Service.rollout_step` by hand: kmock as the API, a stub prober, a fake clock.

No kopf and no sidecars: each call is one step of the rollout daemon, so a test can
stop between two steps (e.g. to edit the policy while batch 2 is in flight) and look
at exactly what reached the API.  The prober answers what the test says each
namespace's sidecars report; it records which table hash the service asked about.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from modelroute.operator import rollout
from modelroute.operator.kube import KubeApi
from modelroute.operator.probe import Gate
from modelroute.operator.service import Service
from modelroute.proxy.kube_source import KubeConfig
from modelroute.proxy.table import CompiledTable

from .helpers import Api, G, provider, route

POLICY = "regions"
V1 = ("eu-west", "us-east")
V2 = ("us-east", "eu-west")


def policy(prefs: tuple[str, ...], batch_size: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "modelroute.io/v1alpha1",
        "kind": "FailoverPolicy",
        "metadata": {"name": POLICY, "generation": 1},
        "spec": {
            "namespaceSelector": {"matchLabels": {"tier": "prod"}},
            "regionPreference": list(prefs),
            "rollout": {
                "batchSize": batch_size,
                "pauseSeconds": 0,
                "healthTimeoutSeconds": 5,
                "maxErrorRate": 0.05,
            },
        },
    }


@dataclass
class Prober:
    """What the sidecars of each namespace report (default: converged)."""

    verdicts: dict[str, rollout.Health] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def __call__(self, ns: str, expected_hash: str, gate: Gate) -> rollout.Health:
        self.asked.append((ns, expected_hash))
        return self.verdicts.get(ns, rollout.Health.CONVERGED)


@dataclass
class World:
    api: Api  # the test's own client, as kubectl
    service: Service
    prober: Prober
    now: float = 1000.0

    async def step(self) -> float | None:
        """One turn of the rollout daemon, one tenth of a second after the last."""
        self.now += 0.1
        return await self.service.rollout_step(POLICY)

    async def table(self, ns: str) -> CompiledTable:
        cm = await self.api.get(f"/api/v1/namespaces/{ns}/configmaps/modelroute-table")
        assert cm is not None, ns
        table = CompiledTable.from_json(cm["data"]["table.json"])
        # one whole table per namespace: the annotation names exactly what is stored
        assert cm["metadata"]["annotations"]["modelroute.io/hash"] == table.hash, ns
        return table

    async def prefs(self, ns: str) -> tuple[str, ...] | None:
        """The region preference of the failover block the namespace's table carries."""
        failover = (await self.table(ns)).failover
        return tuple(failover.region_preference) if failover is not None else None

    async def status(self) -> dict[str, Any]:
        obj = await self.api.get(f"{G}/failoverpolicies/{POLICY}")
        assert obj is not None
        st: dict[str, Any] = obj.get("status") or {}
        return st

    async def states(self) -> dict[str, tuple[int, str]]:
        return {
            n["namespace"]: (n["batch"], n["state"]) for n in (await self.status())["namespaces"]
        }

    async def events(self) -> list[str]:
        """Every event the policy got so far, oldest first."""
        doc = await self.api.get("/api/v1/namespaces/default/events")
        return [
            e["message"]
            for e in (doc or {}).get("items", [])
            if e.get("involvedObject", {}).get("name") == POLICY
        ]


@asynccontextmanager
async def world(cluster: Any, namespaces: list[str]) -> AsyncIterator[World]:
    """Enrolled ``tier=prod`` namespaces, each with a provider, a route and its table."""
    async with (
        aiohttp.ClientSession(str(cluster.url)) as session,
        KubeApi(KubeConfig(server=str(cluster.url).rstrip("/"))) as kube,
    ):
        api = Api(session)
        for ns in namespaces:
            await api.namespace(ns, tier="prod")
            await api.post(f"{G}/namespaces/{ns}/modelproviders", provider(ns))
            await api.post(f"{G}/namespaces/{ns}/modelroutes", route(ns, "general"))
        prober = Prober()
        service = Service(kube, prober=prober)
        w = World(api, service, prober)
        service.clock = lambda: w.now
        await service.reconcile_all()  # what the operator does at start: tables, no policy yet
        yield w
