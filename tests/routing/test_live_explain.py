"""The admin ``/explain``: the last requests with route, category, candidates and drops.

What an operator reads when asking "why did this request go there?": the
live proxy's own decisions, newest first, without prompt text.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..proxy.conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml
from .test_auto_classify import AUTO_ROUTE, PROMPTS

SECRET_PROMPT = "the launch code is 0000-SECRET"


async def post(session: aiohttp.ClientSession, base: str, doc: dict[str, Any]) -> int:
    async with session.post(f"{base}/chat/completions", json=doc) as resp:
        await resp.read()
        return resp.status


async def test_explain_lists_the_last_requests_newest_first_with_their_decisions(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes()
    routes = (
        provider_yaml("fake", [("us-east-1", fake.url)])
        + AUTO_ROUTE
        + route_yaml(
            "vision",
            ["multimodal"],
            [
                "{provider: fake, model: deepseek-v4-flash, tier: 0}",  # text only: dropped
                "{provider: fake, model: qwen3-vl-32b, tier: 1}",
            ],
        )
        + route_yaml(
            "chat",
            ["general"],
            [
                "{provider: fake, model: deepseek-v4-flash, tier: 0}",
                "{provider: fake, model: qwen3-32b, tier: 1}",
            ],
        )
    )
    proxy = await proxies(routes)
    assert proxy.admin_url is not None
    image = {"role": "user", **PROMPTS["multimodal"]}
    async with aiohttp.ClientSession() as session:
        assert await post(session, proxy.base_url, {"model": "auto", "messages": [image]}) == 200
        text = {"role": "user", "content": SECRET_PROMPT}
        assert await post(session, proxy.base_url, {"model": "general", "messages": [text]}) == 200
        assert await post(session, proxy.base_url, {"model": "nope", "messages": [text]}) == 404
        async with session.get(proxy.admin_url + "/explain?n=3") as resp:
            assert resp.status == 200
            raw = await resp.text()
            doc = await resp.json(content_type=None)
        async with session.get(proxy.admin_url + "/explain?n=1") as resp:
            only_last = (await resp.json())["requests"]
        async with session.get(proxy.admin_url + "/explain?n=x") as resp:
            assert resp.status == 400

    unknown, direct, classified = doc["requests"]  # newest first
    assert only_last == [unknown]

    assert classified["requestedModel"] == "auto"
    assert classified["route"] == "vision"
    assert classified["category"] == "multimodal"
    assert classified["categoryReason"] == "multimodal: request carries image parts"
    assert [c["target"] for c in classified["candidates"]] == ["fake/qwen3-vl-32b"]
    (drop,) = classified["dropped"]
    assert drop["target"] == "fake/deepseek-v4-flash"
    assert drop["reason"] == "capability"
    assert "vision" in drop["detail"]
    assert classified["servedBy"] == "fake/qwen3-vl-32b@us-east-1"
    assert classified["outcome"] == "ok" and classified["status"] == 200

    assert direct["route"] == "chat"
    assert direct["category"] is None and direct["categoryReason"] is None
    assert [(c["target"], c["tier"]) for c in direct["candidates"]] == [
        ("fake/deepseek-v4-flash", 0),
        ("fake/qwen3-32b", 1),
    ]
    assert direct["dropped"] == []
    assert direct["servedBy"] == "fake/deepseek-v4-flash@us-east-1"
    assert direct["usage"]["outputTokens"] == 20
    assert direct["cost"]["usd"] is not None

    assert unknown["requestedModel"] == "nope"
    assert unknown["route"] is None and unknown["candidates"] == []
    assert unknown["status"] == 404 and unknown["outcome"] == "rejected"

    # only decisions, never what the app said
    assert "SECRET" not in raw and "launch code" not in raw
