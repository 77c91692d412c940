"""Open circuits on the live path: a skipped primary counts as a fallback (the silent-downgrade
alarm), and a circuit that opens mid-request is skipped by that request's own retries."""

from __future__ import annotations

import time

import aiohttp
from modelroute.proxy.keys import candidate_key
from prometheus_client.parser import text_string_to_metric_families

from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml
from .test_openai_sdk import two_tier


async def test_requests_served_past_an_open_circuit_are_fallbacks(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    primary, _, proxy = await two_tier(fakes, proxies)
    route = proxy.proxy.store.current.routes[0]
    key = candidate_key("primary", "deepseek-v4-flash", "us-east-1")
    proxy.proxy.health.breaker("general", key, route.circuit_breaker).trip(time.monotonic())
    body = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(proxy.base_url + "/chat/completions", json=body) as resp:
                assert resp.status == 200
                assert resp.headers["x-modelroute-target"] == "backup/qwen3-32b@eu-west-1"
        async with http.get(proxy.admin_url + "/metrics") as resp:
            text = await resp.text()
    assert primary.fake.stats.requests == 0
    fallbacks = {
        (s.labels["from_model"], s.labels["to_model"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "modelroute_fallbacks"
        for s in family.samples
        if s.name == "modelroute_fallbacks_total"
    }
    assert fallbacks == {("deepseek-v4-flash", "qwen3-32b", "circuit_open"): 3.0}


async def test_retries_skip_a_circuit_that_opened_during_the_request(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    a = await fakes("us-east-1", error_rate=1.0, error_status=503)  # trips its breaker
    b = await fakes("eu-west-1", error_rate=1.0, error_status=401)  # falls over, no trip
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
            "  retry: {maxAttempts: 3, baseBackoffMs: 1, maxBackoffMs: 2}\n"
            "  circuitBreaker: {failureThreshold: 1, windowSeconds: 60, openSeconds: 30}",
        )
    )
    body = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        await (await http.post(proxy.base_url + "/chat/completions", json=body)).read()
    # the third attempt goes to b again, not back to a's open circuit
    assert (a.fake.stats.requests, b.fake.stats.requests) == (1, 2)
