"""The upstream client's one error tree: what went wrong on the way to or from a provider.

None of these reaches a client as such.  ``attempt.py`` turns each into a
failure kind (``Failure``: ``connect``, ``invalid_response``, …), the
dispatcher decides over all attempts, and what a client sees is one of the
sidecar's own errors (``errors.py``: ``UpstreamUnavailable``)::

    UpstreamError
    ├── RequestNotSent      nothing was sent: a value no HTTP request can carry (also a ValueError)
    │   └── ConnectRefused  a host the provider key must not go to (guard.py)
    ├── ConnectFailed       no connection: DNS, refused, TLS, connect timeout – nothing was sent
    ├── Disconnected        the connection closed before the answer was complete
    ├── PathSilent          the request was written and the peer's TCP never acknowledged it
    └── BadResponse         bytes that are not HTTP we can follow (parse error, unknown encoding)

``RequestNotSent`` is the sidecar's configuration at fault, or the app's
(a base URL that is not http(s), a header with a line break): the upstream
was never asked, so its health is not in question (``Failure.NOT_SENT``).
It stays a ``ValueError`` too, because that is what it is – a value refused.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Anything that went wrong on the way to or from a provider."""


class RequestNotSent(UpstreamError, ValueError):
    """A request the client refuses to put on the wire; nothing was sent."""


class ConnectFailed(UpstreamError):
    """No connection was made; the request was never sent.

    ``network`` says the network refused (refused, reset, DNS, TLS, a
    timeout): a fact about the endpoint that its outlier detection counts
    (``endpoints.py``).  False when the sidecar itself declined – shutting
    down, no proxy credentials to read.  ``timed_out``: the connect did not
    complete within the provider's connect timeout (a black hole, not a refusal).
    """

    def __init__(self, message: str, *, network: bool = True, timed_out: bool = False) -> None:
        super().__init__(message)
        self.network = network
        self.timed_out = timed_out


class Disconnected(UpstreamError):
    """The connection closed (or broke) before the whole answer arrived."""


class PathSilent(UpstreamError):
    """The request was written, and the peer's TCP never acknowledged it (``silence.py``).

    A fact about the network path, like a connect timeout: on a two-way black
    hole the upstream never saw the request.  ``seconds`` since it was written.
    """

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class PathDied(UpstreamError):
    """The path went dark after the request was acknowledged (``tcp_keepalive.py``).

    The kernel's keepalive probes went unanswered while the answer was awaited.
    Unlike :class:`PathSilent` the upstream may have the request, so it is a
    timeout that came early, never "not sent".  ``seconds`` since it was written.
    """

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class BadResponse(UpstreamError):
    """The upstream's bytes are not an HTTP answer this client can follow."""
