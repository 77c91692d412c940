"""The observer fan-out calls the hooks observers use, and only those; a failing one is contained."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from modelroute.proxy.events import (
    AttemptRecord,
    Observers,
    RequestRecord,
    ShadowRecord,
    idle_hook,
)


class Counting:
    """Uses request_finished only; a call to any of its other hooks is recorded."""

    def __init__(self) -> None:
        self.finished = 0
        self.idle_calls: list[str] = []

    @idle_hook
    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        self.idle_calls.append("request_started")

    @idle_hook
    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        self.idle_calls.append("attempt_started")

    @idle_hook
    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        self.idle_calls.append("attempt_finished")

    def request_finished(self, record: RequestRecord) -> None:
        self.finished += 1

    @idle_hook
    def shadow_finished(self, record: ShadowRecord) -> None:
        self.idle_calls.append("shadow_finished")


class Everything:
    """Unmarked: every hook is called; request_finished fails."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        self.calls.append("request_started")

    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        self.calls.append("attempt_started")

    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        self.calls.append("attempt_finished")

    def request_finished(self, record: RequestRecord) -> None:
        self.calls.append("request_finished")
        raise RuntimeError("observer bug")

    def shadow_finished(self, record: ShadowRecord) -> None:
        self.calls.append("shadow_finished")


def _one_request(observers: Observers, rec: SimpleNamespace) -> None:
    attempt = rec.attempt(1, rec.FLASH)
    record = rec.request([attempt])
    observers.request_started(record, {})
    observers.attempt_started(record, attempt)
    observers.attempt_finished(record, attempt)
    observers.request_finished(record)
    observers.shadow_finished(ShadowRecord(route="general", provider="p", model="m", region="r"))


class Partial:
    """Has request_finished only (an observer may leave out the hooks it doesn't use)."""

    def __init__(self) -> None:
        self.finished = 0

    def request_finished(self, record: RequestRecord) -> None:
        self.finished += 1


def test_an_observer_without_some_hooks_gets_the_ones_it_has(rec: SimpleNamespace) -> None:
    partial = Partial()
    observers = Observers()
    observers.add(partial)  # type: ignore[arg-type]
    _one_request(observers, rec)
    assert partial.finished == 1


def test_idle_hooks_are_never_called_and_the_used_ones_are(
    caplog: pytest.LogCaptureFixture, rec: SimpleNamespace
) -> None:
    counting, everything = Counting(), Everything()
    observers = Observers([counting])
    observers.add(everything)  # added later: indexed too
    with caplog.at_level(logging.ERROR, logger="modelroute.events"):
        _one_request(observers, rec)
    assert counting.finished == 1
    assert counting.idle_calls == []  # the fan-out never called them
    assert everything.calls == [
        "request_started",
        "attempt_started",
        "attempt_finished",
        "request_finished",
        "shadow_finished",
    ]
    assert "failed in request_finished" in caplog.text  # logged, not raised
