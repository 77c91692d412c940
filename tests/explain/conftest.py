"""Shared fixtures: the explain fixture routes compiled once, as `modelroute explain` compiles them."""

from __future__ import annotations

import pytest
from modelroute.proxy.compiler import compile_local
from modelroute.proxy.table import CompiledTable

from modelroute.resources import load_files

from .helpers import ROUTES


@pytest.fixture(scope="session")
def table() -> CompiledTable:
    result = compile_local(load_files([ROUTES]))
    assert result.ok, [str(p) for p in result.errors]
    return result.table
