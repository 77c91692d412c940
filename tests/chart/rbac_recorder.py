"""pytest plugin: record every request the operator sent to kmock while a test ran.

Loaded by ``tests/chart/test_rbac.py`` into a child pytest that runs the operator
tests (``-p rbac_recorder`` with this directory on ``PYTHONPATH``).  After each
test it appends what its kmock server saw to the JSON-lines file named by
``$MODELROUTE_RBAC_RECORD``: only requests carrying the operator's credentials
(the kubeconfig's bearer token), so the tests' own set-up calls are not counted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

RECORD_ENV = "MODELROUTE_RBAC_RECORD"
OPERATOR_AUTH = "Bearer test-token"  # tests/operator/conftest.py's kubeconfig


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # Remember the emulator now: funcargs are gone once the fixtures are torn down.
    kmock = getattr(item, "funcargs", {}).get("kmock")
    if kmock is not None:
        item.stash[_KMOCK] = kmock
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield  # after fixture teardown: an operator run by a fixture has stopped by now
    kmock = item.stash.get(_KMOCK, None)
    path = os.environ.get(RECORD_ENV)
    if kmock is None or not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        for r in list(kmock._requests):  # kmock 0.8 keeps its request log private
            if r.headers.get("Authorization") != OPERATOR_AUTH:
                continue
            line: dict[str, Any] = {
                "test": item.nodeid,
                "method": str(r.method).upper().rsplit(".", 1)[-1],
                "path": r.url.path,
                "query": dict(r.url.query),
            }
            out.write(json.dumps(line) + "\n")


_KMOCK = pytest.StashKey[Any]()
