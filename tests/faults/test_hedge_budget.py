"""Hedging (first answer wins, the loser is cancelled) and the retry budget (bounded amplification)."""

from __future__ import annotations

import asyncio

import aiohttp
from modelroute.proxy.process import RunningProxy

from .conftest import (
    Fake,
    FakeFactory,
    ProxyFactory,
    ask,
    primary_backup_yaml,
    provider_yaml,
    route_yaml,
    status,
)


async def hedged(
    fakes: FakeFactory, proxies: ProxyFactory, extra: str = "", **primary_knobs: object
) -> tuple[Fake, Fake, str, RunningProxy]:
    primary = await fakes("us-east-1", **primary_knobs)
    backup = await fakes("eu-west-1", latency_ms=20)
    proxy = await proxies(
        primary_backup_yaml(
            primary.url,
            backup.url,
            "  timeouts: {firstByteMs: 2000, totalMs: 5000}\n  hedge: {afterMs: 50}\n" + extra,
        )
    )
    return primary, backup, proxy.base_url, proxy


async def wait_cancelled(fake: object) -> None:
    for _ in range(100):
        if fake.stats.in_flight == 0:
            return
        await asyncio.sleep(0.01)


async def test_hedge_answers_from_the_backup_and_cancels_the_slow_primary(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    primary, backup, base, _ = await hedged(fakes, proxies, latency_ms=500)
    answer = await ask(http, base)
    assert answer.complete() and answer.target.startswith("backup/")
    assert answer.attempts == 2
    print(f"\n[hedge] afterMs 50 + backup 20 ms → answered in {answer.elapsed * 1000:.0f} ms")
    assert 0.05 + 0.02 <= answer.elapsed < 0.3  # ~50 ms + the backup, not the primary's 500 ms
    await wait_cancelled(primary)
    assert primary.stats.requests == 1 and primary.stats.cancelled == 1
    assert backup.stats.requests == 1


async def test_fast_primary_wins_and_no_hedge_is_sent(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    _, backup, base, _ = await hedged(fakes, proxies, latency_ms=5)
    for _ in range(5):
        answer = await ask(http, base)
        assert answer.complete() and answer.target.startswith("primary/") and answer.attempts == 1
    assert backup.stats.requests == 0


async def test_stream_is_hedged_before_its_first_byte_never_after(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    # a slow stream whose first chunk came at once: it is committed, never hedged
    primary, backup, base, _ = await hedged(fakes, proxies, tokens_per_second=20, output_tokens=6)
    answer = await ask(http, base, stream=True)
    assert answer.complete() and answer.target.startswith("primary/") and answer.elapsed > 0.25
    assert backup.stats.requests == 0
    # a stream whose first chunk is late (headers at once, then 500 ms): hedged like a request
    primary.knobs.update({"ttft_ms": 500, "tokens_per_second": 0})
    answer = await ask(http, base, stream=True)
    assert answer.complete() and answer.target.startswith("backup/") and answer.elapsed < 0.3
    await wait_cancelled(primary)
    assert primary.stats.cancelled == 1


async def test_retry_budget_bounds_upstream_attempts_when_everything_fails(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fakes("us-east-1", error_rate=1.0, error_status=503)
    backup = await fakes("eu-west-1", error_rate=1.0, error_status=503)
    proxy = await proxies(
        primary_backup_yaml(
            primary.url,
            backup.url,
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
    assert primary.stats.cancelled == 1


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
    assert fake.stats.requests == 82
    assert elapsed[0] < 0.1 and elapsed[-1] > 0.2, elapsed
    # the ceiling holds: the slowest waited at most 300 ms plus the proxy's and the fake's
    # own time (two attempts, a wave of 10), with room for a loaded 2-core CI box
    assert elapsed[-1] < 0.3 + 0.3, elapsed


async def test_hedge_losses_open_the_breaker_only_as_an_unbroken_streak(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """A slow tail loses some races and keeps its breaker; a black hole loses all and trips it."""
    # hedges draw on the retry budget: a 15 % tail needs more than the default 20 %
    primary, _, base, proxy = await hedged(
        fakes,
        proxies,
        "  retry: {budgetRatio: 0.5}",
        latency_ms=5,
        slow_share=0.15,
        slow_extra_ms=400,
    )
    answers = [await ask(http, base) for _ in range(60)]
    lost = sum(a.target.startswith("backup/") for a in answers)
    assert 3 <= lost < 60 and all(a.complete() for a in answers)
    doc = await status(http, proxy)
    assert doc["circuits"] == []  # the tail never cost the primary its breaker
    primary.knobs.update({"latency_ms": 60_000, "slow_share": 0.0})
    for _ in range(5):  # default failureThreshold: five races lost in a row
        assert (await ask(http, base)).target.startswith("backup/")
    doc = await status(http, proxy)
    assert [(c["candidate"], c["state"]) for c in doc["circuits"]] == [
        ("primary/chat-a@us-east-1", "open")
    ]
    seen = primary.stats.requests
    answer = await ask(http, base)
    assert answer.attempts == 1 and answer.target.startswith("backup/")
    assert primary.stats.requests == seen
