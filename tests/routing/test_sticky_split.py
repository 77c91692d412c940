"""A/B splits with stickiness: ``sticky: {header: x-user-id}`` keeps one user on one arm.

Two targets weighted 3:1 in one tier.  With the header, the arm is a hash of
the value: the same user always lands on the same arm, and over many users
the split follows the weights.  Without it, the split is still weighted (a
fresh weighted draw per request).  Per-arm figures are the ordinary metrics
labelled by model: requests, attempts (errors), time to first token, cost.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp

from ..proxy.conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml
from .conftest import metric_sum

ARM_A = "deepseek-v4-flash"  # weight 3, $0.25/M output
ARM_B = "qwen3-32b"  # weight 1, $0.28/M output
PRICE = {ARM_A: 0.25, ARM_B: 0.28}


def split_routes(url: str, extra: str = "") -> str:
    return provider_yaml("fake", [("us-east-1", url)]) + route_yaml(
        "ab",
        ["ab"],
        [
            f"{{provider: fake, model: {ARM_A}, tier: 0, weight: 3}}",
            f"{{provider: fake, model: {ARM_B}, tier: 0, weight: 1}}",
        ],
        "  sticky: {header: x-user-id}\n"
        + (extra or "  retry: {maxAttempts: 2, baseBackoffMs: 1, maxBackoffMs: 2}"),
    )


async def ask(
    session: aiohttp.ClientSession, base: str, user: str | None, sem: asyncio.Semaphore
) -> str:
    """One request; returns the arm (catalogue model name) that served it."""
    headers = {"x-user-id": user} if user is not None else {}
    body = {"model": "ab", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    async with sem, session.post(f"{base}/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        await r.read()
        target = r.headers["x-modelroute-target"]  # fake/<model>@us-east-1
        return target.split("/", 1)[1].split("@", 1)[0]


async def test_same_user_same_arm_and_the_split_follows_the_weights(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes()
    proxy = await proxies(split_routes(fake.url))
    sem = asyncio.Semaphore(16)
    users = [f"user-{i:04d}" for i in range(400)]
    async with aiohttp.ClientSession() as session:
        # 400 distinct users, one request each
        first = await asyncio.gather(*(ask(session, proxy.base_url, u, sem) for u in users))
        arm_of = dict(zip(users, first, strict=True))
        by_arm = Counter(first)
        # every user again, three more times, interleaved and concurrent: nobody moves
        again = await asyncio.gather(
            *(ask(session, proxy.base_url, u, sem) for _ in range(3) for u in users[:100])
        )
        for u, arm in zip([u for _ in range(3) for u in users[:100]], again, strict=True):
            assert arm == arm_of[u], u
        # one user, many requests in a row
        one = [await ask(session, proxy.base_url, "user-0007", sem) for _ in range(30)]
        assert set(one) == {arm_of["user-0007"]}
        assert proxy.admin_url is not None
        async with session.get(proxy.admin_url + "/metrics") as resp:
            exposition = await resp.text()
        async with session.get(proxy.admin_url + "/explain?n=1") as resp:
            last = (await resp.json())["requests"][0]

    share_a = by_arm[ARM_A] / len(users)
    # 3:1 → 75 %; binomial σ over 400 users is 2.2 points, the tolerance is 3σ
    assert abs(share_a - 0.75) <= 0.065, by_arm
    assert by_arm[ARM_A] + by_arm[ARM_B] == len(users)

    # per-arm counts in modelroute_requests_total by model match what the clients saw
    served = Counter(first) + Counter(again) + Counter(one)
    for arm in (ARM_A, ARM_B):
        got = metric_sum(exposition, "modelroute_requests_total", route="ab", model=arm)
        assert got == served[arm], arm
        # per-arm latency: one TTFT observation per request that arm served
        ttft = metric_sum(
            exposition, "modelroute_time_to_first_token_seconds_count", route="ab", model=arm
        )
        assert ttft == served[arm]
        # per-arm cost: 20 output tokens per answer at the arm's catalogue price
        cost = metric_sum(exposition, "modelroute_cost_usd_total", route="ab", model=arm)
        assert abs(cost - served[arm] * 20 * PRICE[arm] / 1e6) < 1e-12
    # the user id is a label nowhere (cardinality: never user ids)
    assert "user-0" not in exposition
    # /explain names the arm the user was pinned to
    assert last["stickyArm"] == f"fake/{arm_of['user-0007']}"


async def test_without_the_header_the_split_is_still_weighted(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes()
    proxy = await proxies(split_routes(fake.url))
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:
        arms = await asyncio.gather(*(ask(session, proxy.base_url, None, sem) for _ in range(400)))
    share_a = Counter(arms)[ARM_A] / len(arms)
    # a fresh weighted draw per request: 75 % ± 4σ (σ = 2.2 points), so this can only fail
    # if the weights are ignored (50 %) or the draw is broken, not by bad luck (p < 1e-4)
    assert abs(share_a - 0.75) <= 0.09, Counter(arms)
    assert Counter(arms)[ARM_B] > 0


async def test_a_failing_arm_shows_in_its_own_error_figures_and_falls_over(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    """Per-arm errors: users pinned to a broken arm are served by the other, and it is counted."""
    good = await fakes()
    bad = await fakes(error_rate=1.0, error_status=503)
    routes = (
        provider_yaml("good", [("us-east-1", good.url)])
        + provider_yaml("bad", [("us-east-1", bad.url)])
        + route_yaml(
            "ab",
            ["ab"],
            [
                f"{{provider: good, model: {ARM_A}, tier: 0, weight: 3}}",
                f"{{provider: bad, model: {ARM_B}, tier: 0, weight: 1}}",
            ],
            "  sticky: {header: x-user-id}\n"
            "  retry: {maxAttempts: 2, baseBackoffMs: 1, maxBackoffMs: 2, budgetRatio: 1.0}\n"
            "  circuitBreaker: {failureThreshold: 1000}",
        )
    )
    proxy = await proxies(routes)
    sem = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as session:
        arms = await asyncio.gather(
            *(ask(session, proxy.base_url, f"u{i}", sem) for i in range(80))
        )
        assert proxy.admin_url is not None
        async with session.get(proxy.admin_url + "/metrics") as resp:
            exposition = await resp.text()
    assert set(arms) == {ARM_A}  # every user got an answer, from the healthy arm
    pinned_to_bad = bad.fake.stats.requests
    assert 5 <= pinned_to_bad <= 40  # ~1/4 of 80 users were pinned to the broken arm
    assert (
        metric_sum(
            exposition, "modelroute_upstream_attempts_total", route="ab", model=ARM_B, result="5xx"
        )
        == pinned_to_bad
    )
    assert (
        metric_sum(exposition, "modelroute_fallbacks_total", route="ab", from_model=ARM_B)
        == pinned_to_bad
    )
