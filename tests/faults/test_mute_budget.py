"""A region whose server accepts and never answers, its kernel ACKing: no request may fail.

The kernel suite's "mute" drops the data, so the silence watch sees it
(docs/failover.md §6b).  Here the fake's process simply never answers
(``latency_ms`` 60 s) while its kernel acknowledges every byte: only the
first-byte timeout ends those attempts.  Every request in flight when it
went quiet needs a retry, more than the retry budget's share (here 10 % of
the first attempts in 10 s) – and once the breaker opened, those retries only
move load to eu-west-1, where new requests go anyway, so they are not
charged (``policy.retry_is_free``).  Before, some of them ended with 504
"retry budget exhausted" although eu-west-1 was healthy.
"""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp
import pytest

from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml, steady_load

RATE = 20.0
BEFORE_S = 4.0
DURING_S = 3.0
FIRST_BYTE_MS = 1000


@pytest.mark.slow
async def test_a_silent_server_costs_retries_the_budget_does_not_refuse(
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    figures: list[str],
) -> None:
    us = await fakes("us-east-1", latency_ms=20)
    eu = await fakes("eu-west-1", latency_ms=20)
    routes = provider_yaml("global", [("us-east-1", us.url), ("eu-west-1", eu.url)]) + route_yaml(
        "chat",
        ["chat"],
        ["{provider: global, model: chat-a}"],
        f"  timeouts: {{firstByteMs: {FIRST_BYTE_MS}, totalMs: 5000}}\n"
        "  retry: {maxAttempts: 3, budgetRatio: 0.1}",
    )
    proxy = await proxies(routes)

    async def quiet_after(delay: float) -> float:
        await asyncio.sleep(delay)
        us.knobs.update({"latency_ms": 60_000})
        return time.perf_counter()

    gc.collect()
    load, _ = await asyncio.gather(
        steady_load(http, proxy.base_url, RATE, BEFORE_S + DURING_S, concurrency=200),
        quiet_after(BEFORE_S),
    )
    assert not load.exceptions, load.exceptions[:3]
    failed = [a for a in load.answers if not a.complete()]
    caught = [a for a in load.answers if a.attempts > 1]
    worst = max(a.elapsed for a in load.answers)
    figures.append(
        f"[server never answers] {len(load.answers)} requests at {RATE:.0f}/s, "
        f"firstByteMs {FIRST_BYTE_MS}, budgetRatio 0.1: {len(failed)} failed, "
        f"{len(caught)} retried after a first-byte timeout; worst {worst:.2f} s"
    )
    assert caught, "nothing was caught by the silence"
    assert not failed, [(a.status, a.body[:200]) for a in failed[:3]]
    # the retries exceeded what the budget alone allows (max(10, 10 % of ~100 first attempts))
    assert len(caught) > 10
    assert all(a.target.endswith("@eu-west-1") for a in caught)
