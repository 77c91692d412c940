"""Streams that end without a usage event are still charged: cost caps must not leak.

A stream the upstream cuts, or the client abandons, never reaches its usage
event, yet the provider bills the prompt and the tokens it generated. The
proxy charges an estimate (prompt estimate in, one token per data event out),
counts it in ``modelroute_estimated_tokens_total`` and spends it from the budget.
"""

from __future__ import annotations

import asyncio

import aiohttp
from modelroute.proxy.process import RunningProxy
from modelroute.proxy.request import Endpoint, extract_features
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Fake, FakeFactory, ProxyFactory, provider_yaml, route_yaml

PRICED = """  models:
    - {name: priced-chat, upstreamModel: priced-chat, inputUSDPerMTok: 1000000,
       outputUSDPerMTok: 2000000, contextTokens: 128000, capabilities: [text]}
"""
BODY = {
    "model": "general",
    "messages": [{"role": "user", "content": "hello there"}],
    "stream": True,
}
LABELS = {"route": "general", "model": "priced-chat", "provider": "api"}


def prompt_estimate() -> int:
    return extract_features(BODY, Endpoint.CHAT).prompt_tokens


async def scrape(admin_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as http, http.get(admin_url + "/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def priced_proxy(
    fakes: FakeFactory, proxies: ProxyFactory, **knobs: object
) -> tuple[Fake, RunningProxy]:
    fake = await fakes("us-east-1", **knobs)
    proxy = await proxies(
        provider_yaml("api", [("us-east-1", fake.url)], PRICED)
        + route_yaml(
            "general",
            ["general"],
            ["{provider: api, model: priced-chat}"],
            "  timeouts: {firstByteMs: 2000, totalMs: 10000}\n"
            "  budget: {usdPerDay: 1000, action: reject}",
        )
    )
    return fake, proxy


async def test_a_stream_the_upstream_cuts_is_charged_an_estimate(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    _, proxy = await priced_proxy(fakes, proxies, cut_after=5)
    async with (
        aiohttp.ClientSession() as http,
        http.post(proxy.base_url + "/chat/completions", json=BODY) as resp,
    ):
        body = await resp.read()
    assert b"stream_interrupted" in body  # the client is told the answer is incomplete
    assert proxy.admin_url is not None
    s = await scrape(proxy.admin_url)
    estimated_in = s[
        ("modelroute_estimated_tokens_total", frozenset({**LABELS, "type": "input"}.items()))
    ]
    estimated_out = s[
        ("modelroute_estimated_tokens_total", frozenset({**LABELS, "type": "output"}.items()))
    ]
    # the role event and five content events arrived before the cut: one token each
    assert estimated_out == 6
    assert estimated_in == prompt_estimate() > 0
    # the estimate is in the token totals and the cost, at the model's prices ($1/token in,
    # $2/token out here), and spent from the budget
    assert s[("modelroute_tokens_total", frozenset({**LABELS, "type": "output"}.items()))] == 6
    cost = s[("modelroute_cost_usd_total", frozenset(LABELS.items()))]
    assert cost == estimated_in * 1 + estimated_out * 2
    remaining = s[("modelroute_budget_remaining_usd", frozenset({"route": "general"}.items()))]
    assert remaining == 1000 - cost


async def test_a_stream_the_client_abandons_is_charged_what_it_consumed(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake, proxy = await priced_proxy(fakes, proxies, tokens_per_second=50, output_tokens=500)
    async with aiohttp.ClientSession() as http:
        resp = await http.post(proxy.base_url + "/chat/completions", json=BODY)
        seen = 0
        async for _ in resp.content:  # a few lines, then the app's "stop generating" button
            seen += 1
            if seen >= 8:
                break
        resp.close()
    assert proxy.admin_url is not None
    for _ in range(100):  # the proxy notices the disconnect on its next write
        s = await scrape(proxy.admin_url)
        key = ("modelroute_estimated_tokens_total", frozenset({**LABELS, "type": "output"}.items()))
        if key in s:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the abandoned stream was never accounted for")
    out = s[key]
    assert 1 <= out < 500, out  # what was generated before the client left, not the whole answer
    cost = s[("modelroute_cost_usd_total", frozenset(LABELS.items()))]
    assert cost == prompt_estimate() * 1 + out * 2
    outcome = {**LABELS, "region": "us-east-1", "outcome": "client_closed"}
    assert s[("modelroute_requests_total", frozenset(outcome.items()))] == 1
    remaining = s[("modelroute_budget_remaining_usd", frozenset({"route": "general"}.items()))]
    assert remaining == 1000 - cost
    assert fake.fake.stats.cancelled == 1


async def test_a_complete_stream_with_usage_is_not_estimated(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    _, proxy = await priced_proxy(fakes, proxies, output_tokens=7)
    async with (
        aiohttp.ClientSession() as http,
        http.post(proxy.base_url + "/chat/completions", json=BODY) as resp,
    ):
        assert b"[DONE]" in await resp.read()
    assert proxy.admin_url is not None
    s = await scrape(proxy.admin_url)
    assert not any(name == "modelroute_estimated_tokens_total" for name, _ in s)
    assert s[("modelroute_tokens_total", frozenset({**LABELS, "type": "output"}.items()))] == 7
