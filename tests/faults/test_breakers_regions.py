"""Circuit breakers, region ejection and failback, residency, latency-aware ordering.

Each is checked where a user sees it: which fake got the requests, what
``/status`` says, what the client was answered.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from .conftest import (
    FakeFactory,
    ProxyFactory,
    ask,
    policy_yaml,
    primary_backup_yaml,
    provider_yaml,
    route_yaml,
    status,
)

TIMEOUTS = (
    "  timeouts: {firstByteMs: 500, totalMs: 3000}\n"
    "  retry: {maxAttempts: 3, baseBackoffMs: 5, maxBackoffMs: 20}\n"
)


def circuit(doc: dict[str, object], candidate: str) -> str:
    for c in doc["circuits"]:  # type: ignore[attr-defined]
        if c["candidate"] == candidate:
            return str(c["state"])
    return "closed"


@pytest.mark.slow
async def test_breaker_opens_skips_probes_once_and_closes(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    primary = await fakes("us-east-1", error_rate=1.0, error_status=503, latency_ms=150)
    backup = await fakes("eu-west-1")
    proxy = await proxies(
        primary_backup_yaml(
            primary.url,
            backup.url,
            TIMEOUTS + "  circuitBreaker: {failureThreshold: 3, windowSeconds: 10, openSeconds: 1}",
        )
    )
    key = "primary/chat-a@us-east-1"
    for _ in range(3):
        assert (await ask(http, proxy.base_url)).complete()
    assert primary.stats.requests == 3
    doc = await status(http, proxy)
    assert circuit(doc, key) == "open"
    # open: skipped, straight to the backup in one attempt
    for _ in range(5):
        answer = await ask(http, proxy.base_url)
        assert answer.complete() and answer.attempts == 1 and answer.target.startswith("backup/")
    assert primary.stats.requests == 3

    # after openSeconds: half-open, one probe; the probe fails and the breaker opens again
    await asyncio.sleep(1.05)
    assert circuit(await status(http, proxy), key) == "half-open"
    assert (await ask(http, proxy.base_url)).complete()
    assert primary.stats.requests == 4
    assert circuit(await status(http, proxy), key) == "open"

    # the next half-open: the primary is fine again; of 5 concurrent requests exactly one probes
    primary.knobs.update({"error_rate": 0.0})
    await asyncio.sleep(1.05)
    answers = await asyncio.gather(*(ask(http, proxy.base_url) for _ in range(5)))
    assert all(a.complete() for a in answers)
    assert primary.stats.requests == 5
    assert sum(a.target.startswith("primary/") for a in answers) == 1
    doc = await status(http, proxy)
    assert circuit(doc, key) == "closed"
    assert [c["trips"] for c in doc["circuits"] if c["candidate"] == key] == [2]
    answer = await ask(http, proxy.base_url)
    assert answer.target == key and primary.stats.requests == 6


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "ejection", "reason"),
    [
        ({"error_rate": 1.0}, "{errorRate: 0.5, minRequests: 8, windowSeconds: 10}", "error rate"),
        (
            {"latency_ms": 120},
            "{errorRate: 0.5, p99LatencyMs: 100, minRequests: 8, windowSeconds: 10}",
            "p99",
        ),
    ],
    ids=["error-rate", "p99"],
)
async def test_region_is_ejected_over_a_minimum_sample_and_fails_back_after_probing(
    fault: dict[str, object],
    ejection: str,
    reason: str,
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
) -> None:
    us = await fakes("us-east-1", **fault)
    eu = await fakes("eu-west-1")
    proxy = await proxies(
        provider_yaml("global", [("eu-west-1", eu.url), ("us-east-1", us.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: global, model: chat-a}"],
            TIMEOUTS + "  circuitBreaker: {failureThreshold: 1000}",  # the region rule alone
        )
        + policy_yaml(["us-east-1", "eu-west-1"], ejection, failback_seconds=1)
    )
    for i in range(8):
        answer = await ask(http, proxy.base_url)
        assert answer.complete()
        doc = await status(http, proxy)
        region = {r["region"]: r for r in doc["regions"]}["global@us-east-1"]
        assert region["ejected"] == (i == 7), (i, region)  # not before the minimum sample
    assert reason in region["reason"]
    for _ in range(5):  # ejected: not tried at all
        answer = await ask(http, proxy.base_url)
        assert answer.complete() and answer.target.endswith("@eu-west-1") and answer.attempts == 1
    assert us.stats.requests == 8

    us.knobs.update({"error_rate": 0.0, "latency_ms": 0})
    await asyncio.sleep(1.05)  # failbackDelaySeconds
    answer = await ask(http, proxy.base_url)  # the probe
    assert answer.target.endswith("@us-east-1") and us.stats.requests == 9
    doc = await status(http, proxy)
    region = {r["region"]: r for r in doc["regions"]}["global@us-east-1"]
    assert region == {"region": "global@us-east-1", "ejected": False, "reason": "", "ejections": 1}
    for _ in range(3):
        assert (await ask(http, proxy.base_url)).target.endswith("@us-east-1")


@pytest.mark.parametrize("fault", ["5xx", "refused", "breaker-open"])
async def test_residency_never_spills_out_of_the_allowed_regions(
    fault: str, fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """A regional-cn route whose cn endpoint fails answers an error that says why; no spill."""
    cn = await fakes("cn-north-1", error_rate=1.0)
    same_provider_us = await fakes("us-east-1")
    other_us = await fakes("us-east-1")
    proxy = await proxies(
        provider_yaml("cnapi", [("cn-north-1", cn.url), ("us-east-1", same_provider_us.url)])
        + provider_yaml("globalapi", [("us-east-1", other_us.url)])
        + route_yaml(
            "regional-cn",
            ["chat"],
            ["{provider: cnapi, model: chat-a}", "{provider: globalapi, model: chat-b, tier: 1}"],
            TIMEOUTS
            + "  circuitBreaker: {failureThreshold: 2, openSeconds: 30}\n"
            + "  residency: {regions: [cn-north-1]}",
        )
    )
    if fault == "refused":
        await cn.kill()
    for _ in range(6 if fault == "breaker-open" else 2):  # the breaker opens: panic stays in cn
        answer = await ask(http, proxy.base_url)
        assert answer.status in (502, 503) and answer.well_formed_error()
        message = answer.error()["message"]  # type: ignore[index]
        assert "residency.regions ['cn-north-1']" in message, message
    assert same_provider_us.stats.requests == 0 and other_us.stats.requests == 0


async def test_target_over_the_latency_budget_drops_behind_the_fast_one(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    # wide margins on both sides of the budget: a loaded 2-core CI box can push the fast
    # target's p99 well past its 5 ms, but not past 250 ms
    fast = await fakes("us-east-1", latency_ms=5)
    slow = await fakes("eu-west-1", latency_ms=400)
    proxy = await proxies(
        provider_yaml("fast", [("us-east-1", fast.url)])
        + provider_yaml("slow", [("eu-west-1", slow.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: fast, model: chat-a}", "{provider: slow, model: chat-b}"],
            # a first-byte timeout far above the slow target's 400 ms: on a loaded box a slow
            # answer that timed out would reach the fake but leave no latency sample
            "  timeouts: {firstByteMs: 3000, totalMs: 6000}\n  latencyBudgetMs: 250",
        )
    )
    gate = asyncio.Semaphore(20)
    served_by_slow = 0

    async def one() -> None:
        nonlocal served_by_slow
        async with gate:
            answer = await ask(http, proxy.base_url)
            assert answer.complete()
            served_by_slow += answer.target.startswith("slow/")

    # same tier, equal weights: both get traffic until the proxy holds a p99 for the slow
    # one, i.e. 20 answers it served (the sample is taken before the answer goes out)
    while served_by_slow < 20:
        await asyncio.gather(*(one() for _ in range(20)))
    seen = slow.stats.requests
    answers = [await ask(http, proxy.base_url) for _ in range(20)]
    assert all(a.target.startswith("fast/") for a in answers)
    assert slow.stats.requests == seen
    # still a candidate, behind: when the fast one fails, the slow one serves
    fast.knobs.update({"error_rate": 1.0})
    answer = await ask(http, proxy.base_url)
    assert answer.complete() and answer.target.startswith("slow/")


async def test_a_late_success_from_before_the_trip_does_not_close_the_breaker(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Only the half-open probe may close a breaker, not a slow request sent before it opened."""
    primary = await fakes("us-east-1", latency_ms=300)
    backup = await fakes("eu-west-1")
    proxy = await proxies(
        primary_backup_yaml(
            primary.url,
            backup.url,
            TIMEOUTS + "  circuitBreaker: {failureThreshold: 3, openSeconds: 30}",
        )
    )
    slow = asyncio.ensure_future(ask(http, proxy.base_url))  # in flight at the primary, 300 ms
    await asyncio.sleep(0.05)
    primary.knobs.update({"latency_ms": 0, "error_rate": 1.0})
    for _ in range(3):
        assert (await ask(http, proxy.base_url)).target.startswith("backup/")
    assert circuit(await status(http, proxy), "primary/chat-a@us-east-1") == "open"
    primary.knobs.update({"error_rate": 0.0})
    late = await slow
    assert late.complete() and late.target.startswith("primary/")
    assert circuit(await status(http, proxy), "primary/chat-a@us-east-1") == "open"
    seen = primary.stats.requests
    assert (await ask(http, proxy.base_url)).target.startswith("backup/")
    assert primary.stats.requests == seen


