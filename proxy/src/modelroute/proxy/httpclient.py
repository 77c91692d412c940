"""A lean HTTP/1.1 client for the hop to the providers: keep-alive pools and nothing more.

Why not aiohttp's ``ClientSession`` (which the sidecar used before): it is a
general client, and the generality is paid on every request – a request
object, a connector lease, trace hooks, cookie handling, a multidict per
header set, a redirect loop.  Measured on the bench machine, a bare aiohttp
pass-through spends ~200 µs of CPU per request and ~100 µs of that is the
client; the same pass-through with this client spends ~100 µs.  A sidecar
pays that on every request of every pod, and at 20 concurrent connections the
slowest request waits for the CPU of all the others, so it shows at p99.

What it does, all of it: one pool per provider with a connection limit and a
FIFO queue when the limit is reached, keep-alive reuse (idle connections
closed after ``keepalive`` seconds), HTTPS through the loop's TLS, a connect
timeout, framing by ``httptools`` (llhttp, the parser behind uvicorn and
Node.js: Content-Length, chunked, read-until-close), gzip/deflate bodies
decoded, and read flow control (a slow reader pauses the socket instead of
buffering a whole stream).  Egress through an HTTP forward proxy (CONNECT
tunnels for https, absolute-form requests for http) follows ``egress.py``.
What it leaves out on purpose: redirects (the
sidecar must never follow one with a provider key), cookies,
HTTP/2, ``Expect: 100-continue``.

The one error tree of this module (``attempt.py`` turns each into a failure
kind; none of them reaches a client as such)::

    UpstreamError
    ├── ConnectFailed   no connection: DNS, refused, TLS, connect timeout – nothing was sent
    ├── Disconnected    the connection closed before the answer was complete
    └── BadResponse     bytes that are not HTTP we can follow (parse error, unknown encoding)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import socket
import ssl
import time
import typing
import zlib
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools

from .egress import NO_EGRESS, EgressPolicy, ForwardProxy, open_tunnel
from .egress_guard import check_resolved

READ_PAUSE_BYTES = 256 * 1024  # a reader this far behind pauses the socket until it reads
# an answer's headers together (aiohttp capped each field at 8 KiB)
MAX_HEADER_BYTES = 64 * 1024
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before trying the next address family (aiohttp's too)


class UpstreamError(Exception):
    """Anything that went wrong on the way to or from a provider."""


class ConnectFailed(UpstreamError):
    """No connection was made; the request was never sent."""


class Disconnected(UpstreamError):
    """The connection closed (or broke) before the whole answer arrived."""


class BadResponse(UpstreamError):
    """The upstream's bytes are not an HTTP answer this client can follow."""


class PoolWait:
    """What one request's trip through the pool looked like.

    A caller's timeout that fires while the request still waits for a free
    connection (the provider's ``maxConnections`` are all busy, e.g. with long
    streams) says nothing about the upstream's health; one that fires after it
    got a connection does.
    """

    __slots__ = ("connected", "queued")

    def __init__(self) -> None:
        self.queued = False  # the pool had no free connection when the request asked
        self.connected = False  # the request got its connection

    @property
    def stuck_in_queue(self) -> bool:
        return self.queued and not self.connected


class Origin(NamedTuple):
    """Where a base URL points; connections are shared by every base URL with the same ``peer``."""

    host: str
    port: int
    tls: bool
    host_header: bytes
    path_prefix: str
    query: str  # "" or "?..." kept from the base URL (e.g. Azure's ?api-version=)

    @property
    def peer(self) -> tuple[str, int, bool]:
        """What a connection is to: Azure's per-deployment base URLs on one host share them."""
        return (self.host, self.port, self.tls)


