"""The rollout gate's view of one namespace: which sidecars it asks, and what it concludes.

Sidecars here are small aiohttp apps on 127.0.0.1 answering ``/status`` the way
``modelroute proxy`` does; the pod list comes from a stub of the Kubernetes API.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from modelroute.operator import rollout
from modelroute.operator.kube import ApiError
from modelroute.operator.probe import Gate, probe_sidecars

HASH = "sha256:new"


class PodList:
    """The one call probe_sidecars makes to the API: list the namespace's pods."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods

    async def list(self, path: str) -> list[dict[str, Any]]:
        assert path == "/api/v1/namespaces/team-a/pods", path
        return self.pods


@contextlib.asynccontextmanager
async def sidecar(
    *, ready: bool = True, recent: int = 100, error_rate: float = 0.0, table_hash: str = HASH
) -> AsyncIterator[int]:
    async def status(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "table": {"hash": table_hash},
                "health": {"ready": ready, "recentRequests": recent, "errorRate": error_rate},
            }
        )

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def pod(name: str, port: int, *, phase: str = "Running", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "team-a",
        "annotations": {"modelroute.io/injected": "true", "modelroute.io/admin-port": str(port)},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-25T10:00:00Z"
    return {"metadata": meta, "status": {"podIP": "127.0.0.1", "phase": phase}}


async def probe(*pods: dict[str, Any], gate: Gate | None = None) -> rollout.Health:
    return await probe_sidecars(PodList(list(pods)), "team-a", HASH, gate or Gate())


async def test_a_healthy_sidecar_on_the_new_hash_converges() -> None:
    async with sidecar() as port:
        assert await probe(pod("a", port)) is rollout.Health.CONVERGED


async def test_a_high_error_rate_over_enough_requests_is_a_regression() -> None:
    async with sidecar() as good, sidecar(recent=50, error_rate=0.5) as bad:
        assert await probe(pod("a", good), pod("b", bad)) is rollout.Health.REGRESSED


async def test_one_failed_request_of_one_is_not_a_regression() -> None:
    # 100 % errors, but over a single request: below the gate's minRequests (10)
    async with sidecar(recent=1, error_rate=1.0) as port:
        assert await probe(pod("a", port)) is rollout.Health.CONVERGED


async def test_pods_going_away_or_not_running_are_not_asked() -> None:
    # a draining sidecar reports not ready; a Deployment's own rollout must not roll ours back
    async with sidecar() as good, sidecar(ready=False, error_rate=1.0, table_hash="old") as gone:
        assert (
            await probe(
                pod("a", good),
                pod("b", gone, deleting=True),
                pod("c", gone, phase="Pending"),
                pod("d", gone, phase="Succeeded"),
            )
            is rollout.Health.CONVERGED
        )
        assert await probe(pod("a", good), pod("b", gone)) is rollout.Health.REGRESSED


async def test_a_sidecar_still_on_the_old_hash_is_waited_for() -> None:
    async with sidecar() as good, sidecar(table_hash="sha256:old") as behind:
        assert await probe(pod("a", good), pod("b", behind)) is rollout.Health.WAITING


async def test_the_gate_is_the_one_passed_in() -> None:
    # two policies with different ceilings judge the same sidecar differently: the gate is
    # an argument of each probe, not something a previous rollout step left behind
    async with sidecar(recent=20, error_rate=0.1) as port:
        strict, lenient = Gate(max_error_rate=0.05), Gate(max_error_rate=0.2)
        assert await probe(pod("a", port), gate=strict) is rollout.Health.REGRESSED
        assert await probe(pod("a", port), gate=lenient) is rollout.Health.CONVERGED
        assert await probe(pod("a", port), gate=strict) is rollout.Health.REGRESSED
        assert await probe(pod("a", port), gate=Gate(min_requests=50)) is rollout.Health.CONVERGED


class Forbidden:
    """The API's answer where the operator has no pod-list RoleBinding (issue 13 item 3)."""

    def __init__(self, status: int = 403) -> None:
        self.status = status

    async def list(self, path: str) -> list[dict[str, Any]]:
        raise ApiError(self.status, '{"kind":"Status","reason":"Forbidden"}')


async def test_a_namespace_whose_pods_the_operator_may_not_list_says_why() -> None:
    with pytest.raises(ApiError) as err:
        await probe_sidecars(Forbidden(), "team-a", HASH, Gate())
    assert err.value.status == 403
    message = str(err.value)
    assert "may not list pods in namespace team-a" in message
    assert "enrolled" in message and "modelroute-operator-pods" in message
    with pytest.raises(ApiError) as other:  # other failures pass through as they came
        await probe_sidecars(Forbidden(500), "team-a", HASH, Gate())
    assert "may not list" not in str(other.value)
