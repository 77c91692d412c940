"""Shared budgets through a real redis-server: pods see each other's spend; Redis down never hurts.

Two ``BudgetBook``s stand in for two sidecars of one namespace, and two tests
use real separate Python processes.  A frozen clock keeps every book in the
same calendar window however long the test takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable

import pytest
from modelroute.proxy.budget import KEY_MARGIN_SECONDS, BudgetBook, Window, window_span
from modelroute.proxy.table import CompiledRoute

from .conftest import RedisServer, free_port, make_route

T0 = time.time()


def frozen() -> float:
    return T0


def book(url: str | None, namespace: str = "team-a", **kw: float) -> BudgetBook:
    return BudgetBook(url, namespace, clock=frozen, **kw)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_two_books_share_spend_and_the_second_rejects(redis_server: RedisServer) -> None:
    general = make_route("general", "reject", usdPerDay=50)
    a = book(redis_server.url, sync_interval=60)
    b = book(redis_server.url, sync_interval=60)
    await a.start()
    await b.start()
    try:
        b.observe([general])  # b's table has the route: its counter is pulled from now on
        a.spend(general, 30)
        assert await a.sync()
        assert await b.sync()
        st = b.state(general)
        assert st is not None
        assert st.spent_usd == pytest.approx(30)  # b spent nothing itself
        b.spend(general, 25)
        st = b.state(general)
        assert st is not None
        assert st.exhausted  # 30 (pod a) + 25 (pod b) >= 50
        assert "spent $55.0000 of its $50.00/day budget (action reject)" in st.message()
        assert await b.sync()
        assert await a.sync()
        st = a.state(general)
        assert st is not None
        assert st.exhausted
        assert a.redis_connected
        assert b.redis_connected
        assert a.remaining() == {"general": 0}
    finally:
        await a.close()
        await b.close()

    day = window_span("day", T0)
    key = f"modelroute:budget:team-a:general:{day.id}"
    assert float(redis_server.client.get(key) or 0) == pytest.approx(55)
    ttl = redis_server.client.ttl(key)
    assert 0 < ttl <= day.end + KEY_MARGIN_SECONDS - time.time() + 1


async def test_background_sync_spreads_spend_without_explicit_calls(
    redis_server: RedisServer,
) -> None:
    r = make_route("light", "downgrade", usdPerHour=1)
    a = book(redis_server.url, sync_interval=0.05)
    b = book(redis_server.url, sync_interval=0.05)
    await a.start()
    await b.start()
    try:
        b.state(r)  # b serves this route too, so it pulls its counter
        a.spend(r, 1.5)

        def b_exhausted() -> bool:
            st = b.state(r)
            return st is not None and st.exhausted

        await eventually(b_exhausted)
    finally:
        await a.close()
        await b.close()


async def test_namespaces_do_not_share(redis_server: RedisServer) -> None:
    r = make_route("general", usdPerDay=50)
    a = book(redis_server.url, "team-a", sync_interval=60)
    b = book(redis_server.url, "team-b", sync_interval=60)
    await a.start()
    await b.start()
    try:
        a.spend(r, 60)
        b.state(r)
        assert await a.sync()
        assert await b.sync()
        st = b.state(r)
        assert st is not None
        assert st.spent_usd == 0
    finally:
        await a.close()
        await b.close()


async def test_close_flushes_pending_spend(redis_server: RedisServer) -> None:
    r = make_route("general", usdPerDay=50)
    a = book(redis_server.url, sync_interval=60)
    await a.start()
    await a.sync()
    a.spend(r, 12.5)  # not yet pushed: the next sync is a minute away
    await a.close()
    key = f"modelroute:budget:team-a:general:{window_span('day', T0).id}"
    assert float(redis_server.client.get(key) or 0) == pytest.approx(12.5)
    # and the hour/month counters got it too, so a later window-kind change knows it
    hour = f"modelroute:budget:team-a:general:{window_span('hour', T0).id}"
    assert float(redis_server.client.get(hour) or 0) == pytest.approx(12.5)


async def test_redis_down_at_start_enforces_per_pod_then_shares_when_it_comes_up(
    start_redis: Callable[[int | None], RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelroute.budget")
    port = free_port()  # nothing listens here yet
    r = make_route("general", "reject", usdPerDay=50)
    a = book(
        f"redis://:s3cret@127.0.0.1:{port}/0",
        sync_interval=0.05,
        max_backoff=0.2,
        redis_timeout=0.5,
    )
    await a.start()  # must not raise
    try:
        a.spend(r, 49)
        st = a.state(r)
        assert st is not None
        assert not st.exhausted
        a.spend(r, 2)
        st = a.state(r)
        assert st is not None
        assert st.exhausted  # per-pod enforcement while Redis is away
        await eventually(lambda: a.redis_error is not None)
        await asyncio.sleep(0.5)  # several failed attempts
        assert not a.redis_connected
        warnings = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
        assert len(warnings) == 1, [w.getMessage() for w in warnings]
        assert "enforcing per pod" in warnings[0].getMessage()
        assert "s3cret" not in caplog.text

        server = start_redis(port)
        await eventually(lambda: a.redis_connected)
        key = f"modelroute:budget:team-a:general:{window_span('day', T0).id}"
        assert float(server.client.get(key) or 0) == pytest.approx(51)
        assert "Redis is back" in caplog.text
    finally:
        await a.close()


async def test_redis_losing_its_data_still_enforces_this_pods_spend(
    redis_server: RedisServer,
) -> None:
    r = make_route("general", "reject", usdPerDay=50)
    a = book(redis_server.url, sync_interval=60)
    await a.start()
    try:
        a.spend(r, 55)
        assert await a.sync()
        redis_server.client.flushall()
        assert await a.sync()
        st = a.state(r)
        assert st is not None
        assert st.exhausted
    finally:
        await a.close()


# -- two real processes ------------------------------------------------------------------

PROCESS = """
import asyncio, json, sys
from modelroute.proxy.budget import BudgetBook
from modelroute.proxy.table import CompiledRoute

