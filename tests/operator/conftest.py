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

from .helpers import POD_READER_ENV

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


def _patch_kmock_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """kmock 0.8 parses ``/api/v1/namespaces[/name]`` as a namespace prefix with no resource
    (500/404).  Teach its path parser that these are the cluster-scoped ``namespaces`` resource,
    so the operator's namespace list/watch/get works.  The one workaround for this gap."""
    from kmock._internal import parsing

    original = parsing.parse_path

    def parse_path(path: str) -> Any:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and (
            len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
        ):
            return parsing.ParsedPath(
                "",
                "v1",
                "namespaces",
                None,
                parts[3] if len(parts) > 3 else None,
                parts[4] if len(parts) > 4 else None,
            )
        return original(path)

    monkeypatch.setattr(parsing, "parse_path", parse_path)


@pytest.fixture
def cluster(kmock: Any, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """kmock with the built-in kinds, our three CRD kinds, and namespaces that work."""
    _patch_kmock_namespaces(monkeypatch)
    for name, value in POD_READER_ENV.items():
        monkeypatch.setenv(name, value)
    kmock.resources.load_bundled()
    for plural, kind, namespaced in (
        ("modelroutes", "ModelRoute", True),
        ("modelproviders", "ModelProvider", True),
        ("failoverpolicies", "FailoverPolicy", False),
    ):
        kmock.resources[f"modelroute.io/v1alpha1/{plural}"] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
            subresources={"status"},
        )
    return kmock
