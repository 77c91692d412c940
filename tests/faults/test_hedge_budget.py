"""Hedging (first answer wins, the loser is cancelled) and the retry budget (bounded amplification)."""

from __future__ import annotations

import asyncio

import aiohttp

from .conftest import FakeFactory, ProxyFactory, ask, provider_yaml, route_yaml


async def hedged(
    fakes: FakeFactory, proxies: ProxyFactory, **primary_knobs: object
) -> tuple[object, object, str]:
    primary = await fakes("us-east-1", **primary_knobs)
    backup = await fakes("eu-west-1", latency_ms=20)
    proxy = await proxies(
        provider_yaml("primary", [("us-east-1", primary.url)])
        + provider_yaml("backup", [("eu-west-1", backup.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-b, tier: 1}"],
            "  timeouts: {firstByteMs: 2000, totalMs: 5000}\n  hedge: {afterMs: 50}",
        )
    )
    return primary, backup, proxy.base_url


async def wait_cancelled(fake: object) -> None:
    for _ in range(100):
        if fake.stats.in_flight == 0:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.01)


async def test_hedge_answers_from_the_backup_and_cancels_the_slow_primary(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    primary, backup, base = await hedged(fakes, proxies, latency_ms=500)
    answer = await ask(http, base)
    assert answer.complete() and answer.target.startswith("backup/")
    assert answer.attempts == 2
    print(f"\n[hedge] afterMs 50 + backup 20 ms → answered in {answer.elapsed * 1000:.0f} ms")
    assert 0.05 + 0.02 <= answer.elapsed < 0.3  # ~50 ms + the backup, not the primary's 500 ms
    await wait_cancelled(primary)
    assert primary.stats.requests == 1 and primary.stats.cancelled == 1  # type: ignore[attr-defined]
    assert backup.stats.requests == 1  # type: ignore[attr-defined]


async def test_fast_primary_wins_and_no_hedge_is_sent(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    _, backup, base = await hedged(fakes, proxies, latency_ms=5)
    for _ in range(5):
        answer = await ask(http, base)
        assert answer.complete() and answer.target.startswith("primary/") and answer.attempts == 1
    assert backup.stats.requests == 0  # type: ignore[attr-defined]


async def test_stream_is_hedged_before_its_first_byte_never_after(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    # a slow stream whose first chunk came at once: it is committed, never hedged
    primary, backup, base = await hedged(fakes, proxies, tokens_per_second=20, output_tokens=6)
    answer = await ask(http, base, stream=True)
    assert answer.complete() and answer.target.startswith("primary/") and answer.elapsed > 0.25
    assert backup.stats.requests == 0  # type: ignore[attr-defined]
    # a stream whose first chunk is late (headers at once, then 500 ms): hedged like a request
    primary.knobs.update({"ttft_ms": 500, "tokens_per_second": 0})  # type: ignore[attr-defined]
    answer = await ask(http, base, stream=True)
    assert answer.complete() and answer.target.startswith("backup/") and answer.elapsed < 0.3
    await wait_cancelled(primary)
    assert primary.stats.cancelled == 1  # type: ignore[attr-defined]


async def test_retry_budget_bounds_upstream_attempts_when_everything_fails(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fakes("us-east-1", error_rate=1.0, error_status=503)
    backup = await fakes("eu-west-1", error_rate=1.0, error_status=503)
    proxy = await proxies(
        provider_yaml("primary", [("us-east-1", primary.url)])
        + provider_yaml("backup", [("eu-west-1", backup.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-b, tier: 1}"],
            "  timeouts: {firstByteMs: 500, totalMs: 3000}\n"
            "  retry: {maxAttempts: 3, baseBackoffMs: 1, maxBackoffMs: 5}",  # default ratio 0.2
        )
    )
    requests, ratio, floor = 100, 0.2, 10
    gate = asyncio.Semaphore(10)
    notes = []

    async def one() -> None:
        async with gate:
            answer = await ask(http, proxy.base_url)
            assert answer.status == 503 and answer.well_formed_error()
            notes.append("retry budget exhausted" in answer.error()["message"])  # type: ignore[index]

    await asyncio.gather(*(one() for _ in range(requests)))
    upstream = primary.stats.requests + backup.stats.requests
    print(
        f"\n[retry budget] {requests} requests, every upstream failing: {upstream} upstream "
        f"attempts (without a budget: {requests * 3}); {sum(notes)} answered 'budget exhausted'"
    )
    assert upstream <= requests * (1 + ratio) + floor
    assert upstream >= requests  # every request was tried once
    assert sum(notes) > 0


async def test_percentile_hedge_follows_the_targets_live_ttft(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """``hedge: {percentile: 90}``: no hedge until 20 samples, then after the live p90 (~10 ms)."""
    primary = await fakes("us-east-1", latency_ms=10)
    backup = await fakes("eu-west-1", latency_ms=10)
    proxy = await proxies(
        provider_yaml("primary", [("us-east-1", primary.url)])
        + provider_yaml("backup", [("eu-west-1", backup.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-b, tier: 1}"],
            "  timeouts: {firstByteMs: 2000, totalMs: 5000}\n  hedge: {percentile: 90}",
        )
    )
    for _ in range(20):
        assert (await ask(http, proxy.base_url)).target.startswith("primary/")
    assert backup.stats.requests == 0
    primary.knobs.update({"latency_ms": 600})
    answer = await ask(http, proxy.base_url)
    assert answer.complete() and answer.target.startswith("backup/") and answer.elapsed < 0.3
    await wait_cancelled(primary)
    assert primary.stats.cancelled == 1  # type: ignore[attr-defined]


async def test_backoff_is_full_jitter(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """One retry after ``uniform(0, 300 ms)``: spread over the whole range, not a fixed pause."""
    fake = await fakes("us-east-1", error_rate=1.0, error_status=503)
    proxy = await proxies(
        provider_yaml("primary", [("us-east-1", fake.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: primary, model: chat-a}"],
            "  timeouts: {firstByteMs: 1000, totalMs: 3000}\n"
            "  retry: {maxAttempts: 2, baseBackoffMs: 300, maxBackoffMs: 300, budgetRatio: 10}",
        )
    )
    await ask(http, proxy.base_url)  # warm the connections up
    answers = []
    for _ in range(4):  # waves of 10, so the proxy's own overhead stays a few ms
        answers += await asyncio.gather(*(ask(http, proxy.base_url) for _ in range(10)))
    assert all(a.status == 503 and a.attempts == 2 for a in answers)
    elapsed = sorted(a.elapsed for a in answers)
    assert fake.stats.requests == 82  # type: ignore[attr-defined]
    assert elapsed[0] < 0.1 and elapsed[-1] > 0.2, elapsed
    assert elapsed[-1] < 0.3 + 0.15
