"""The sidecar's one error hierarchy, mapped once to OpenAI's error shape.

Every failure a client can see is one of these; ``server.py`` turns any of
them into ``{"error": {"message", "type", "code", ...}}`` with the status
below, in one place (its error middleware, through :meth:`ModelRouteError.body`).
A kind of failure is a class, and its HTTP status, OpenAI ``type`` and
``code`` are class attributes: the call site says *what* went wrong, never
which status that is.  Messages name the route and the attempts made,
because "503" alone tells an on-call engineer nothing.

    ModelRouteError                   500  server_error / internal_error
    ├── InvalidRequest                400  invalid_request_error / invalid_request
    │   ├── MalformedJSON             400  invalid_json
    │   ├── MissingModel              400  missing_model
    │   ├── BodyTooLarge              413  body_too_large
    │   └── HTTPRefused               4xx  http_<status>: aiohttp refused the method or path
    ├── NotFound                      404  not_found: no such API path
    ├── UnknownModel                  404  model_not_found
    ├── ResponseNotFound              404  response_not_found: a response id not ours
    ├── NoEligibleTarget              400  no_eligible_target: every target was dropped
    │   │                                  before sending (the request can't be served)
    │   ├── ContextLengthExceeded     400  context_length_exceeded
    │   ├── ResidencyViolation        422  residency_violation
    │   └── PreviousResponseElsewhere 400  previous_response_elsewhere
    ├── BudgetExhausted               429  insufficient_quota / budget_exceeded
    └── UpstreamUnavailable           503  server_error / upstream_unavailable: every attempt failed
        ├── InvalidUpstreamAnswer     502  upstream_unavailable (an attempt got a broken answer)
        ├── UpstreamTimeout           504  upstream_timeout (every attempt timed out)
        ├── TimedOut                  504  timeout (the deadline passed before any verdict)
        ├── RateLimited               429  rate_limited (every attempt was rate limited or held)
        ├── NotReady                  503  not_ready: no route table loaded yet
        ├── ShuttingDown              503  shutting_down: past the drain
        ├── MissingProviderKey        503  credentials: no key to forward a follow-up with
        └── ResponseHolderUnavailable 503  response_holder_unavailable: the one region
                                           that holds a response can't be used

The upstream client keeps a tree of its own (``upstream/errors.py``:
``UpstreamError`` – request not sent, connect failed, disconnected, bad
response).  Those never reach a client as such: ``attempt.py`` turns each into
a failure kind of one attempt, and what the client hears is the verdict over
all attempts, an ``UpstreamUnavailable`` (or one of its kinds) listing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .keys import at_region
from .outcomes import AttemptResult


@dataclass(frozen=True, slots=True)
class AttemptSummary:
    """One upstream attempt as an error message lists it."""

    target: str  # provider/model
    region: str
    result: AttemptResult
    status: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        status = f" {self.status}" if self.status else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{at_region(self.target, self.region)}: {self.result}{status}{detail}"


class ModelRouteError(Exception):
    """Something the client is told, with its status and OpenAI error fields fixed by the class."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"
    retry_welcome: bool = False
    """A retry of this error repeats no upstream traffic (``x-should-retry`` stays unset)."""

    def __init__(
        self,
        message: str,
        *,
        route: str | None = None,
        attempts: Sequence[AttemptSummary] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.route = route
        self.attempts = tuple(attempts)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error object, plus modelroute's own context the SDK passes through."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "param": None,
        }
        if self.route is not None:
            error["route"] = self.route
        if self.attempts:
            error["attempts"] = [str(a) for a in self.attempts]
        return {"error": error}


class InvalidRequest(ModelRouteError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class MalformedJSON(InvalidRequest):
    code = "invalid_json"


class MissingModel(InvalidRequest):
    code = "missing_model"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "body_too_large"


class HTTPRefused(InvalidRequest):
    """aiohttp refused the request before any handler ran (a wrong method, say).

    The one error whose status is the instance's: it is aiohttp's, passed on.
    """

    def __init__(self, message: str, *, status: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.code = f"http_{status}"


class NotFound(ModelRouteError):
    """No such API path."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class UnknownModel(ModelRouteError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NoEligibleTarget(ModelRouteError):
    """Every target was dropped before anything was sent (the request itself can't be served)."""

    status = 400
    type = "invalid_request_error"
    code = "no_eligible_target"


class ContextLengthExceeded(NoEligibleTarget):
    """The request fits no target's context window (or every target said so)."""

    code = "context_length_exceeded"


class ResidencyViolation(NoEligibleTarget):
    """No target may serve from the regions the route's residency allows."""

    status = 422
    code = "residency_violation"


class PreviousResponseElsewhere(NoEligibleTarget):
    """A follow-up's response lives where this route has no target."""

    code = "previous_response_elsewhere"


class BudgetExhausted(ModelRouteError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class UpstreamUnavailable(ModelRouteError):
    """Every attempt failed; the subclass says how (rate limits, timeouts, a broken answer, …)."""

    status = 503
    type = "server_error"
    code = "upstream_unavailable"


class InvalidUpstreamAnswer(UpstreamUnavailable):
    """Every attempt failed, at least one with an answer that wasn't a valid response."""

    status = 502


class UpstreamTimeout(UpstreamUnavailable):
    """Every attempt timed out."""

    status = 504
    code = "upstream_timeout"


class TimedOut(UpstreamUnavailable):
    """The request's deadline passed before any attempt reached a verdict."""

    status = 504
    code = "timeout"


class RateLimited(UpstreamUnavailable):
    """Every attempt was rate limited, or every candidate is holding off after a Retry-After."""

    status = 429
    code = "rate_limited"


class NotReady(UpstreamUnavailable):
    """No route table is loaded yet (starting, or the table source is unreachable)."""

    code = "not_ready"
    retry_welcome = True


class ShuttingDown(UpstreamUnavailable):
    """The sidecar is past its drain: nothing new starts an upstream attempt."""

    code = "shutting_down"
    retry_welcome = True


class MissingProviderKey(UpstreamUnavailable):
    """A follow-up can't be forwarded: there is no key for the provider that holds it."""

    code = "credentials"


class ResponseNotFound(ModelRouteError):
    """A response id this sidecar did not issue, altered, or whose provider endpoint is gone."""

    status = 404
    type = "invalid_request_error"
    code = "response_not_found"


class ResponseHolderUnavailable(UpstreamUnavailable):
    """A follow-up's response lives in one region, and that region can't be used now."""

    code = "response_holder_unavailable"


def attempts_text(attempts: Sequence[AttemptSummary]) -> str:
    if not attempts:
        return "no attempt was made"
    return f"{len(attempts)} attempt(s): " + "; ".join(str(a) for a in attempts)
