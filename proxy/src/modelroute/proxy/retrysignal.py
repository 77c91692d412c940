"""One retry layer: the signals that stop an OpenAI SDK from retrying what the sidecar already retried.

The official SDKs retry 408, 409, 429 and 5xx answers (``max_retries=2`` by
default) unless the answer carries ``x-should-retry``: ``false`` stops them,
``true`` forces a retry.  They wait ``retry-after-ms`` / ``Retry-After``
when it is given and at most 60 s, else their own backoff.

The sidecar already tries a request up to the route's ``retry.maxAttempts``
across targets and regions, within its retry budget.  An SDK retrying the
sidecar's final error repeats that whole plan: one call with the defaults
makes the upstream see three times the route's attempts, exactly the
amplification a retry budget exists to prevent.  So the contract
(docs/api.md, "One retry layer") is:

* an error after at least one upstream attempt – every attempt failed, the
  retry budget or ``totalMs`` stopped retries, the upstream's own error was
  passed through – says ``x-should-retry: false``; so does a spent route
  budget (no retry can succeed within its window);
* an error before any attempt that a later try may well get past (no table
  loaded yet, the sidecar shutting down, every candidate held by a
  Retry-After) says nothing, and the SDK's own retry applies;
* whenever the sidecar knows how long the upstream asked it to wait (a
  Retry-After hold on the candidates), the answer carries that wait in
  ``Retry-After`` (seconds, rounded up) and ``retry-after-ms``.
"""

from __future__ import annotations

import math

from . import errors

SHOULD_RETRY = "x-should-retry"


def retry_after_headers(seconds: float) -> dict[str, str]:
    """A known wait, in both headers the SDKs read (``retry-after-ms`` first)."""
    seconds = max(0.001, seconds)
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(math.ceil(seconds * 1000)),
    }


def mark_error(exc: errors.ModelRouteError, attempts: int) -> None:
    """Add the retry signal to an error on its way to the client."""
    if exc.retry_welcome:  # "try again": a retry repeats no upstream traffic
        return
    if attempts > 0 or isinstance(exc, errors.BudgetExhausted):
        exc.headers.setdefault(SHOULD_RETRY, "false")


def mark_passthrough(headers: dict[str, str]) -> None:
    """An upstream error relayed as is: the upstream was reached, the route's plan is spent."""
    headers[SHOULD_RETRY] = "false"
