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
from modelroute.proxy.upstream import ConnectionPool, Response
from modelroute.proxy.upstream.origin import origin_of

from .scripted import OK, Handler, Server, keep_alive


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
