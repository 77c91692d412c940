"""Route budgets through the live proxy: reject, downgrade, alert, and spend surviving a reload.

20 output tokens per answer; a budget of $0.000001/hour is spent by the first answer.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import openai
import pytest

from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml


def routes(url: str, action: str, latency_budget: int = 900) -> str:
    return provider_yaml("api", [("us-east-1", url)]) + route_yaml(
        "general",
        ["general"],
        [
            "{provider: api, model: kimi-k2.5, tier: 0}",
            "{provider: api, model: qwen3-8b, tier: 1}",
        ],
        f"  latencyBudgetMs: {latency_budget}\n"
        f"  budget: {{usdPerHour: 0.000001, action: {action}}}",
    )


def client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)


async def ask(c: openai.AsyncOpenAI) -> str:
    answer = await c.chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hi"}]
    )
    return answer.model


async def test_reject_answers_429_naming_the_budget_and_survives_a_reload(
    fakes: FakeFactory, proxies: ProxyFactory, tmp_path: Path
) -> None:
    fake = await fakes()
    proxy = await proxies(routes(fake.url, "reject"), reload_seconds=0.05)
    c = client(proxy.base_url)
    assert await ask(c) == "moonshot-k2.5"
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(c)
    message = str(caught.value)
    assert 'route "general" spent $' in message
    assert "/hour budget (action reject)" in message
    assert "raise spec.budget.usdPerHour or wait" in message
    assert fake.fake.stats.requests == 1  # nothing sent for the rejected request

    # a reload with a changed route keeps the spend: still rejected
    old_hash = proxy.proxy.store.current.hash
    (tmp_path / "routes-0.yaml").write_text(routes(fake.url, "reject", latency_budget=1200))
    for _ in range(100):
        if proxy.proxy.store.current.hash != old_hash:
            break
        await asyncio.sleep(0.05)
    assert proxy.proxy.store.current.hash != old_hash
    with pytest.raises(openai.RateLimitError):
        await ask(c)


async def test_downgrade_moves_to_the_cheapest_capable_target(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes()
    proxy = await proxies(routes(fake.url, "downgrade"))
    c = client(proxy.base_url)
    assert await ask(c) == "moonshot-k2.5"  # $3.00/M, tier 0
    assert await ask(c) == "Qwen/Qwen3-8B"  # $0.01/M, once the budget is spent


async def test_alert_keeps_serving_and_warns_once(
    fakes: FakeFactory, proxies: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake = await fakes()
    proxy = await proxies(routes(fake.url, "alert"))
    c = client(proxy.base_url)
    with caplog.at_level(logging.WARNING, logger="modelroute.dispatch"):
        for _ in range(3):
            assert await ask(c) == "moonshot-k2.5"
    warnings = [r for r in caplog.records if "budget" in r.getMessage()]
    assert len(warnings) == 1
    assert "action alert" in warnings[0].getMessage()
