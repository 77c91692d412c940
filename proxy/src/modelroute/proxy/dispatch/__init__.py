"""The request path: from a client's body to an upstream answer, with fallback, and accounted for.

    dispatcher  parse → features → route (classify if asked) → budget → plan
    attempts    → attempts (backoff, Retry-After, breakers, regions, retry budget, hedging)
    policy        (which candidate next, how long to wait: pure, clock passed in)
    one_attempt   → each attempt: its pool trip, body and headers, health feedback
    commit      → commit to the first upstream whose first byte arrived
                → stream or send it to the client → usage, cost, observers, shadow copy

One :class:`~.dispatcher.Dispatcher` per process routes each request (Envoy
AI Gateway's router per request) and runs one
:class:`~.attempts.AttemptLoop` for it, each of whose attempts is one
upstream request (its upstream per attempt).  Nothing is retried once a
byte went to the client.
"""

from .dispatcher import Dispatcher, Recent
from .state import (
    ATTEMPTS_HEADER,
    REASON_HEADER,
    RESPONSE_STARTED,
    ROUTE_HEADER,
    TARGET_HEADER,
    Budgets,
)

__all__ = [
    "ATTEMPTS_HEADER",
    "REASON_HEADER",
    "RESPONSE_STARTED",
    "ROUTE_HEADER",
    "TARGET_HEADER",
    "Budgets",
    "Dispatcher",
    "Recent",
]
