"""Each kind of failure is a class whose status and OpenAI code are its own (proxy/errors.py)."""

from __future__ import annotations

import re

import pytest
from modelroute.proxy import errors


def every_error_class() -> list[type[errors.ModelRouteError]]:
    found: list[type[errors.ModelRouteError]] = []
    todo = [errors.ModelRouteError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def documented() -> dict[str, tuple[str, str]]:
    """The module docstring's tree: class name -> (status, code) as written there."""
    doc = errors.__doc__ or ""
    rows = re.findall(r"[│├└─ ]*(\w+)\s+(\d{3}|4xx)\s+(?:\w+ / )?(\w+|http_<status>)", doc)
    return {name: (status, code) for name, status, code in rows}


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda c: c.__name__)
def test_the_docstring_tree_gives_each_class_its_own_status_and_code(
    cls: type[errors.ModelRouteError],
) -> None:
    rows = documented()
    assert cls.__name__ in rows, f"{cls.__name__} is missing from errors.py's tree"
    if cls is errors.HTTPRefused:  # aiohttp's own status, passed on
        refused = cls("GET /v1/x: Method Not Allowed", status=405)
        assert (refused.status, refused.code) == (405, "http_405")
        return
    assert rows[cls.__name__] == (str(cls.status), cls.code)
    error = cls("boom", route="r")
    assert error.body()["error"]["code"] == cls.code
    assert error.body()["error"]["type"] == cls.type


def test_a_call_site_cannot_restate_status_or_code() -> None:
    with pytest.raises(TypeError):
        errors.UpstreamUnavailable("x", status=504)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        errors.NoEligibleTarget("x", code="residency_violation")  # type: ignore[call-arg]


def test_only_the_try_again_errors_welcome_a_retry() -> None:
    welcome = {c for c in every_error_class() if c.retry_welcome}
    assert welcome == {errors.NotReady, errors.ShuttingDown}