@functools.lru_cache(maxsize=256)
def origin_of(base_url: str) -> Origin:
    """Parse a provider's base URL once (a handful of distinct URLs serve every request)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    default = port == (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = (shown if default else f"{shown}:{port}").encode("ascii")
    query = f"?{parts.query}" if parts.query else ""
    return Origin(host, port, tls, host_header, parts.path.rstrip("/"), query)


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} holds a line break or colon; refusing to send it")
        lines.append(f"{name}: {value}\r\n")
    # surrogateescape: a byte the app sent that isn't UTF-8 (aiohttp's server decodes headers
    # that way) goes upstream as the app sent it, instead of failing the request here
    return "".join(lines).encode("utf-8", "surrogateescape")


class Body:
    """An answer's body as it arrives: buffered up to a bound, then the socket is paused."""

    __slots__ = ("_chunks", "_conn", "_decoder", "_encoding", "_eof", "_error", "_size", "_waiter")

    def __init__(self, conn: _Connection, encoding: str | None) -> None:
        self._conn = conn
        self._encoding = encoding  # "gzip" or "deflate" to decode, None for identity
        self._decoder: zlib._Decompress | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- fed by the connection -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._encoding is not None:
            if self._decoder is None:
                self._decoder = _decoder_for(self._encoding, data)
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self.fail(BadResponse(f"the body does not decode as its Content-Encoding: {exc}"))
                return
            if not data:
                return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > READ_PAUSE_BYTES:
            self._conn.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                self.fail(BadResponse(f"the body does not decode as its Content-Encoding: {exc}"))
                return
            if tail:
                self._chunks.append(tail)
                self._size += len(tail)
        self._eof = True
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if not self._eof and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the caller ----------------------------------------------------------------------

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def readany(self) -> bytes:
        """Whatever has arrived (waiting for something), or ``b""`` at the end of the body."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            await self._wait()
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:
            data = b"".join(self._chunks)
            self._chunks.clear()
        self._size = 0
        self._conn.resume_reading()
        return data

    async def read(self, limit: int = -1) -> bytes:
        """The rest of the body (at most ``limit`` bytes when given; the rest is left unread)."""
        parts: list[bytes] = []
        size = 0
        while limit < 0 or size < limit:
            chunk = await self.readany()
            if not chunk:
                break
            if 0 <= limit < size + len(chunk):
                chunk = chunk[: limit - size]
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)


def _decoder_for(encoding: str, first: bytes) -> zlib._Decompress:
    """A decompressor for the body, chosen once its first bytes are in."""
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    # "deflate" means zlib-wrapped (RFC 9110), but some servers send raw DEFLATE; the zlib
    # header is a deflate method nibble and a 16-bit check that is a multiple of 31
    wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
    return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)


class Response:
    """Status and headers of an answer; its body streams from :attr:`content`.

    Header names are lower-case (``headers["content-type"]``).  The caller must
    :meth:`release` it: that returns a fully read keep-alive connection to the
    pool and closes any other.
    """

    __slots__ = ("_conn", "_released", "content", "headers", "reason", "status")

    def __init__(
        self, conn: _Connection, status: int, reason: str, headers: dict[str, str], body: Body
    ) -> None:
        self._conn = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = body
        self._released = False

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.pool.release(self._conn)

    def __del__(self) -> None:
        # the safety net (aiohttp's responses have one too): an answer dropped unreleased
        # by some path nobody foresaw must not hold its pool slot forever, or the
        # provider's pool would shrink by one each time until every request queued
        if not self._released:
            self._released = True
            with contextlib.suppress(Exception):  # e.g. the loop is already closed
                self._conn.close()
                self._conn.pool.release(self._conn)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to an origin, carrying one request at a time."""

    def __init__(self, pool: ConnectionPool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.complete = False  # the current answer arrived whole
        self.idle_since = 0.0
        self._paused = False
        self._active = False  # a request is out on this connection
        self._informational = False
        self._keep_alive = False  # read at the headers: llhttp forgets it once the message ends
        self._framed = False  # the answer says its length (else the connection's close ends it)
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._refused: BadResponse | None = None  # why a callback stopped the parser
        self._reason = b""
        self._head: asyncio.Future[Response] | None = None
        self._body: Body | None = None

    # -- driven by the pool ----------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[Response]:
        """Write one whole request; the future resolves once the answer's headers are in."""
        self._head = asyncio.get_running_loop().create_future()
        self._active = True
        self._headers = []
        self._header_bytes = 0
        self._body = None
        self.complete = False
        assert self.transport is not None
        self.transport.write(data)
        return self._head

    def park(self) -> None:
        """Back in the pool: bytes arriving now belong to no request."""
        self._active = False
        self._head = None
        self._body = None

    def reusable(self) -> bool:
        return self.complete and self._keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def open(self) -> bool:
        """Still usable as far as the transport knows (a reset may precede connection_lost)."""
        return self.transport is not None and not self.transport.is_closing()

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def _fail(self, error: UpstreamError) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        elif self._body is not None:
            self._body.fail(error)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for: the connection can't be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the upstream switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            self._fail(self._refused or BadResponse(f"not a valid HTTP answer: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        self._end_of_connection()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_of_connection(exc)
        self.pool.forget(self)

    def _end_of_connection(self, exc: Exception | None = None) -> None:
        self.closed = True
        if self.complete or not self._active:
            return
        body = self._body
        if body is not None and not self._framed:  # no length given: the close ends the body
            self.complete = True
            body.feed_eof()
            return
        why = f": {exc}" if exc is not None else ""
        self._fail(Disconnected(f"the upstream closed the connection mid-answer{why}"))

    # -- httptools callbacks ---------------------------------------------------------------------

    def _refuse(self, why: str) -> None:
        """Stop the parser (httptools turns this into an HttpParserError in data_received)."""
        self._keep_alive = False
        self._refused = BadResponse(why)
        raise self._refused

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: nothing after it can be trusted
            self._refuse("the upstream sent more than one answer to one request")

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(f"the upstream's headers exceed {MAX_HEADER_BYTES // 1024} KiB")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (e.g. 100 Continue): the real one follows
            self._informational = True
            self._headers = []
            return
        repeated: dict[str, list[str]] = {}
        for raw_name, raw_value in self._headers:
            repeated.setdefault(raw_name.decode("latin-1").lower(), []).append(
                raw_value.decode("latin-1")
            )
        headers = {name: ", ".join(values) for name, values in repeated.items()}
        encoding = headers.get("content-encoding", "identity").strip().lower()
        coding: str | None = None
        if encoding in ("gzip", "x-gzip"):
            coding = "gzip"
        elif encoding == "deflate":
            coding = "deflate"
        elif encoding not in ("identity", ""):
            self._refuse(f"the upstream sent Content-Encoding {encoding!r}, not gzip/deflate")
        self._framed = "content-length" in headers or "transfer-encoding" in headers
        self._keep_alive = self.parser.should_keep_alive()
        self._body = Body(self, coding)
        reason = self._reason.decode("latin-1")
        head, self._head = self._head, None  # the answer must not be kept alive from here
        if head is not None and not head.done():
            head.set_result(Response(self, status, reason, headers, self._body))

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        if self._body is not None:
            self._body.feed_eof()


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
        self._default_headers = _encode_headers(default_headers or {})
        self._ssl = ssl_context
        self._busy = 0  # slots taken: connections lent out or being made
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
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
        """Send ``POST base_url+path`` and return once the answer's status and headers are in.

        ``method`` is for the Responses API's follow-ups (``GET``/``DELETE`` on a stored
        response); a ``path`` with its own query joins the base URL's with ``&``.

        ``wait``, when given, is filled in with whether the request had to
        queue for a connection and whether it got one.
        """
        origin = origin_of(base_url)
        query = origin.query
        if query and "?" in path:
            query = "&" + query[1:]
        target = (origin.path_prefix + path + query).encode("utf-8")
        via = b""
        if not origin.tls:  # plain HTTP through a proxy: the request names its origin in full
            proxy = self.egress.proxy_for(origin.host, origin.port, False)
            if proxy is not None:
                target = b"http://" + origin.host_header + target
                try:
                    auth = proxy.authorization()
                except OSError as exc:  # its credentials can't be read: nothing is sent
                    raise ConnectFailed(str(exc)) from None
                via = _encode_headers({"Proxy-Authorization": auth}) if auth else b""
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
                _encode_headers(headers),
                b"Content-Length: %d\r\n\r\n" % len(body),
            )
        )
        if wait is not None:
            wait.queued = self.full()
        conn = await self._acquire(origin)
        if wait is not None:
            wait.connected = True
        answer = conn.send(head + body)
        try:
            return await answer
        except BaseException:
            # cancelled in the very iteration the headers arrived: the answer exists but was
            # never handed out, so it must not give the slot back a second time when collected
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                answer.result()._released = True
            conn.close()
            self.release(conn)
            raise

    # -- slots and connections -------------------------------------------------------------------

    async def _acquire(self, origin: Origin) -> _Connection:
        if self._closed:
            raise ConnectFailed("the sidecar is shutting down its upstream connections")
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
            return self._take_idle(origin) or await self._connect(origin)
        except BaseException:
            self._free_slot()
            raise

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin.peer)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive and conn.open():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        proxy = self.egress.proxy_for(origin.host, origin.port, origin.tls)
        host, port = (proxy.host, proxy.port) if proxy is not None else (origin.host, origin.port)
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                if proxy is None:  # what the name resolved to now, not what it looked like
                    check_resolved(origin.host, addresses)
                # Happy Eyeballs (RFC 8305), as aiohttp's connector does: a dual-stack provider
                # whose IPv6 route is a black hole costs 250 ms, not the whole connect timeout
                sock = await aiohappyeyeballs.start_connection(
                    addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1
                )
                if proxy is not None and origin.tls:  # TLS end to end, through a CONNECT tunnel
                    await open_tunnel(sock, proxy, origin.host, origin.port)
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    sock=sock,
                    ssl=(self._ssl or _default_ssl()) if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
        except BaseException as exc:
            if sock is not None:
                sock.close()  # connected, but the tunnel, TLS or the transport failed (or we gave up)
            if isinstance(exc, TimeoutError):
                raise ConnectFailed(
                    f"no connection to {origin.host}:{origin.port}{_via(proxy)} "
                    f"within {self.connect_timeout * 1000:.0f} ms"
                ) from None
            if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS, tunnel refused
                raise ConnectFailed(
                    f"cannot connect to {origin.host}:{origin.port}{_via(proxy)}: {exc}"
                ) from exc
            raise
        return conn

    def release(self, conn: _Connection) -> None:
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

    def forget(self, conn: _Connection) -> None:
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
                waiter.set_exception(ConnectFailed("the sidecar closed its upstream connections"))


def _via(proxy: ForwardProxy | None) -> str:
    return f" through proxy {proxy.shown}" if proxy is not None else ""


@functools.cache
def _default_ssl() -> ssl.SSLContext:
    """The system's trust store, built once (loading it costs milliseconds)."""
    return ssl.create_default_context()
