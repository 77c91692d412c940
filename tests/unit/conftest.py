"""Shared inputs for the unit tests of the pure core.

``issue_example.yaml`` is the YAML from the issue, verbatim: it must parse,
compile and route, so several test modules start from it.  Fixtures (not
importable helpers) because the suite runs with ``--import-mode=importlib``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from modelroute.proxy.compiler import CompileResult, compile_local

from modelroute.resources import ResourceSet, load_text

ISSUE_EXAMPLE = (Path(__file__).parent / "issue_example.yaml").read_text(encoding="utf-8")


@pytest.fixture
def example_text() -> str:
    return ISSUE_EXAMPLE


@pytest.fixture
def load() -> Callable[[str], ResourceSet]:
    """Parse YAML text the way every entry point does (files, CLI, operator)."""

    def _load(text: str) -> ResourceSet:
        return load_text(text, "test.yaml")

    return _load


@pytest.fixture
def compile_text() -> Callable[[str], CompileResult]:
    """YAML text → compiled local table, with the problems the compiler found."""

    def _compile(text: str) -> CompileResult:
        return compile_local(load_text(text, "test.yaml"))

    return _compile
