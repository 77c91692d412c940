"""One provider's connection pool: a limit, a FIFO queue at the limit, keep-alive reuse.

The pool owns slots, not bytes: a slot is taken by a connection lent out or
being made, and a freed slot passes straight to the next caller in line, so
nobody is starved by newcomers.  Opening a connection is ``connection.py``,
speaking HTTP/1.1 on it ``http11.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import Mapping

from .connection import open_connection
from .egress import NO_EGRESS, EgressPolicy
from .errors import ConnectFailed, PathSilent, RequestNotSent
from .http11 import HTTP11Connection, Response
from .origin import Origin, encode_headers, origin_of, request_target
from .transport import PoolWait


class ConnectionPool:
    """One provider's connections: at most ``limit`` in use, the rest of the callers queue.

    Idle keep-alive connections are reused newest first and closed once idle
    for ``keepalive`` seconds.  The queue is FIFO and a freed slot is handed
    straight to the next waiter, so no caller can be starved by newcomers.
    """

    def __init__(
        self,
        limit: int,
        *,
        connect_timeout: float,
        keepalive: float = 30.0,
        default_headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        egress: EgressPolicy = NO_EGRESS,
    ) -> None:
        self.limit = limit
        self.egress = egress  # which connections go through a forward proxy (egress.py)
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._default_headers = encode_headers(default_headers or {})
        self._ssl = ssl_context
        self._busy = 0  # slots taken: connections lent out or being made
        self._idle: dict[tuple[str, int, bool], list[HTTP11Connection]] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._last_sweep = time.monotonic()
        self._closed = False  # refuses new requests
        self._retired = False  # keeps no idle connections (a reload replaced this pool)

    @property
    def in_use(self) -> int:
        return self._busy

    @property
    def retired(self) -> bool:
        """Replaced by a reload: it serves its last requests and keeps no connection."""
        return self._retired

    @property
    def idle(self) -> int:
        """Keep-alive connections waiting for a request."""
        return sum(len(conns) for conns in self._idle.values())

    @property
    def queued(self) -> int:
        """Requests waiting for a connection because ``limit`` are in use."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    def full(self) -> bool:
        """Would a request asking now have to queue for a connection?"""
        return self._busy >= self.limit or bool(self._waiters)

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        wait: PoolWait | None = None,
        method: bytes = b"POST",
    ) -> Response:
        r"""Send ``POST base_url+path`` and return once the answer's status and headers are in.

        ``method`` is for the Responses API's follow-ups (``GET``/``DELETE`` on a stored
        response); a ``path`` with its own query joins the base URL's with ``&``.

        ``wait``, when given, is filled in with whether the request had to
        queue for a connection and whether it got one.

        Raises only kinds of :class:`~.errors.UpstreamError` (and the caller's
        cancellation); :class:`~.errors.RequestNotSent` when nothing was sent because
        no request can carry what was given, or the key must not go where it points.
        """
        origin = origin_of(base_url)
        target = request_target(origin, path)
        via = b""
        if not origin.tls:  # plain HTTP through a proxy: the request names its origin in full
            proxy = self.egress.proxy_for(origin.host, origin.port, False)
            if proxy is not None:
                target = b"http://" + origin.host_header + target
                try:
                    auth = proxy.authorization()
                except OSError as exc:  # its credentials can't be read: nothing is sent
                    raise ConnectFailed(str(exc), network=False) from None
                except ValueError as exc:  # ... or can't be encoded
                    raise RequestNotSent(str(exc)) from None
                via = encode_headers({"Proxy-Authorization": auth}) if auth else b""
        head = b"".join(
            (
                method,
                b" ",
                target,
                b" HTTP/1.1\r\nHost: ",
                origin.host_header,
                b"\r\n",
                self._default_headers,
                via,
                encode_headers(headers),
                b"Content-Length: %d\r\n\r\n" % len(body),
            )
        )
        if wait is not None:
            wait.queued = self.full()
        conn = await self._acquire(origin, wait)
        if wait is not None:
            wait.connected = True
            if wait.on_connected is not None:
                wait.on_connected()
        answer = conn.send(head + body, wait.silence_watch if wait is not None else None)
        try:
            return await answer
        except PathSilent:
            # the path to this origin is dead: its other idle connections ride the same one,
            # and a request handed one would be written into the silence too
            conn.close()
            self.release(conn)
            self.drop_idle(base_url)
            raise
        except BaseException:
            # cancelled in the very iteration the headers arrived: the answer exists but was
            # never handed out, so it must not give the slot back a second time when collected
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                answer.result()._released = True
            conn.close()
            self.release(conn)
            raise

    # -- slots and connections -------------------------------------------------------------------

    async def _acquire(self, origin: Origin, wait: PoolWait | None) -> HTTP11Connection:
        if self._closed:
            raise ConnectFailed(
                "the sidecar is shutting down its upstream connections", network=False
            )
        if self.full():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._free_slot()  # handed a slot just as we gave up: pass it on
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        else:
            self._busy += 1
        try:
            if wait is not None and wait.abandoned:  # gave up while queued: connect nothing
                raise _abandoned()
            conn = self._take_idle(origin)
            if conn is not None:
                return conn
            if wait is None:
                return await self._connect(origin)
            wait.connecting = True
            started = time.perf_counter()
            conn = await self._connect(origin)
            wait.connect_seconds = time.perf_counter() - started
            if wait.abandoned:  # another attempt won the connect race meanwhile: nothing is sent
                conn.close()
                raise _abandoned()
            return conn
        except BaseException:
            self._free_slot()
            raise

    def has_idle(self, base_url: str) -> bool:
        """Is a kept-alive connection to ``base_url``'s origin waiting (no connect needed)?

        Read before an attempt starts (the attempt loop races only attempts that
        must connect), with the very test :meth:`_take_idle` applies, so a
        kept-alive connection already known closed or stale does not hide a
        connect.  A reset not yet seen by the loop shows as a failed send, fast.
        """
        now = time.monotonic()
        return any(self._usable(c, now) for c in self._idle.get(origin_of(base_url).peer, ()))

    def drop_idle(self, base_url: str) -> int:
        """Close the kept-alive connections to ``base_url``'s origin; how many there were.

        For an origin found dead (a silent request, an ejected endpoint): a
        connection kept from before would be handed to the next request there
        and written into the same silence, where a new connect is raced.
        """
        idle = self._idle.pop(origin_of(base_url).peer, [])
        for conn in idle:
            conn.close()
        return len(idle)

    def _usable(self, conn: HTTP11Connection, now: float) -> bool:
        return not conn.closed and now - conn.idle_since < self.keepalive and conn.open()

    def _take_idle(self, origin: Origin) -> HTTP11Connection | None:
        idle = self._idle.get(origin.peer)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if self._usable(conn, now):
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin) -> HTTP11Connection:
        return await open_connection(
            lambda: HTTP11Connection(self, origin),
            origin,
            proxy=self.egress.proxy_for(origin.host, origin.port, origin.tls),
            ssl_context=self._ssl,
            connect_timeout=self.connect_timeout,
        )

    def release(self, conn: HTTP11Connection) -> None:
        """Take a lent connection back: keep it if it can carry another request, else close it."""
        if conn.reusable() and not self._retired:
            conn.idle_since = now = time.monotonic()
            conn.park()
            conn.resume_reading()
            self._idle.setdefault(conn.origin.peer, []).append(conn)
            if now - self._last_sweep > self.keepalive / 2:
                self._sweep(now)
        else:
            conn.close()
        self._free_slot()

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the next in line
                return
        self._busy -= 1

    def forget(self, conn: HTTP11Connection) -> None:
        """A connection closed: if it sat idle, drop it from the idle list."""
        idle = self._idle.get(conn.origin.peer)
        if idle and conn in idle:
            idle.remove(conn)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for idle in self._idle.values():
            stale = [c for c in idle if now - c.idle_since >= self.keepalive]
            for conn in stale:
                idle.remove(conn)
                conn.close()

    def retire(self) -> None:
        """Keep no connection past its current request; queued requests still get served."""
        self._retired = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def close(self) -> None:
        """Retire, and fail the queued requests and any new one: the sidecar is stopping."""
        self._closed = True
        self.retire()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    ConnectFailed("the sidecar closed its upstream connections", network=False)
                )


def _abandoned() -> ConnectFailed:
    """The end of an attempt another one beat to a connection (connect racing): nothing sent."""
    return ConnectFailed("abandoned: another attempt had a connection first", network=False)
