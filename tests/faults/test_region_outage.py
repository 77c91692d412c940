"""A region dies under steady load: every request still succeeds through the other region.

One provider with two regions (us-east-1 preferred, eu-west-1 second), one
target, 40 requests/s open-loop.  After 2.5 s of normal traffic the
us-east-1 fake is taken away – either *refused* (its server stopped: the
connections in flight reset, new ones refused) or *black-holed* (it accepts
and never answers, the worst case: each request waits a first-byte timeout
before it fails over) – and black-holed behind a hedge (``afterMs: 100``),
where the losers never time out and the breaker must still open.  The
failover window is the time from the outage to the last request that needed a
second attempt; after it, the breaker is open and requests go straight to
eu-west-1.
"""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp
import pytest

from .conftest import (
    FakeFactory,
    ProxyFactory,
    policy_yaml,
    provider_yaml,
    quantile,
    route_yaml,
    status,
    steady_load,
)

FIRST_BYTE_MS = 300
HEDGE_AFTER_MS = 100
RATE = 40.0
BEFORE_S = 2.5
DURING_S = 3.0


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["refused", "blackhole", "blackhole-hedged"])
async def test_region_outage_under_load_loses_no_request(
    outage: str,
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    figures: list[str],
) -> None:
    us = await fakes("us-east-1", latency_ms=40)
    eu = await fakes("eu-west-1", latency_ms=40)
    routes = (
        provider_yaml("global", [("us-east-1", us.url), ("eu-west-1", eu.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: global, model: chat-a}"],
            f"  timeouts: {{firstByteMs: {FIRST_BYTE_MS}, totalMs: 5000}}\n"
            "  retry: {maxAttempts: 3, baseBackoffMs: 10, maxBackoffMs: 100}"
            + (f"\n  hedge: {{afterMs: {HEDGE_AFTER_MS}}}" if outage.endswith("hedged") else ""),
        )
        + policy_yaml(
            ["us-east-1", "eu-west-1"],
            "{errorRate: 0.5, minRequests: 20, windowSeconds: 10}",
            60,
        )
    )
    proxy = await proxies(routes)

    async def outage_after(delay: float) -> float:
        await asyncio.sleep(delay)
        at = time.perf_counter()
        if outage == "refused":
            await us.kill()
        else:
            us.knobs.update({"latency_ms": 60_000})
        return at

    gc.collect()  # earlier tests' garbage is not this proxy's pause to pay
    t0 = time.perf_counter()
    load, outage_at = await asyncio.gather(
        steady_load(http, proxy.base_url, RATE, BEFORE_S + DURING_S),
        outage_after(BEFORE_S),
    )
    assert not load.exceptions, load.exceptions[:3]
    failed = [a for a in load.answers if not a.complete()]
    assert not failed, [(a.status, a.body[:200]) for a in failed[:3]]
    assert len(load.answers) == int(RATE * (BEFORE_S + DURING_S))

    before = [a for a in load.answers if a.started + a.elapsed < outage_at]
    during = [a for a in load.answers if a.started + a.elapsed >= outage_at]
    failed_over = [a for a in during if a.attempts > 1]
    assert before and during and failed_over
    assert all(a.target.endswith("@us-east-1") for a in before)
    window = max(a.started + a.elapsed for a in failed_over) - outage_at
    p99_before = quantile([a.elapsed for a in before], 0.99)
    p99_during = quantile([a.elapsed for a in during], 0.99)
    figures.append(
        f"[{outage}] {len(load.answers)} requests at {RATE:.0f}/s in "
        f"{time.perf_counter() - t0:.1f}s, 0 failed; {len(failed_over)} failed over; "
        f"failover window {window * 1000:.0f} ms; p99 before {p99_before * 1000:.0f} ms, "
        f"during {p99_during * 1000:.0f} ms"
    )
    # a failed-over request costs one first-byte timeout (or, hedged, the hedge delay) more
    extra_ms = HEDGE_AFTER_MS if outage.endswith("hedged") else FIRST_BYTE_MS
    assert p99_during <= 2 * p99_before + extra_ms / 1000
    # once the breaker opened, traffic went straight to eu-west-1
    late = [a for a in load.answers if a.started > outage_at + window]
    assert late and all(a.attempts == 1 and a.target.endswith("@eu-west-1") for a in late)
    doc = await status(http, proxy)
    circuits = {c["candidate"]: c["state"] for c in doc["circuits"]}
    endpoints = {e["endpoint"]: e["state"] for e in doc["endpoints"]}
    if outage == "refused":  # refused connects (and then the probes) eject the endpoint:
        # it stays out while the probes keep failing, before its breaker saw 5 failures
        assert endpoints["global@us-east-1"] == "ejected", doc["endpoints"]
    else:  # a black hole accepts connections: the probes find it healthy, the breaker opens
        assert endpoints["global@us-east-1"] == "healthy", doc["endpoints"]
        assert circuits.get("global/chat-a@us-east-1") == "open", doc["circuits"]
    assert doc["health"]["errors"] == 0
