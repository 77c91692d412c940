"""How an upstream's answer is judged: ``Retry-After`` and status → failure kind.

The kind decides what happens next: fall over to the next candidate (and
count against the breaker) or hand the upstream's own 4xx to the client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from modelroute.proxy.attempt import classify_status, parse_retry_after
from modelroute.proxy.outcomes import Failure

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),  # never negative
        ("999999", 3600.0),  # capped: one bad header can't park a target for days
    ],
)
def test_retry_after_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_retry_after_http_date() -> None:
    later = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)
    assert parse_retry_after(format_datetime(later, usegmt=True), NOW) == pytest.approx(30.0)
    assert parse_retry_after("Wed, 25 Nov 2026 12:00:45 GMT", NOW) == pytest.approx(45.0)
    assert parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", NOW) == 0.0  # in the past


@pytest.mark.parametrize("header", [None, "", "soon", "Someday, 99 Foo 2026", "1e"])
def test_retry_after_junk_is_ignored(header: str | None) -> None:
    assert parse_retry_after(header, NOW) is None


@pytest.mark.parametrize("header", ["nan", "inf", "-inf", "NaN"])
def test_retry_after_non_finite_numbers_are_ignored(header: str) -> None:
    value = parse_retry_after(header, NOW)
    assert value is None or 0.0 <= value <= 3600.0, value


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, b"", Failure.RATE_LIMITED),
        (500, b"", Failure.SERVER_ERROR),
        (502, b"<html>bad gateway</html>", Failure.SERVER_ERROR),
        (503, b"", Failure.SERVER_ERROR),
        (504, b"", Failure.SERVER_ERROR),
        (408, b"", Failure.TIMEOUT),
        (401, b'{"error":{"message":"bad key"}}', Failure.AUTH),
        (403, b"", Failure.AUTH),
        (404, b'{"error":{"message":"model not found"}}', Failure.MODEL_MISSING),
        (
            400,
            b'{"error":{"message":"This model\'s maximum context length is 8192 tokens",'
            b'"code":"context_length_exceeded"}}',
            Failure.CONTEXT_LENGTH,
        ),
        (400, b'{"error":{"message":"Maximum context length exceeded"}}', Failure.CONTEXT_LENGTH),
        (413, b"prompt exceeds the context window", Failure.CONTEXT_LENGTH),
        (400, b'{"error":{"message":"temperature must be <= 2"}}', Failure.PASSTHROUGH),
        (422, b'{"detail":"bad field"}', Failure.PASSTHROUGH),
        (409, b"", Failure.PASSTHROUGH),
    ],
)
def test_classify_status(status: int, body: bytes, kind: Failure) -> None:
    assert classify_status(status, body) is kind


def test_which_failures_fall_over_and_count_against_health() -> None:
    for kind in (Failure.CONNECT, Failure.TIMEOUT, Failure.SERVER_ERROR, Failure.RATE_LIMITED):
        assert kind.upstream_unhealthy
    for kind in (Failure.PASSTHROUGH, Failure.CONTEXT_LENGTH, Failure.AUTH, Failure.CREDENTIALS):
        assert not kind.upstream_unhealthy  # the request or our key, not the upstream's health
    assert not Failure.CONNECT.reached_upstream and not Failure.CREDENTIALS.reached_upstream
    assert Failure.SERVER_ERROR.reached_upstream


def test_failure_values_are_the_route_retry_on_kinds() -> None:
    from modelroute.resources import FailureKind

    for kind in FailureKind:
        assert Failure(kind.value).value == kind.value
