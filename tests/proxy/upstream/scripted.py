"""Raw scripted HTTP servers on 127.0.0.1 for the transport tests, and a request helper.

Each server runs a handler per connection and writes exactly the bytes the
test scripts, so every framing and every way of breaking can be staged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from modelroute.proxy.upstream import Transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole request (head + Content-Length body), or b"" when the client went away."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


class Server:
    """A raw TCP server that runs ``handler`` per connection and counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.cert = ""  # the certificate file, for a TLS server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"


def keep_alive(answer: bytes, requests: list[bytes] | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            if requests is not None:
                requests.append(request)
            writer.write(answer)
            await writer.drain()

    return handler


async def post(pool: Transport, server: Server, **kw: object) -> tuple[int, bytes]:
    response = await asyncio.wait_for(
        pool.post(server.url, "/chat/completions", b'{"a":1}', {"Content-Type": "x/y"}, **kw),  # type: ignore[arg-type]
        5,
    )
    try:
        return response.status, await asyncio.wait_for(response.read(), 5)
    finally:
        response.release()
