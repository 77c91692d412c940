"""Shared fixtures: kmock as the Kubernetes API, a kubeconfig pointing at it, tables to serve.

kmock 0.8 gaps we work around here (see ../shared/TESTING.md): resources must be
declared (``load_bundled`` + our CRDs); the kubernetes client reads KUBECONFIG at
import, so the operator logs in through its own handler which reads the file lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kubeconfig(kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A kubeconfig naming the kmock server (plain HTTP on 127.0.0.1)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "kmock", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path
