"""Paths of the explain fixtures."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
ROUTES = HERE / "routes.yaml"
REQUESTS = HERE / "requests"
GOLDEN = HERE / "golden"
