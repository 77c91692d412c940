"""Talking to kmock the way kubectl would: plain HTTP against its URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

MERGE = {"Content-Type": "application/merge-patch+json"}
G = "/apis/modelroute.io/v1alpha1"
# What the chart's Deployment tells the operator (release "mr" in namespace
# modelroute-system, as tests/chart renders it): whom to bind the pod-reader role to.
# The ``cluster`` fixture sets it; tests/chart/test_rbac.py checks it against the chart.
POD_READER_ENV = {
    "MODELROUTE_POD_READER_CLUSTERROLE": "mr-modelroute-pod-reader",
    "MODELROUTE_SERVICE_ACCOUNT": "mr-modelroute",
    "POD_NAMESPACE": "modelroute-system",
}


class Api:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.s = session

    async def post(self, path: str, body: dict[str, Any]) -> None:
        async with self.s.post(path, json=body) as r:
            assert r.status in (200, 201), await r.text()

    async def get(self, path: str) -> dict[str, Any] | None:
        async with self.s.get(path) as r:
            if r.status == 404:
                return None
            assert r.status == 200, await r.text()
            doc: dict[str, Any] = await r.json()
            return doc

    async def patch(self, path: str, body: dict[str, Any]) -> None:
        async with self.s.patch(path, json=body, headers=MERGE) as r:
            assert r.status == 200, await r.text()

    async def delete(self, path: str) -> None:
        async with self.s.delete(path) as r:
            assert r.status in (200, 202, 404), await r.text()

    async def namespace(self, name: str, enrolled: bool = True, **labels: str) -> None:
        lab = {"modelroute.io/enabled": "true"} if enrolled else {}
        await self.post(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {**lab, **labels}},
            },
        )


async def eventually(
    probe: Callable[[], Awaitable[Any]], within: float = 5.0, what: str = "condition"
) -> Any:
    """Poll until probe() is truthy (bounded): the operator runs in its own thread."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {within}s (last: {last!r})")


def provider(ns: str, name: str = "gateway") -> dict[str, Any]:
    return {
        "apiVersion": "modelroute.io/v1alpha1",
        "kind": "ModelProvider",
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {
            "api": "openai",
            "endpoints": [
                {"region": "us-east", "baseURL": "http://127.0.0.1:9/v1"},
                {"region": "eu-west", "baseURL": "http://127.0.0.1:9/v1"},
            ],
            "credentials": {"secretRef": {"name": "gw", "key": "api-key"}},
            "builtinCatalogue": True,
        },
    }


def route(
    ns: str, name: str, provider_name: str = "gateway", model: str = "qwen3-8b", generation: int = 1
) -> dict[str, Any]:
    # kmock keeps no metadata.generation; we post one so observedGeneration has a source.
    return {
        "apiVersion": "modelroute.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": ns, "generation": generation},
        "spec": {"models": [name], "targets": [{"provider": provider_name, "model": model}]},
    }


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None
