"""One retry layer: an SDK call with the default ``max_retries=2`` must not multiply the route's attempts.

Each test counts what the fake upstreams saw.  Without ``x-should-retry:
false`` the SDK retries a 503/429 twice, and the upstreams see three times
the route's ``maxAttempts``.
"""

from __future__ import annotations

import aiohttp
import openai
import pytest

from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml

MESSAGES = [{"role": "user", "content": "hello"}]


def sdk(base_url: str) -> openai.AsyncOpenAI:
    # the SDK's defaults (max_retries=2), as apps run it
    return openai.AsyncOpenAI(base_url=base_url, api_key="unused", timeout=10)


async def two_failing(fakes: FakeFactory, proxies: ProxyFactory, retry: str, **knobs: object):
    a = await fakes("us-east-1", **knobs)
    b = await fakes("eu-west-1", **knobs)
    proxy = await proxies(
        provider_yaml("pa", [("us-east-1", a.url)])
        + provider_yaml("pb", [("eu-west-1", b.url)])
        + route_yaml(
            "general",
            ["general"],
            [
                "{provider: pa, model: qwen3-8b, tier: 0}",
                "{provider: pb, model: qwen3-32b, tier: 1}",
            ],
            f"  retry: {retry}\n  timeouts: {{firstByteMs: 1000, totalMs: 8000}}",
        )
    )
    return a, b, proxy


async def test_an_exhausted_route_is_hit_exactly_max_attempts_times_per_sdk_call(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    a, b, proxy = await two_failing(
        fakes,
        proxies,
        "{maxAttempts: 3, baseBackoffMs: 1, maxBackoffMs: 5}",
        error_rate=1.0,
        error_status=503,
    )
    c = sdk(proxy.base_url)
    with pytest.raises(openai.InternalServerError) as caught:
        await c.chat.completions.create(model="general", messages=MESSAGES)
    assert a.fake.stats.requests + b.fake.stats.requests == 3  # not 9
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.response.headers["x-modelroute-attempts"] == "3"
    await c.close()


async def test_a_passed_through_upstream_error_is_not_retried_by_the_sdk(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    # 429 is not in retryOn: the route says "don't retry"; the SDK must not either,
    # and the upstream's Retry-After still reaches the app in both spellings
    a, b, proxy = await two_failing(
        fakes,
        proxies,
        "{maxAttempts: 3, retryOn: [5xx, connect, timeout]}",
        error_rate=1.0,
        error_status=429,
        retry_after=2,
    )
    c = sdk(proxy.base_url)
    with pytest.raises(openai.RateLimitError) as caught:
        await c.chat.completions.create(model="general", messages=MESSAGES)
    assert a.fake.stats.requests + b.fake.stats.requests == 1  # not 3
    headers = caught.value.response.headers
    assert headers["x-should-retry"] == "false"
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "2000"
    await c.close()


async def test_a_known_hold_is_passed_on_and_a_request_that_sent_nothing_may_be_retried(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    a = await fakes("us-east-1", error_rate=1.0, error_status=429, retry_after=30)
    proxy = await proxies(
        provider_yaml("pa", [("us-east-1", a.url)])
        + route_yaml(
            "general",
            ["general"],
            ["{provider: pa, model: qwen3-8b}"],
            "  retry: {maxAttempts: 2, baseBackoffMs: 1, maxBackoffMs: 5}\n"
            "  timeouts: {firstByteMs: 1000, totalMs: 3000}",
        )
    )
    c = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        await c.chat.completions.create(model="general", messages=MESSAGES)
    first = caught.value.response.headers
    assert first["x-should-retry"] == "false"  # it reached the upstream once
    assert 29 <= int(first["retry-after"]) <= 30
    assert a.fake.stats.requests == 1
    # now every candidate is held: nothing is sent, the wait is said, the SDK may retry later
    with pytest.raises(openai.RateLimitError) as caught:
        await c.chat.completions.create(model="general", messages=MESSAGES)
    held = caught.value.response.headers
    assert "x-should-retry" not in held
    assert 28 <= int(held["retry-after"]) <= 30 and 28_000 <= int(held["retry-after-ms"]) <= 30_000
    assert a.fake.stats.requests == 1
    await c.close()


async def test_a_passed_through_429_keeps_the_upstreams_retry_after(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes(error_rate=1.0, error_status=429, retry_after=7)
    proxy = await proxies(
        provider_yaml("api", [("us-east-1", fake.url)])
        + route_yaml(
            "general",
            ["general"],
            ["{provider: api, model: deepseek-v4-flash}"],
            "  retry: {retryOn: [5xx, timeout, connect]}",
        )
    )
    body = {"model": "general", "messages": MESSAGES}
    async with (
        aiohttp.ClientSession() as http,
        http.post(proxy.base_url + "/chat/completions", json=body) as resp,
    ):
        status, headers = resp.status, resp.headers
    assert status == 429
    assert headers["Retry-After"] == "7"
