"""A FailoverPolicy rolled out over 5 enrolled namespaces on the real API server.

The scenario of ``tests/e2e/kind.sh`` step 4: each namespace has a fake provider in two
regions, a route, and an injected Pod whose sidecar runs as a local process (its own
command, a Pod-bound token) and gets steady traffic.  ``roll-3``'s provider fails every
request: batch 1 (roll-1, roll-2) becomes healthy, batch 2 (roll-3, roll-4) regresses,
is rolled back (its tables carry the previous failover block again) and the rollout
halts before roll-5.  The gate is the operator's own probe of each sidecar's
``/status`` through the Pod's IP and ``modelroute.io/admin-port`` annotation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import eventually
from .controlplane import ControlPlane
from .fakes import FakeProvider
from .operator_process import OperatorProcess
from .sidecar_process import SidecarProcess
from .test_install import enrolled_namespace, pod

NAMESPACES = [f"roll-{i}" for i in range(1, 6)]
FAILING = "roll-3"
POLICY = "e2e-regions"


def provider_two_regions(ns: str, url: str) -> str:
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {{name: fake, namespace: {ns}}}
spec:
  endpoints:
    - {{region: us-east, baseURL: "{url}"}}
    - {{region: eu-west, baseURL: "{url}"}}
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: general, namespace: {ns}}}
spec:
  models: [general]
  targets:
    - {{provider: fake, model: deepseek-v4-flash, tier: 0}}
    - {{provider: fake, model: qwen3-32b, tier: 1}}
"""


POLICY_YAML = f"""
apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {{name: {POLICY}}}
spec:
  namespaceSelector: {{matchLabels: {{tier: rollout-e2e}}}}
  regionPreference: [eu-west, us-east]
  rollout: {{batchSize: 2, pauseSeconds: 1, healthTimeoutSeconds: 30, maxErrorRate: 0.05, minRequests: 5}}
"""


@pytest.fixture(scope="module")
def fleet(
    operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, SidecarProcess]]:
    cp = operator.cp
    workdir = Path(tmp_path_factory.mktemp("rollout"))
    fakes: list[FakeProvider] = []
    sidecars: dict[str, SidecarProcess] = {}
    stop = threading.Event()
    try:
        for ns in NAMESPACES:
            flags = ["--error-rate", "1.0"] if ns == FAILING else []
            fake = FakeProvider(workdir / ns / "fake", flags=flags).start()
            fakes.append(fake)
            enrolled_namespace(cp, ns, tier="rollout-e2e")
            cp.kubectl("apply", "-f", "-", input=provider_two_regions(ns, fake.url))
            cp.kubectl("wait", "-n", ns, "mroute/general", "--for=condition=Ready", "--timeout=20s")
            assert cp.api("POST", f"/api/v1/namespaces/{ns}/pods", pod(ns, "app")) is not None
            sidecar = SidecarProcess(cp, ns, "app", workdir / ns / "sidecar").start()
            sidecar.mark_running()
            sidecars[ns] = sidecar

        def traffic() -> None:  # the apps: each sidecar asked for "general" ~5 times a second
            while not stop.is_set():
                for s in sidecars.values():
                    s.served_by()
                stop.wait(0.2)

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        yield sidecars
    finally:
        stop.set()
        for s in sidecars.values():
            s.stop()
        for f in fakes:
            f.stop()


def policy(cp: ControlPlane) -> dict[str, Any]:
    doc = cp.api("GET", f"/apis/modelroute.io/v1alpha1/failoverpolicies/{POLICY}")
    assert doc is not None
    return doc


def table_failover(cp: ControlPlane, ns: str) -> Any:
    cm = cp.api("GET", f"/api/v1/namespaces/{ns}/configmaps/modelroute-table")
    assert cm is not None
    return json.loads(cm["data"]["table.json"]).get("failover")


def test_policy_rolls_out_in_three_batches_and_rolls_back_a_regression(
    fleet: dict[str, SidecarProcess],
) -> None:
    cp = next(iter(fleet.values())).cp
    before = {ns: table_failover(cp, ns) for ns in NAMESPACES}
    cp.kubectl("apply", "-f", "-", input=POLICY_YAML)

    def halted() -> dict[str, Any] | None:
        status = policy(cp).get("status") or {}
        return status if status.get("phase") == "Halted" else None

    status = eventually(halted, within=90, what="the rollout halting")
    batches = {n["namespace"]: n["batch"] for n in status["namespaces"]}
    states = {n["namespace"]: n["state"] for n in status["namespaces"]}
    # 5 namespaces, batchSize 2: three batches in name order
    assert batches == {"roll-1": 0, "roll-2": 0, "roll-3": 1, "roll-4": 1, "roll-5": 2}, batches
    assert states == {
        "roll-1": "healthy",
        "roll-2": "healthy",
        "roll-3": "rolledBack",
        "roll-4": "rolledBack",
        "roll-5": "pending",
    }, status
    # the tables say the same: batch 1 carries the policy, the rest what they had
    for ns in ("roll-1", "roll-2"):
        failover = table_failover(cp, ns)
        assert failover is not None and failover != before[ns], (ns, failover)
    for ns in ("roll-3", "roll-4", "roll-5"):  # the status is written before the roll-back
        eventually(lambda n=ns: table_failover(cp, n) == before[n], what=f"{ns} rolled back")
    # and the sidecars serve those tables (the rolled-back hash reached them)
    for ns in ("roll-3", "roll-4"):
        cm = cp.api("GET", f"/api/v1/namespaces/{ns}/configmaps/modelroute-table")
        assert cm is not None
        want = cm["metadata"]["annotations"]["modelroute.io/hash"]
        eventually(lambda s=fleet[ns], w=want: s.status()["table"]["hash"] == w, what=ns)
    # what a person reads: the Halted condition and the Warning event
    described = cp.kubectl("describe", "failoverpolicy", POLICY).stdout
    assert "Halted" in described and "Warning" in described, described
