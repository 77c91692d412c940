"""A client that hangs up mid-stream is normal: counted as ``client_closed``, never an ERROR traceback.

The race the sweep hit: the upstream's last events (and its end) arrive in
the same loop iteration as the client's reset.  The pipe wakes for the
upstream data first and writes to a transport that is already closing;
aiohttp raises ``ClientConnectionResetError`` there, and a handler that lets
it escape is logged by aiohttp as "Error handling request" with a traceback.
The test makes that ordering deterministic: it writes the upstream's tail
and resets the client connection in one synchronous step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from .conftest import ProxyFactory, provider_yaml, route_yaml


def event(choices: list[object], **extra: object) -> bytes:
    doc = {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": choices}
    return b"data: " + orjson.dumps({**doc, **extra}) + b"\n\n"


CHUNK = event([{"index": 0, "delta": {"content": "tok "}}])
END = (
    event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    + event([], usage={"prompt_tokens": 3, "completion_tokens": 2})
    + b"data: [DONE]\n\n"
)


def _foreign(record: logging.LogRecord) -> bool:
    """An asyncio report about a task neither the sidecar nor aiohttp made.

    An SDK client an earlier test left unclosed is collected here and its
    ``aclose`` fails on that test's closed loop; asyncio logs it while this
    test's ``caplog`` listens.  It says nothing about a hang-up.
    """
    if record.name != "asyncio":
        return False
    defined = re.search(r"defined at (\S+):\d+", record.getMessage())
    return (
        defined is not None and "/aiohttp/" not in defined[1] and "/modelroute/" not in defined[1]
    )


@contextlib.asynccontextmanager
async def upstream_held_open() -> AsyncIterator[tuple[str, asyncio.Queue[asyncio.StreamWriter]]]:
    """A raw upstream: SSE headers and one chunk at once; the test owns the connection after that."""
    writers: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # the sidecar's connect probe: connect, hang up
            writer.close()
            return
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            + CHUNK
        )
        await writers.put(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", writers
    finally:
        server.close()


def client_requests_total(metrics: str, outcome: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("modelroute_requests_total{") and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_client_hanging_up_as_the_stream_ends_is_counted_not_logged(
    proxies: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rounds = 5
    async with upstream_held_open() as (url, writers):
        proxy = await proxies(
            provider_yaml("api", [("us-east-1", url)])
            + route_yaml("general", ["general"], ["{provider: api, model: qwen3-8b}"])
        )
        port = int(proxy.api_url.rsplit(":", 1)[1])
        body = orjson.dumps(
            {"model": "general", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        )
        loop = asyncio.get_running_loop()
        for _ in range(rounds):
            client = socket.create_connection(("127.0.0.1", port))
            client.setblocking(False)
            await loop.sock_sendall(
                client,
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
            )
            seen = b""
            while b"tok" not in seen:
                seen += await loop.sock_recv(client, 4096)
            upstream = await writers.get()
            # one synchronous step: the upstream's tail and end land first, then the client's
            # reset; the sidecar's next poll sees both
            upstream.write(END)
            upstream.get_extra_info("socket").shutdown(socket.SHUT_WR)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            await asyncio.sleep(0.2)
            upstream.close()

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and not _foreign(r)]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
    async with aiohttp.ClientSession() as http, http.get(proxy.admin_url + "/metrics") as resp:
        metrics = await resp.text()
    assert client_requests_total(metrics, "client_closed") == rounds