async def test_a_late_success_from_before_the_ejection_does_not_fail_the_region_back(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Only a probe after failbackDelaySeconds may put a region back."""
    us = await fakes("us-east-1", latency_ms=300)
    eu = await fakes("eu-west-1")
    proxy = await proxies(
        provider_yaml("global", [("us-east-1", us.url), ("eu-west-1", eu.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: global, model: chat-a}"],
            TIMEOUTS + "  circuitBreaker: {failureThreshold: 1000}",
        )
        + policy_yaml(
            ["us-east-1", "eu-west-1"], "{errorRate: 0.5, minRequests: 3}", failback_seconds=30
        )
    )
    slow = asyncio.ensure_future(ask(http, proxy.base_url))
    await asyncio.sleep(0.05)
    us.knobs.update({"latency_ms": 0, "error_rate": 1.0})
    for _ in range(3):
        assert (await ask(http, proxy.base_url)).target.endswith("@eu-west-1")

    def ejected(doc: dict[str, object]) -> bool:
        return bool({r["region"]: r for r in doc["regions"]}["global@us-east-1"]["ejected"])  # type: ignore[attr-defined]

    assert ejected(await status(http, proxy))
    us.knobs.update({"error_rate": 0.0})
    late = await slow
    assert late.complete() and late.target.endswith("@us-east-1")
    assert ejected(await status(http, proxy))
    assert (await ask(http, proxy.base_url)).target.endswith("@eu-west-1")
