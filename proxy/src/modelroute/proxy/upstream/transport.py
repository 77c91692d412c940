"""What the sidecar asks of the hop to one provider: the transport protocol.

The attempt, the mirror, the follow-ups and the per-provider pools depend on
these protocols, not on the lean client behind them.
:class:`~.connection_pool.ConnectionPool` is the one implementation.  A second
one (an HTTP/2 client, a client on another library to measure against)
implements :class:`Transport`, proves it by running the conformance tests in
``tests/proxy/upstream/`` (it joins ``TRANSPORTS`` in that folder's
``conftest.py``), and is handed to :class:`~.providers.UpstreamPool` as its
``transport`` factory.

The contract beyond the signatures, each point held by a conformance test:

* ``post`` returns once the answer's status and headers are in, and raises
  only kinds of :class:`~.errors.UpstreamError` (and the caller's
  cancellation); ``RequestNotSent`` and ``ConnectFailed`` mean nothing reached
  the upstream, ``Disconnected`` and ``BadResponse`` that its answer broke;
* at most ``limit`` connections are in use, callers beyond it queue in order,
  and no cancelled caller (queued, or waiting for its answer) leaks a slot;
* keep-alive connections are reused; a redirect is an answer, never followed;
  gzip/deflate bodies arrive decoded; a slow reader holds the upstream back
  instead of the body being buffered whole;
* every response is released by its caller (``release``); one dropped unreleased gives
  its slot back when it is collected.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Protocol

from .egress import EgressPolicy


class PoolWait:
    """What one request's trip through the pool looked like, and the caller's say in it.

    A caller's timeout that fires while the request still waits for a free
    connection (the provider's ``maxConnections`` are all busy, e.g. with long
    streams) says nothing about the upstream's health; one that fires after it
    got a connection does.

    The connect-race fields (docs/failover.md, "Connect racing"): the pool
    says when it opens a new connection (``connecting``) and how long that
    took (``connect_seconds``), and calls ``on_connected`` once a connection
    is in hand, *before* a byte of the request is written; a caller that set
    ``abandoned`` by then gets no request sent – the fresh connection is
    closed (never pooled half-used) and ``post`` raises ``ConnectFailed``
    with ``network`` false.  One that set it while still queued for a slot
    gets no connection made at all (the slot passes on at once).

    ``silence_watch`` (docs/failover.md, "In-flight rescue"): once the
    request is written, the pool looks at the socket's ``TCP_INFO`` that
    often; a request the peer's TCP never acknowledged (no ACK of any kind,
    the kernel's retransmission timer backed off) ends ``post`` with
    ``PathSilent``, and the origin's idle connections are closed.
    """

    __slots__ = (
        "abandoned",
        "connect_seconds",
        "connected",
        "connecting",
        "on_connected",
        "queued",
        "silence_watch",
    )

    def __init__(self, on_connected: Callable[[], None] | None = None) -> None:
        self.queued = False  # the pool had no free connection when the request asked
        self.connected = False  # the request got its connection
        self.connecting = False  # no idle connection: a new one is being made for it
        self.connect_seconds: float | None = None  # how long making it took, once made
        self.abandoned = False  # set by the caller: send nothing, close the connection
        self.on_connected = on_connected
        # set by the caller: look this often (seconds) whether the written request sits
        # unacknowledged on a dead path (silence.py); ``post`` then raises PathSilent
        self.silence_watch: float | None = None

    @property
    def stuck_in_queue(self) -> bool:
        return self.queued and not self.connected

    @property
    def in_connect(self) -> bool:
        """Making a new connection right now (not queued for a slot, not sending)."""
        return self.connecting and not self.connected and self.connect_seconds is None


class ResponseBody(Protocol):
    """An answer's body, read as it arrives."""

    def at_eof(self) -> bool: ...

    async def readany(self) -> bytes:
        """Whatever has arrived (waiting for something), or ``b""`` at the end of the body."""
        ...

    async def read(self, limit: int = -1) -> bytes:
        """The rest of the body (at most ``limit`` bytes when given)."""
        ...


class UpstreamResponse(Protocol):
    """An answer's status and headers (names lower-case); its body streams from ``content``."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> ResponseBody: ...

    async def read(self) -> bytes: ...

    def release(self) -> None:
        """Give the connection back (kept alive if the answer was read whole) or close it."""
        ...


class Transport(Protocol):
    """One provider's connections, as the sidecar uses them."""

    @property
    def limit(self) -> int:
        """The most connections in use at once (the provider's ``maxConnections``)."""
        ...

    @property
    def in_use(self) -> int: ...

    @property
    def idle(self) -> int: ...

    @property
    def queued(self) -> int: ...

    @property
    def retired(self) -> bool: ...

    def full(self) -> bool:
        """Would a request asking now have to queue for a connection?"""
        ...

    def has_idle(self, base_url: str) -> bool:
        """Is a kept-alive connection to ``base_url``'s origin waiting (no connect needed)?"""
        ...

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        wait: PoolWait | None = None,
        method: bytes = b"POST",
    ) -> UpstreamResponse:
        """Send ``method base_url+path`` and return once the answer's status and headers are in."""
        ...

    def drop_idle(self, base_url: str) -> int:
        """Close the kept-alive connections to ``base_url``'s origin (found dead); how many."""
        ...

    def retire(self) -> None:
        """Keep no connection past its current request; queued requests still get served."""
        ...

    def close(self) -> None:
        """Fail the queued requests and any new one: the sidecar is stopping."""
        ...


class TransportFactory(Protocol):
    """How a transport is made for one provider (``ConnectionPool`` itself is one)."""

    def __call__(
        self,
        limit: int,
        *,
        connect_timeout: float,
        keepalive: float = ...,
        default_headers: Mapping[str, str] | None = ...,
        ssl_context: ssl.SSLContext | None = ...,
        egress: EgressPolicy = ...,
    ) -> Transport: ...
