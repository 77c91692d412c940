"""Fixtures for the chart tests: a real helm binary and rendered manifests.

helm comes from `.tools/bin` (installed by `make test` via
scripts/install-test-tools.sh) or PATH.  Without it the tests skip locally but
FAIL under CI=true, so a broken installer can't turn the chart proof green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelroute"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
# The cluster version the chart is validated for by default; old-k8s renders as 1.28.
KUBE_VERSION = "1.30.0"

Render = Callable[..., list[dict[str, Any]]]


def _find_helm() -> str | None:
    local = ROOT / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


@pytest.fixture(scope="session")
def helm() -> str:
    path = _find_helm()
    if path is None:
        message = (
            "helm not found in .tools/bin or PATH; run `make tools` (scripts/install-test-tools.sh)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def kube_version_for(values: Path | None) -> str:
    return "1.28.0" if values is not None and values.name.startswith("old-k8s") else KUBE_VERSION


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    def _render(
        values: Path | None = None, *extra: str, kube_version: str | None = None
    ) -> list[dict[str, Any]]:
        cmd = [
            helm,
            "template",
            "mr",
            str(CHART),
            "--namespace",
            "modelroute-system",
            "--kube-version",
            kube_version or kube_version_for(values),
            *extra,
        ]
        if values is not None:
            cmd += ["--values", str(values)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    return _render
