"""Two operator replicas peering through the chart's ClusterKopfPeering (issue 12, last bullet).

The session's replica A (priority 100) is joined by B (priority 200), both with the
chart's ServiceAccount token.  kopf's peering pauses A in favour of B: a new route is
handled by B's handlers only.  B is then stopped the way a Pod is (SIGTERM), and A takes
over: the next route is handled by A.  "Handled" is read from each replica's own log
(kopf's ``Handler 'route_or_provider_changed' succeeded``); the resync safety net runs in
both replicas by design (docs/operator.md) and writes through no handler.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import RELEASE, RELEASE_NS, eventually
from .controlplane import ControlPlane
from .operator_process import OperatorProcess
from .test_install import enrolled_namespace, provider_yaml, route_yaml

HANDLED = "Handler 'route_or_provider_changed' succeeded."


def handled(op: OperatorProcess) -> int:
    return op.log.read_text(errors="replace").count(HANDLED)


def new_ready_route(cp: ControlPlane, ns: str) -> None:
    enrolled_namespace(cp, ns)
    cp.kubectl("apply", "-f", "-", input=provider_yaml(ns) + "---" + route_yaml(ns, "r"))
    cp.kubectl("wait", "-n", ns, "mroute/r", "--for=condition=Ready", "--timeout=20s")


def test_one_replica_reconciles_and_stopping_it_hands_over(
    operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cp = operator.cp
    a = operator
    b = OperatorProcess(
        cp, RELEASE_NS, RELEASE, Path(tmp_path_factory.mktemp("operator-b")), priority=200
    ).start()
    try:
        eventually(
            a.has_paused,
            within=20,
            what="A pausing in favour of B",
        )
        peering = cp.api("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/modelroute")
        assert peering is not None
        priorities = sorted(p["priority"] for p in (peering.get("status") or {}).values())
        assert priorities == [100, 200], peering.get("status")

        a0, b0 = handled(a), handled(b)
        new_ready_route(cp, "peer-1")
        eventually(lambda: handled(b) > b0, what="B handling peer-1")
        assert handled(a) == a0, "the paused replica ran a handler"
    finally:
        b.stop()  # SIGTERM, as for a deleted Pod: kopf takes B out of the peering
    eventually(
        a.resumed_since_pause,
        within=20,
        what="A resuming",
    )
    a1 = handled(a)
    new_ready_route(cp, "peer-2")
    eventually(lambda: handled(a) > a1, what="A handling peer-2")
