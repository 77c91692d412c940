"""HTTP/1.1 on one connection: the request out, the answer framed by httptools.

``httptools`` is llhttp, the parser behind uvicorn and Node.js: it handles
Content-Length, chunked and read-until-close bodies, and this module only
answers its callbacks.  A connection carries one request at a time; bytes
that arrive when no request is out (or a second answer to one request)
retire it, because nothing after them can be trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
from typing import Protocol

import httptools

from . import silence, tcp_keepalive
from .body import Body, content_coding
from .errors import BadResponse, Disconnected, PathDied, PathSilent, UpstreamError
from .origin import Origin

# an answer's headers together (aiohttp capped each field at 8 KiB)
MAX_HEADER_BYTES = 64 * 1024


class Lender(Protocol):
    """The pool a connection is lent from: it takes it back, and hears when it closed."""

    def release(self, conn: HTTP11Connection) -> None: ...

    def forget(self, conn: HTTP11Connection) -> None: ...


class Response:
    """Status and headers of an answer; its body streams from :attr:`content`.

    Header names are lower-case (``headers["content-type"]``).  The caller must
    :meth:`release` it: that returns a fully read keep-alive connection to the
    pool and closes any other.
    """

    __slots__ = ("_conn", "_released", "content", "headers", "reason", "status")

    def __init__(
        self, conn: HTTP11Connection, status: int, reason: str, headers: dict[str, str], body: Body
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


class HTTP11Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to an origin, carrying one request at a time."""

    def __init__(self, pool: Lender, origin: Origin) -> None:
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
        # the silence watch (silence.py): when the request went out, how often to look
        self._watch: asyncio.TimerHandle | None = None
        self._written_at = 0.0
        self._watch_every = 0.0

    # -- driven by the pool ----------------------------------------------------------------------

    def send(self, data: bytes, watch: float | None = None) -> asyncio.Future[Response]:
        """Write one whole request; the future resolves once the answer's headers are in.

        ``watch`` (seconds): look at the socket's ``TCP_INFO`` that long after
        the write and as often again, until the peer's TCP has acknowledged the
        request or anything arrives; if it stays silent (``silence.silent``) the
        future fails with :class:`PathSilent` and the connection is closed –
        the answer could not come back on it anyway.
        """
        loop = asyncio.get_running_loop()
        self._head = loop.create_future()
        self._active = True
        self._headers = []
        self._header_bytes = 0
        self._body = None
        self.complete = False
        assert self.transport is not None
        self.transport.write(data)
        self._written_at = loop.time()
        if watch is not None and watch > 0:
            self._watch_every = watch
            self._watch = loop.call_later(watch, self._look)
        return self._head

    def _look(self) -> None:
        """One look at the kernel's view of the request just written (see :meth:`send`)."""
        self._watch = None
        head = self._head
        if head is None or head.done() or self.closed or self.transport is None:
            return
        info = silence.read(self.transport.get_extra_info("socket"))
        if info is None or not info.outstanding:
            return  # no TCP_INFO here, or the peer's TCP has the request: nothing to watch
        elapsed = asyncio.get_running_loop().time() - self._written_at
        if silence.silent(info, elapsed, self._watch_every):
            self._keep_alive = False
            head.set_exception(
                PathSilent(
                    f"the request was not acknowledged by the upstream's TCP in "
                    f"{elapsed * 1000:.0f} ms ({info.backoff} retransmission timeouts, "
                    "no ACK since it was written): the path is silent",
                    elapsed,
                )
            )
            self.close()
            return
        self._watch = asyncio.get_running_loop().call_later(self._watch_every, self._look)

    def _unwatch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def park(self) -> None:
        """Back in the pool: bytes arriving now belong to no request."""
        self._unwatch()
        self._active = False
        self._head = None
        self._body = None

    def reusable(self) -> bool:
        return self.complete and self._keep_alive and not self.closed

    def close(self) -> None:
        self._unwatch()
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
        tcp_keepalive.arm(transport.get_extra_info("socket"))

    def data_received(self, data: bytes) -> None:
        if self._watch is not None:  # the peer speaks: the path is not silent
            self._unwatch()
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
        self._unwatch()
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
        if tcp_keepalive.died_silent(exc):
            silent = asyncio.get_running_loop().time() - self._written_at
            why = (
                f"the path to the upstream went silent {silent * 1000:.0f} ms after the request "
                f"was written: the kernel's keepalive probes went unanswered"
            )
            if self._head is not None and not self._head.done():
                self._head.set_exception(PathDied(why, silent))
                return
            self._fail(Disconnected(f"{why} (mid-answer)"))
            return
        why = f": {exc}" if exc is not None else ""
        self._fail(Disconnected(f"the upstream closed the connection mid-answer{why}"))

    # -- httptools callbacks ---------------------------------------------------------------------

    def _refuse(self, why: str) -> typing.NoReturn:
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
        headers: dict[str, str] = {}
        for raw_name, raw_value in self._headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            earlier = headers.get(name)  # a repeated header: its values joined, in order
            headers[name] = value if earlier is None else f"{earlier}, {value}"
        try:
            coding = content_coding(headers.get("content-encoding", "identity"))
        except BadResponse as exc:
            self._refuse(str(exc))
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
