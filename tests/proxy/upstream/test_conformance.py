"""What any transport to a provider must do, against raw scripted servers on 127.0.0.1.

Every request a user sends crosses this hop, so what it must never get wrong
is pinned here byte by byte: keep-alive reuse, the connection limit and its
queue (no leaked slot, not even when a queued request is cancelled), the
three body framings, gzip, a slow reader pausing the socket, and every way an
upstream can break surfacing as one of the client's errors.  Each test takes
the ``connect`` fixture (``conftest.py``), so each runs against every
implementation of the ``Transport`` protocol listed there.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import ssl
import zlib
from collections.abc import Awaitable, Callable

import pytest
from modelroute.proxy.attempt import Failed, run_attempt
from modelroute.proxy.outcomes import Failure
from modelroute.proxy.router import Candidate
from modelroute.proxy.table import CompiledEndpoint, CompiledProvider, CompiledTarget
from modelroute.proxy.upstream import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    PoolWait,
    RequestNotSent,
    TransportFactory,
)

from .scripted import OK, Handler, Server, keep_alive, post, read_request


async def test_sequential_requests_reuse_one_keep_alive_connection(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    seen: list[bytes] = []
    server = await serve(keep_alive(OK, seen))
    pool = connect(4, connect_timeout=1, default_headers={"User-Agent": "t"})
    for _ in range(5):
        assert await post(pool, server) == (200, b"{}")
    assert server.connections == 1
    assert pool.in_use == 0
    # the request on the wire: path under the base URL's, Host, our headers, exact length
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nUser-Agent: t\r\n" in seen[0] and b"\r\nContent-Type: x/y\r\n" in seen[0]
    assert seen[0].endswith(b'Content-Length: 7\r\n\r\n{"a":1}')
    pool.close()


async def test_the_limit_queues_callers_in_order_and_frees_every_slot(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    gate = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await gate.wait()
            writer.write(OK)
            await writer.drain()

    server = await serve(slow)
    pool = connect(1, connect_timeout=1)
    first_wait, second_wait = PoolWait(), PoolWait()
    first = asyncio.create_task(post(pool, server, wait=first_wait))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(post(pool, server, wait=second_wait))
    await asyncio.sleep(0.05)
    assert first_wait.connected and not first_wait.queued
    assert second_wait.queued and second_wait.stuck_in_queue
    gate.set()
    assert await first == (200, b"{}") and await second == (200, b"{}")
    assert not second_wait.stuck_in_queue
    assert server.connections == 1 and pool.in_use == 0
    pool.close()


async def test_a_queued_request_cancelled_leaks_no_slot(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    server = await serve(keep_alive(OK))
    pool = connect(1, connect_timeout=1)
    held = await pool.post(server.url, "/x", b"", {})
    waiter = asyncio.create_task(pool.post(server.url, "/x", b"", {}))
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    assert pool.in_use == 0
    assert await post(pool, server) == (200, b"{}")  # the slot came back
    # the race: the slot is handed to a queued request in the same tick it is cancelled
    held = await pool.post(server.url, "/x", b"", {})
    waiter = asyncio.create_task(pool.post(server.url, "/x", b"", {}))
    await asyncio.sleep(0.02)
    held.release()  # hands the slot over ...
    waiter.cancel()  # ... to a request that gives up before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.in_use == 0
    assert await post(pool, server) == (200, b"{}")
    pool.close()


async def test_an_answer_dropped_unreleased_gives_its_slot_back(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    server = await serve(keep_alive(OK))
    pool = connect(1, connect_timeout=1)
    response = await pool.post(server.url, "/x", b"", {})
    assert pool.in_use == 1
    del response  # a code path that forgot to release it
    await asyncio.sleep(0)  # (the loop's wake-up handle held the answer until this step ended)
    gc.collect()
    assert pool.in_use == 0
    assert await post(pool, server) == (200, b"{}")
    pool.close()


async def test_cancelled_while_waiting_for_the_answer_closes_the_connection(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    server = await serve(never)
    pool = connect(1, connect_timeout=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await pool.post(server.url, "/x", b"", {})
    assert pool.in_use == 0  # the half-used connection is closed, not pooled
    pool.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"hello world",
        ),
        (  # no length at all: the body ends when the connection closes
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
            b"until close",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(gzip.compress(b"zipped")), gzip.compress(b"zipped")),
            b"zipped",
        ),
        (  # an interim 100 Continue is skipped, the real answer follows
            b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
            b"{}",
        ),
    ],
    ids=["chunked", "until-close", "gzip", "100-continue"],
)
async def test_every_body_framing_arrives_whole(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
    answer: bytes,
    expected: bytes,
) -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        if b"Connection: close" in answer:
            writer.close()
        else:
            await asyncio.sleep(0.5)

    server = await serve(once)
    pool = connect(2, connect_timeout=1)
    assert await post(pool, server) == (200, expected)
    pool.close()


async def test_a_server_that_closes_idle_connections_is_not_reused(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def one_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK)  # says nothing about closing, then closes anyway
        await writer.drain()

    server = await serve(one_per_connection)
    pool = connect(2, connect_timeout=1)
    for _ in range(3):
        assert await post(pool, server) == (200, b"{}")
        await asyncio.sleep(0.05)  # the close reaches the client
    assert server.connections == 3
    pool.close()


async def test_broken_upstreams_surface_as_the_clients_errors(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def cut_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()

    async def cut_before_headers(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)

    async def brotli(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx")
        await writer.drain()
        await asyncio.sleep(0.5)

    pool = connect(4, connect_timeout=1)
    server = await serve(cut_mid_body)
    response = await pool.post(server.url, "/x", b"", {})
    with pytest.raises(Disconnected, match="mid-answer"):
        await asyncio.wait_for(response.read(), 5)
    response.release()
    with pytest.raises(Disconnected):
        await asyncio.wait_for(pool.post((await serve(cut_before_headers)).url, "/x", b"", {}), 5)
    with pytest.raises(BadResponse, match="not a valid HTTP answer"):
        await asyncio.wait_for(pool.post((await serve(garbage)).url, "/x", b"", {}), 5)
    with pytest.raises(BadResponse, match="'br'"):
        await asyncio.wait_for(pool.post((await serve(brotli)).url, "/x", b"", {}), 5)
    assert pool.in_use == 0
    pool.close()


async def test_connect_failures_name_the_address_and_free_the_slot(
    connect: TransportFactory, unused_tcp_port: int
) -> None:
    pool = connect(1, connect_timeout=1)
    for _ in range(2):  # a leaked slot would make the second one queue forever
        with pytest.raises(ConnectFailed, match=f"127.0.0.1:{unused_tcp_port}"):
            await asyncio.wait_for(
                pool.post(f"http://127.0.0.1:{unused_tcp_port}", "/x", b"", {}), 5
            )
    assert pool.in_use == 0


async def test_a_slow_reader_pauses_the_socket_instead_of_buffering_the_stream(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    total = 64 * 1024 * 1024
    sent_all = asyncio.Event()

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * (1024 * 1024)
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
        sent_all.set()

    server = await serve(firehose)
    pool = connect(1, connect_timeout=1)
    response = await pool.post(server.url, "/x", b"", {})
    await asyncio.sleep(0.5)  # nobody reads: the server must be held back by TCP
    assert not sent_all.is_set()
    received = 0
    while chunk := await asyncio.wait_for(response.content.readany(), 5):
        received += len(chunk)
    assert received == total and sent_all.is_set()
    response.release()
    pool.close()


def test_header_injection_is_refused(connect: TransportFactory) -> None:
    pool = connect(1, connect_timeout=1)
    with pytest.raises(ValueError, match="line break"):
        asyncio.run(pool.post("http://127.0.0.1:9/v1", "/x", b"", {"X-A": "1\r\nX-B: 2"}))


async def test_a_retired_pool_closes_connections_as_they_come_back(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    server = await serve(keep_alive(OK))
    pool = connect(2, connect_timeout=1)
    response = await pool.post(server.url, "/x", b"", {})
    await response.read()
    pool.retire()  # a reload replaced this pool while a request was out
    response.release()
    assert pool.in_use == 0 and pool.idle == 0


async def test_https_verifies_the_certificate_and_then_carries_the_request(
    connect: TransportFactory,
    serve_tls: Callable[[Handler], Awaitable[Server]],
) -> None:
    """Every real provider is HTTPS: the hop must verify the certificate, then work."""
    server = await serve_tls(keep_alive(OK))
    url = server.url.replace("http://", "https://")
    trusting = connect(
        1, connect_timeout=5, ssl_context=ssl.create_default_context(cafile=server.cert)
    )
    for _ in range(2):
        response = await asyncio.wait_for(trusting.post(url, "/x", b"{}", {}), 10)
        assert (response.status, await response.read()) == (200, b"{}")
        response.release()
    assert server.connections == 1  # kept alive over TLS too
    trusting.close()
    system = connect(1, connect_timeout=5)  # the system's trust store: a stranger's cert
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.wait_for(system.post(url, "/x", b"{}", {}), 10)
    assert system.in_use == 0


async def test_a_second_answer_to_one_request_retires_the_connection(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # answers, then starts an answer nobody asked for
        writer.write(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 45\r\n\r\n")
        await writer.drain()
        while await read_request(reader):
            writer.write(OK)
            await writer.drain()

    server = await serve(chatty)
    pool = connect(1, connect_timeout=1)
    assert await post(pool, server) == (200, b"{}")  # the first answer is intact
    assert await post(pool, server) == (200, b"{}")  # on a new connection, not the tainted one
    assert server.connections == 2
    pool.close()


async def test_raw_deflate_bodies_decode_like_zlib_wrapped_ones(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    text = b'{"choices":[]}'
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for body in (zlib.compress(text), raw.compress(text) + raw.flush()):
        answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
        server = await serve(keep_alive(answer % (len(body), body)))
        pool = connect(1, connect_timeout=1)
        assert await post(pool, server) == (200, text)
        pool.close()


async def test_a_header_flood_is_refused_without_stalling_the_loop(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(40_000):  # 4 MiB of one repeated header
            writer.write(b"X-Pad: " + b"a" * 100 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    pool = connect(1, connect_timeout=1)
    server = await serve(flood)
    with pytest.raises(BadResponse, match="headers exceed 64 KiB"):
        await asyncio.wait_for(pool.post(server.url, "/x", b"", {}), 5)
    assert pool.in_use == 0
    pool.close()


async def test_base_urls_on_one_host_share_its_connections(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    """Azure-style deployments: one host, a path and query per deployment, one connection."""
    seen: list[bytes] = []
    server = await serve(keep_alive(OK, seen))
    base = server.url.removesuffix("/v1")
    pool = connect(2, connect_timeout=1)
    for deployment in ("a", "b", "c"):
        url = f"{base}/openai/deployments/{deployment}?api-version=2024-10-21"
        response = await pool.post(url, "/chat/completions", b"", {})
        await response.read()
        response.release()
    assert server.connections == 1 and pool.idle == 1
    assert [r.split(b" ")[1] for r in seen] == [
        f"/openai/deployments/{d}/chat/completions?api-version=2024-10-21".encode() for d in "abc"
    ]
    pool.close()


async def test_a_header_byte_that_is_not_utf8_goes_upstream_as_sent(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    """aiohttp's server hands such a byte over as a lone surrogate; it must not fail the
    request (that used to count against a healthy provider's breaker)."""
    seen: list[bytes] = []
    server = await serve(keep_alive(OK, seen))
    pool = connect(1, connect_timeout=1)
    value = b"abc\xff".decode("utf-8", "surrogateescape")
    response = await pool.post(server.url, "/x", b"", {"X-Request-Id": value})
    response.release()
    assert b"\r\nX-Request-Id: abc\xff\r\n" in seen[0]
    pool.close()


@pytest.mark.parametrize(
    ("base_url", "path", "headers"),
    [
        ("ftp://127.0.0.1/v1", "/x", {}),
        ("http://127.0.0.1:99999/v1", "/x", {}),  # a port out of range
        ("http://[::1/v1", "/x", {}),  # a broken IPv6 literal
        ("http://bücher.example/v1", "/x", {}),  # no ASCII Host header says it
        ("http://a..b/v1", "/x", {}),  # a name IDNA can't encode (an empty label)
        ("{server}", "/\ud800", {}),  # a lone surrogate: no byte string says it
        ("{server}", "/x", {"X-A": "\ud800"}),
        ("{server}", "/x", {"X-A": "1\r\nX-B: 2"}),  # a header that would split the head
        ("http://169.254.169.254/v1", "/x", {}),  # the cloud's metadata address
    ],
    ids=[
        "not-http", "port", "ipv6", "non-ascii-host", "idna", "surrogate-path",
        "surrogate-header", "line-break", "metadata",
    ],
)  # fmt: skip
async def test_what_no_request_can_carry_is_refused_as_request_not_sent(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
    base_url: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """One typed error, never a stray ValueError, and nothing reaches the upstream."""
    server = await serve(keep_alive(OK))
    pool = connect(1, connect_timeout=1)
    with pytest.raises(RequestNotSent):
        await asyncio.wait_for(pool.post(base_url.format(server=server.url), path, b"", headers), 5)
    assert server.connections == 0 and pool.in_use == 0
    assert await post(pool, server) == (200, b"{}")  # and the pool still serves
    pool.close()


async def test_an_attempt_that_was_not_sent_does_not_count_against_the_upstream(
    connect: TransportFactory, serve: Callable[[Handler], Awaitable[Server]]
) -> None:
    """What ``attempt.py`` makes of ``RequestNotSent``: ``not_sent``, the upstream not charged."""
    server = await serve(keep_alive(OK))
    target = CompiledTarget(provider="p", model="m", upstream_model="m", regions=("r",))
    provider = CompiledProvider(
        name="p", endpoints=(CompiledEndpoint(region="r", base_url=server.url),)
    )
    candidate = Candidate(target, provider, "r", server.url, "p/m@r")
    pool = connect(1, connect_timeout=1)
    outcome = await run_attempt(
        pool,
        candidate,
        server.url,
        "/chat/completions",
        b"{}",
        {"X-A": "1\r\nX-B: 2"},
        stream=False,
        first_byte_timeout=1,
        total_timeout=2,
    )
    assert isinstance(outcome, Failed) and outcome.kind is Failure.NOT_SENT
    assert outcome.detail.startswith("request not sent: header 'X-A' holds a line break")
    assert not outcome.kind.reached_upstream and not outcome.kind.upstream_unhealthy
    assert server.connections == 0 and pool.in_use == 0
    pool.close()


async def test_repeated_headers_arrive_joined_in_order_under_lower_case_names(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Ratelimit-Remaining: 9\r\n"
        b"Vary: Accept\r\nvary: Origin\r\nVARY: Cookie\r\nContent-Length: 2\r\n\r\n{}"
    )
    server = await serve(keep_alive(answer, []))
    pool = connect(2, connect_timeout=1)
    response = await asyncio.wait_for(pool.post(server.url, "/x", b"", {}), 5)
    try:
        assert response.headers["vary"] == "Accept, Origin, Cookie"
        assert response.headers["x-ratelimit-remaining"] == "9"
        assert await asyncio.wait_for(response.read(), 5) == b"{}"
    finally:
        response.release()
    pool.close()
