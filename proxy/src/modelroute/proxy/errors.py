"""The sidecar's one error hierarchy, mapped once to OpenAI's error shape.

Every failure a client can see is one of these; ``server.py`` turns any of
them into ``{"error": {"message", "type", "code", ...}}`` with the status
below, in one place (its error middleware).  Messages name the route and the
attempts made, because "503" alone tells an on-call engineer nothing.

    ModelRouteError
    ├── InvalidRequest            400  invalid_request_error
    │   ├── MalformedJSON         400  (code: invalid_json)
    │   ├── MissingModel          400  (code: missing_model)
    │   └── BodyTooLarge          413  (code: body_too_large)
    ├── UnknownModel              404  (code: model_not_found)
    ├── ResponseNotFound          404  (code: response_not_found) a response id not ours
    ├── NoEligibleTarget          400/422  every target was dropped before sending
    │                                       (capability, context window, residency)
    ├── BudgetExhausted           429  (code: budget_exceeded)
    └── UpstreamUnavailable       502/503/504/429  every attempt failed
        │                              (status follows what the attempts saw)
        └── ResponseHolderUnavailable 503  the one region that holds a response can't be used
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
        return f"{self.target}@{self.region}: {self.result}{status}{detail}"


class ModelRouteError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

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


class UnknownModel(ModelRouteError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NoEligibleTarget(ModelRouteError):
    """Every target was dropped before anything was sent (the request itself can't be served)."""

    status = 400
    type = "invalid_request_error"
    code = "no_eligible_target"

    def __init__(
        self, message: str, *, status: int = 400, code: str | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.status = status
        if code:
            self.code = code


class BudgetExhausted(ModelRouteError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class UpstreamUnavailable(ModelRouteError):
    """Every attempt failed; the status follows the failures (429 if all were rate limits, …)."""

    type = "server_error"
    code = "upstream_unavailable"

    def __init__(
        self, message: str, *, status: int = 503, code: str | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.status = status
        if code:
            self.code = code


class ResponseNotFound(ModelRouteError):
    """A response id this sidecar did not issue, altered, or whose provider endpoint is gone."""

    status = 404
    type = "invalid_request_error"
    code = "response_not_found"


class ResponseHolderUnavailable(UpstreamUnavailable):
    """A follow-up's response lives in one region, and that region can't be used now."""

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, status=503, code="response_holder_unavailable", **kw)


def attempts_text(attempts: Sequence[AttemptSummary]) -> str:
    if not attempts:
        return "no attempt was made"
    return f"{len(attempts)} attempt(s): " + "; ".join(str(a) for a in attempts)
