"""An answer's body as it arrives, and the gzip/deflate decoders it passes through.

The connection feeds the body; the caller reads it.  Between the two sits a
bound: a reader more than ``READ_PAUSE_BYTES`` behind pauses the socket
(TCP then holds the upstream back) instead of the sidecar buffering a
whole stream for a slow client.
"""

from __future__ import annotations

import asyncio
import collections
import zlib
from typing import Protocol

from .errors import BadResponse, UpstreamError

READ_PAUSE_BYTES = 256 * 1024  # a reader this far behind pauses the socket until it reads


class FlowControl(Protocol):
    """What a body asks of the connection it arrives on."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def content_coding(header: str) -> str | None:
    """The decoder a ``Content-Encoding`` value needs (None: identity); raises for others."""
    encoding = header.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return "gzip"
    if encoding == "deflate":
        return "deflate"
    if encoding not in ("identity", ""):
        raise BadResponse(f"the upstream sent Content-Encoding {encoding!r}, not gzip/deflate")
    return None


def decoder_for(encoding: str, first: bytes) -> zlib._Decompress:
    """A decompressor for the body, chosen once its first bytes are in."""
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    # "deflate" means zlib-wrapped (RFC 9110), but some servers send raw DEFLATE; the zlib
    # header is a deflate method nibble and a 16-bit check that is a multiple of 31
    wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
    return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)


class Body:
    """An answer's body as it arrives: buffered up to a bound, then the socket is paused."""

    __slots__ = ("_chunks", "_conn", "_decoder", "_encoding", "_eof", "_error", "_size", "_waiter")

    def __init__(self, conn: FlowControl, encoding: str | None) -> None:
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
                self._decoder = decoder_for(self._encoding, data)
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
