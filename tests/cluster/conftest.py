"""The chart installed with the real helm, and the operator running under its identity.

``release`` installs ``charts/modelroute`` once per run (module fixtures of the
journey build on it); ``operator`` runs one operator replica for the tests that
need the webhooks and reconciliation.  The control plane itself is the session
fixture ``control_plane`` (tests/conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .controlplane import ROOT, ControlPlane
from .operator_process import OperatorProcess

CHART = ROOT / "charts" / "modelroute"
RELEASE = "modelroute"
RELEASE_NS = "modelroute-system"
WEBHOOK_SERVICE = f"{RELEASE}-webhook"
# Fast enough for a test to watch the safety net work, slow enough to stay quiet.
TEST_VALUES = ["--set", "operator.resyncSeconds=5"]


@dataclass
class Release:
    cp: ControlPlane
    name: str = RELEASE
    namespace: str = RELEASE_NS


@pytest.fixture(scope="session")
def release(control_plane: ControlPlane) -> Release:
    """``helm install`` of the chart, as docs/install.md says (the real release storage)."""
    control_plane.helm(
        "install", RELEASE, str(CHART), "--namespace", RELEASE_NS, "--create-namespace",
        *TEST_VALUES,
    )  # fmt: skip
    return Release(control_plane)


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator replica with the chart's ServiceAccount token, its webhooks routed to it."""
    proc = OperatorProcess(
        control_plane, RELEASE_NS, RELEASE, Path(tmp_path_factory.mktemp("operator")), priority=100
    )
    control_plane.route_service(RELEASE_NS, WEBHOOK_SERVICE, proc.webhook_port)
    proc.start()
    yield proc
    proc.stop()


def eventually(probe: Callable[[], Any], within: float = 10.0, what: str = "condition") -> Any:
    """Poll until probe() is truthy (bounded)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {within}s (last: {last!r})")
