"""A full connection pool is not a sick upstream.

When every one of a provider's ``maxConnections`` is busy (long streams, a
burst), new attempts wait for a free connection. A first-byte timeout that
fires while still waiting says nothing about the upstream: the attempt fails
over (``pool_full``) without counting against the candidate's breaker, so a
healthy provider is not ejected for being popular.
"""

from __future__ import annotations

import asyncio

import aiohttp

from .conftest import MODELS, FakeFactory, ProxyFactory, ask, provider_yaml, route_yaml, status
from .test_breakers_regions import circuit


async def test_waiting_for_a_pooled_connection_fails_over_without_opening_the_breaker(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fakes("us-east-1", tokens_per_second=20, output_tokens=200)  # a 10 s stream
    backup = await fakes("eu-west-1")
    proxy = await proxies(
        provider_yaml("primary", [("us-east-1", primary.url)], MODELS + "  maxConnections: 1\n")
        + provider_yaml("backup", [("eu-west-1", backup.url)])
        + route_yaml(
            "chat",
            ["chat"],
            [
                "{provider: primary, model: chat-a, tier: 0}",
                "{provider: backup, model: chat-b, tier: 1}",
            ],
            "  timeouts: {firstByteMs: 200, totalMs: 3000}\n"
            "  retry: {maxAttempts: 2, baseBackoffMs: 5, maxBackoffMs: 20}\n"
            "  circuitBreaker: {failureThreshold: 3, windowSeconds: 60, openSeconds: 60}",
        )
    )
    # one long stream holds the primary's only connection
    payload = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    held = await http.post(proxy.base_url + "/chat/completions", json=payload)
    assert held.status == 200
    await held.content.readline()
    assert primary.fake.stats.in_flight == 1
    try:
        answers = [await ask(http, proxy.base_url) for _ in range(5)]
        # each waited firstByteMs in the primary's queue, then the backup answered
        assert all(a.complete() and a.target.startswith("backup/") for a in answers)
        assert all(a.attempts == 2 for a in answers)
        assert primary.fake.stats.requests == 1  # nothing else was ever sent to it
        # five "failures" over a threshold of three, yet the primary's circuit is closed
        assert circuit(await status(http, proxy), "primary/chat-a@us-east-1") == "closed"
        assert proxy.admin_url is not None
        async with http.get(proxy.admin_url + "/metrics") as resp:
            metrics = await resp.text()
        pool_full = [
            line
            for line in metrics.splitlines()
            if line.startswith("modelroute_upstream_attempts_total{")
            and 'result="pool_full"' in line
        ]
        assert len(pool_full) == 1 and pool_full[0].endswith(" 5.0"), pool_full
        # what an operator reads to see why: the pool is spent, on the primary only
        assert 'modelroute_upstream_connections{provider="primary",state="in_use"} 1.0' in metrics
        assert 'modelroute_upstream_queued_requests{provider="primary"} 0.0' in metrics
        # and while a request is queued, it is counted
        waiting = asyncio.create_task(ask(http, proxy.base_url))
        await asyncio.sleep(0.1)  # inside its 200 ms firstByteMs wait for the connection
        async with http.get(proxy.admin_url + "/metrics") as resp:
            assert 'modelroute_upstream_queued_requests{provider="primary"} 1.0' in (
                await resp.text()
            )
        assert (await waiting).target.startswith("backup/")
    finally:
        held.close()
    for _ in range(100):  # the stream's connection goes back (closed) once the client left
        if primary.fake.stats.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    answer = await ask(http, proxy.base_url)
    assert answer.complete() and answer.target.startswith("primary/")
