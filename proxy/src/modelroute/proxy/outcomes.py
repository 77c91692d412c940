"""The closed vocabularies of what happened: to an attempt, to a request, to a shadow copy.

Each is a ``StrEnum`` whose values are the strings the metrics' labels, the
spans' attributes, ``/explain``'s JSON and the error messages have always
carried, so typing them changes no byte anyone reads, and a misspelt
``"client_close"`` is a type error rather than a new label value on a
dashboard.  Pure: no aiohttp, so the records in :mod:`.events` (and
``modelroute explain``) can name them without importing the HTTP side.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    """Why an attempt failed; the values are the ``result`` label and ``retryOn`` kinds."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    RATE_LIMITED = "429"
    SERVER_ERROR = "5xx"
    CONTEXT_LENGTH = "context-length"
    INVALID_RESPONSE = "invalid_response"
    AUTH = "auth"  # our provider key was refused: another provider may still serve
    MODEL_MISSING = "model_missing"  # the upstream doesn't know the model: likewise
    PASSTHROUGH = "client_error"  # the upstream judged the request itself bad: tell the client
    CREDENTIALS = "credentials"  # no key to send: nothing was sent
    POOL_FULL = "pool_full"  # no free connection to the provider in time: nothing was sent
    NOT_SENT = "not_sent"  # a base URL or header value no HTTP request can carry: nothing was sent

    @property
    def reached_upstream(self) -> bool:
        """Did the upstream do work for this attempt?  (Retry budgets don't charge connect errors.)"""
        return self not in (
            Failure.CONNECT,
            Failure.CREDENTIALS,
            Failure.POOL_FULL,
            Failure.NOT_SENT,
        )

    @property
    def upstream_unhealthy(self) -> bool:
        """Does this failure count against the candidate's breaker and region health?"""
        return self in (
            Failure.CONNECT,
            Failure.TIMEOUT,
            Failure.SERVER_ERROR,
            Failure.INVALID_RESPONSE,
            Failure.RATE_LIMITED,
        )


class AttemptEnd(StrEnum):
    """How an attempt ended when it did not fail (a failure is a :class:`Failure`)."""

    PENDING = "pending"  # still running
    OK = "ok"  # its answer was served
    HEDGE_LOST = "hedge_lost"  # another attempt answered first
    RACE_LOST = "race_lost"  # still connecting when another attempt had a connection: never sent
    CANCELLED = "cancelled"  # the request ended (another answer, a deadline) while it ran
    CLIENT_CLOSED = "client_closed"  # served, and the client hung up mid-answer
    STREAM_ERROR = "stream_error"  # served, and the upstream broke off mid-stream


AttemptResult = AttemptEnd | Failure
"""An attempt's ``result`` label: how it ended, or why it failed."""


class RequestOutcome(StrEnum):
    """A request's ``outcome`` label."""

    PENDING = "pending"
    OK = "ok"
    ERROR = "error"  # ours or every upstream's fault: 5xx (and budget/rate-limit 429s)
    REJECTED = "rejected"  # the request itself was refused: 4xx
    CLIENT_CLOSED = "client_closed"  # the client hung up before the answer was complete
    STREAM_ERROR = "stream_error"  # the served upstream broke off mid-stream


class ShadowOutcome(StrEnum):
    """A mirrored copy's ``outcome`` label."""

    PENDING = "pending"
    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"  # the mirror's concurrency bound was reached: not sent
