"""Fixtures every suite may use.  Only ``control_plane`` lives here: one real Kubernetes
control plane per test run, started on first use (see tests/cluster/controlplane.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster.controlplane import ControlPlane, missing_binaries


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, for the whole run.

    Missing binaries skip the dependent tests on a laptop and fail them under ``CI=true``
    (``scripts/install-test-tools.sh`` builds them; ``make test`` runs it).
    """
    missing = missing_binaries()
    if missing:
        message = f"missing {', '.join(missing)}: run `bash scripts/install-test-tools.sh`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cp = ControlPlane(Path(tmp_path_factory.mktemp("control-plane")))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