url, namespace, t0, route_json, amount = sys.argv[1:]
route = CompiledRoute.model_validate_json(route_json)

async def main():
    book = BudgetBook(url, namespace, clock=lambda: float(t0), sync_interval=0.05)
    await book.start()
    book.spend(route, float(amount))
    for _ in range(250):
        if book.syncs:
            break
        await asyncio.sleep(0.02)
    st = book.state(route)
    await book.close()
    print(json.dumps({"spent": st.spent_usd, "exhausted": st.exhausted,
                      "message": st.message(), "connected": book.syncs > 0}))

asyncio.run(main())
"""


async def run_process(url: str, route: CompiledRoute, amount: float) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROCESS,
        url,
        "team-a",
        repr(T0),
        route.model_dump_json(by_alias=True),
        repr(amount),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


async def test_two_real_processes_share_one_budget(redis_server: RedisServer) -> None:
    general = make_route("general", "reject", usdPerDay=50)
    first = await run_process(redis_server.url, general, 30)
    assert first["connected"]
    assert first["exhausted"] is False

    second = await run_process(redis_server.url, general, 25)
    assert second["connected"]
    assert second["spent"] == pytest.approx(55)  # it saw the first process's $30
    assert second["exhausted"] is True
    assert str(second["message"]).startswith('route "general" spent $55.0000 of its $50.00/day')

    # and this (third) process sees both and would reject too
    here = book(redis_server.url, sync_interval=60)
    await here.start()
    try:
        here.observe([general])
        assert await here.sync()
        st = here.state(general)
        assert st is not None
        assert st.exhausted
        assert st.spent_usd == pytest.approx(55)
    finally:
        await here.close()


async def test_redis_outage_mid_run_loses_no_spend(
    start_redis: Callable[[int | None], RedisServer],
) -> None:
    server = start_redis(None)
    r = make_route("general", "reject", usdPerDay=50)
    a = book(server.url, sync_interval=0.05, max_backoff=0.2, redis_timeout=0.5)
    await a.start()
    try:
        a.spend(r, 10)
        await eventually(lambda: a.redis_connected and a.syncs > 0)
        await eventually(lambda: float(server.client.get(key_of("general")) or 0) == 10)
        server.stop()  # Redis dies (and its data with it: persistence is off)
        a.spend(r, 45)  # served and counted while it is down
        await eventually(lambda: not a.redis_connected)
        st = a.state(r)
        assert st is not None
        assert st.exhausted  # 55 >= 50 on this pod's own count
        back = start_redis(server.port)
        await eventually(lambda: a.redis_connected)
        # the 45 spent during the outage reached the (empty) new Redis
        await eventually(lambda: float(back.client.get(key_of("general")) or 0) == 45)
        st = a.state(r)
        assert st is not None
        assert st.spent_usd == pytest.approx(55)  # never less than this pod's own spend
    finally:
        await a.close()


def key_of(route: str, window: Window = "day") -> str:
    return f"modelroute:budget:team-a:{route}:{window_span(window, T0).id}"
