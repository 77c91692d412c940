"""The lean client's own parts, below the transport protocol: origins, and a race in its pool.

What any transport must do is in ``test_conformance.py``; these pin how the
lean client does it (base URLs parsed into origins, the request target) and a
cancellation race that needs its internals to stage.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

import pytest
from modelroute.proxy.upstream import ConnectionPool, PoolWait, Response
from modelroute.proxy.upstream.origin import origin_of

from .scripted import OK, Handler, Server, keep_alive, read_request


@pytest.mark.parametrize(
    ("base_url", "host", "port", "tls", "host_header", "prefix", "query"),
    [
        ("https://api.openai.com/v1", "api.openai.com", 443, True, b"api.openai.com", "/v1", ""),
        ("http://10.0.0.7:8000/v1/", "10.0.0.7", 8000, False, b"10.0.0.7:8000", "/v1", ""),
        ("http://[::1]:9/openai", "::1", 9, False, b"[::1]:9", "/openai", ""),
        (
            "https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21",
            "x.openai.azure.com", 443, True, b"x.openai.azure.com",
            "/openai/deployments/d", "?api-version=2024-10-21",
        ),
    ],
)  # fmt: skip
def test_a_base_url_names_the_connection_and_the_request_target(
    base_url: str, host: str, port: int, tls: bool, host_header: bytes, prefix: str, query: str
) -> None:
    origin = origin_of(base_url)
    assert (origin.host, origin.port, origin.tls) == (host, port, tls)
    assert (origin.host_header, origin.path_prefix, origin.query) == (host_header, prefix, query)


def test_a_base_url_that_is_not_http_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not an http"):
        origin_of("ftp://example.test/v1")


async def test_cancelled_in_the_iteration_its_headers_arrived_frees_the_slot_once(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    """A first-byte timeout, a hedge winner or a client leaving can cancel a request in the
    very loop iteration its answer's headers resolved it; the slot must come back once."""
    server = await serve(keep_alive(OK))
    # each poll below walks the whole heap, so after a long session a connect takes many
    # slow loop iterations: the connect bound is not what this test is about
    pool = ConnectionPool(1, connect_timeout=10)
    original = ConnectionPool.post

    for _ in range(3):
        task = asyncio.create_task(original(pool, server.url, "/x", b"", {}))
        # poll once per loop iteration (an Event would be set too late: the race is one iteration),
        # for a bounded time: a request that failed never produces the answer polled for
        async with asyncio.timeout(10):
            while not any(
                isinstance(o, Response) and o._conn.pool is pool and not o._released
                for o in gc.get_objects()
            ):
                if task.done():
                    task.result()  # the request failed: raise how, rather than spin
                    pytest.fail("the request ended without an answer the test could see")
                await asyncio.sleep(0)
        task.cancel()  # ... before the task got to run again
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        gc.collect()
        assert pool.in_use == 0
    # the limit still holds: a second request queues while the first is out
    held = await pool.post(server.url, "/x", b"", {})
    second = asyncio.create_task(pool.post(server.url, "/x", b"", {}))
    await asyncio.sleep(0.05)
    assert not second.done() and pool.queued == 1
    held.release()
    (await asyncio.wait_for(second, 5)).release()
    assert pool.in_use == 0
    pool.close()


async def test_a_slow_upstream_whose_tcp_acknowledged_is_never_called_silent(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    """The silence watch (silence.py) looks every 50 ms while the answer takes 0.8 s.

    The peer's TCP acknowledged the request at once: a model that is thinking
    is not a dead path, however long it thinks, and its answer arrives.
    """

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await asyncio.sleep(0.8)
            writer.write(OK)
            await writer.drain()

    server = await serve(slow)
    pool = ConnectionPool(2, connect_timeout=5)
    wait = PoolWait()
    wait.silence_watch = 0.05
    async with asyncio.timeout(5):
        response = await pool.post(server.url, "/x", b"{}", {}, wait=wait)
        assert response.status == 200 and await response.read() == b"{}"
    response.release()
    assert pool.idle == 1  # kept alive: nothing was judged dead
    pool.close()


async def test_drop_idle_closes_only_that_origins_kept_alive_connections(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    """An origin found dead loses its idle connections; another origin's stay."""
    sick, well = await serve(keep_alive(OK)), await serve(keep_alive(OK))
    pool = ConnectionPool(4, connect_timeout=5)
    async with asyncio.timeout(5):
        answer = await pool.post(well.url, "/x", b"", {})
        await answer.read()
        answer.release()
        first = await pool.post(sick.url, "/x", b"", {})
        second = await pool.post(sick.url, "/x", b"", {})
        for r in (first, second):
            await r.read()
            r.release()
    assert pool.idle == 3
    assert pool.drop_idle(sick.url) == 2
    assert pool.idle == 1 and pool.has_idle(well.url) and not pool.has_idle(sick.url)
    assert pool.drop_idle(sick.url) == 0
    pool.close()
