"""What a transport owes a connect race (docs/failover.md, "Connect racing").

The attempt loop races a late connect against another region's and lets the
first attempt that has a connection send.  For that the transport must time
its connects, say when a connection is in hand *before* writing a byte, send
nothing for a caller that gave up meanwhile – closing that fresh connection,
never pooling it – and say whether a kept-alive connection is ready.  Run
against every ``Transport`` (``conftest.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from modelroute.proxy.upstream import ConnectFailed, PoolWait, TransportFactory

from .scripted import OK, Handler, Server, keep_alive, post


async def test_a_new_connect_is_timed_and_announced_before_the_request_is_written(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    seen: list[bytes] = []
    server = await serve(keep_alive(OK, seen))
    pool = connect(4, connect_timeout=1)
    assert not pool.has_idle(server.url)
    written_when_announced: list[int] = []
    wait = PoolWait()
    wait.on_connected = lambda: written_when_announced.append(len(seen))
    assert await post(pool, server, wait=wait) == (200, b"{}")
    assert wait.connecting and wait.connected and not wait.in_connect
    assert wait.connect_seconds is not None and 0 <= wait.connect_seconds < 1
    assert written_when_announced == [0]  # announced, then written
    assert pool.has_idle(server.url)  # kept alive: the next request needs no connect
    again = PoolWait()
    assert await post(pool, server, wait=again) == (200, b"{}")
    assert again.connected and not again.connecting and again.connect_seconds is None
    pool.close()


async def test_a_caller_that_gave_up_while_connecting_sends_nothing_and_pools_nothing(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    seen: list[bytes] = []
    server = await serve(keep_alive(OK, seen))
    pool = connect(4, connect_timeout=1)
    wait = PoolWait()
    task = asyncio.create_task(post(pool, server, wait=wait))
    for _ in range(10):  # a few loop steps: a slot, no idle connection, the connect begun
        if wait.in_connect:
            break
        await asyncio.sleep(0)
    assert wait.in_connect
    wait.abandoned = True  # another attempt had a connection first (the loop sets it then)
    with pytest.raises(ConnectFailed) as caught:
        await task
    assert not caught.value.network  # the sidecar's own choice, not the endpoint's fault
    assert wait.connect_seconds is not None  # the connect itself completed: a sample
    await asyncio.sleep(0.05)
    assert seen == [] and server.connections == 1  # connected, and not a byte sent
    assert pool.in_use == 0 and pool.idle == 0 and not pool.has_idle(server.url)
    assert await post(pool, server) == (200, b"{}")  # the slot came back
    pool.close()


async def test_a_caller_that_gave_up_while_queued_for_a_slot_connects_to_nothing(
    connect: TransportFactory,
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    """Abandoned while every connection was busy: once a slot frees, nothing is connected or sent.

    The race's other attempt already sent the request; this one must not send it again
    when the provider's ``maxConnections`` frees up, nor open a connection to throw away.
    """
    seen: list[bytes] = []
    server = await serve(keep_alive(OK, seen))
    pool = connect(1, connect_timeout=1)
    busy = await pool.post(server.url, "/chat/completions", b"{}", {})  # holds the one slot
    wait = PoolWait()
    task = asyncio.create_task(post(pool, server, wait=wait))
    await asyncio.sleep(0.05)
    assert wait.queued and not wait.connecting and pool.queued == 1
    wait.abandoned = True
    await busy.read()
    busy.release()  # the slot passes to the queued caller, which gave up meanwhile
    with pytest.raises(ConnectFailed) as caught:
        await task
    assert not caught.value.network
    assert not wait.connecting and wait.connect_seconds is None  # no connect was made for it
    assert len(seen) == 1 and server.connections == 1  # only the first request, ever
    assert pool.in_use == 0 and pool.idle == 1  # the kept-alive connection was not thrown away
    assert await post(pool, server) == (200, b"{}")  # the slot came back
    assert server.connections == 1
    pool.close()
