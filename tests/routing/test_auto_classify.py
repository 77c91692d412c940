"""``model: "auto"`` end to end: the classifier picks the category route, and says so.

A ``classify: true`` route captures ``auto``; five category routes (the seeds'
light, general, reasoning, multimodal, regional-cn) capture the names the
classifier answers with.  Each request kind must land on its route, at the
right model upstream, with ``x-modelroute-route``/``x-modelroute-reason`` on
the response and the counts in ``/metrics``.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..proxy.conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml
from .conftest import metric_sum

# one model per category, all from the built-in catalogue (the multimodal one has vision)
CATEGORY_MODELS = {
    "light": "qwen3-8b",
    "general": "deepseek-v4-flash",
    "reasoning": "kimi-k2.5",
    "multimodal": "qwen3-vl-32b",
    "regional-cn": "glm-5",
}

PROMPTS: dict[str, dict[str, Any]] = {
    "reasoning": {"content": "Prove that the square root of 2 is irrational, step by step."},
    "light": {
        "content": "Classify the sentiment of this review as positive or negative: "
        "the battery died after a day."
    },
    "multimodal": {
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]
    },
    "regional-cn": {"content": "请用三句话介绍一下杭州的西湖和它的历史。"},
    "general": {"content": "Write a short product description for a blue ceramic coffee mug."},
}


AUTO_ROUTE = """
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: auto, namespace: default}
spec:
  models: [auto]
  classify: true
---
"""


def auto_routes(url: str) -> str:
    routes = provider_yaml("fake", [("us-east-1", url)]) + AUTO_ROUTE
    for category, model in CATEGORY_MODELS.items():
        routes += route_yaml(
            f"{category}-route", [category], [f"{{provider: fake, model: {model}}}"]
        )
    return routes


async def chat(
    session: aiohttp.ClientSession,
    base: str,
    model: str,
    message: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = {"model": model, "messages": [{"role": "user", **message}]}
    async with session.post(f"{base}/chat/completions", json=body, headers=headers) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.json()


async def test_auto_lands_each_kind_on_its_category_route_and_says_why(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes()
    proxy = await proxies(auto_routes(fake.url))
    catalogue_upstream = {
        "qwen3-8b": "Qwen/Qwen3-8B",
        "deepseek-v4-flash": "deepseek-v4-flash",
        "kimi-k2.5": "moonshot-k2.5",
        "qwen3-vl-32b": "Qwen/Qwen3-VL-32B",
        "glm-5": "glm-5",
    }
    async with aiohttp.ClientSession() as session:
        for category, message in PROMPTS.items():
            status, headers, doc = await chat(session, proxy.base_url, "auto", message)
            assert status == 200, doc
            assert headers["x-modelroute-route"] == f"{category}-route"
            reason = headers["x-modelroute-reason"]
            assert reason.startswith(f"{category}:"), reason
            upstream = catalogue_upstream[CATEGORY_MODELS[category]]
            assert fake.fake.stats.last_body is not None
            assert fake.fake.stats.last_body["model"] == upstream, category
            assert doc["model"] == upstream
            assert headers["x-modelroute-target"].startswith(f"fake/{CATEGORY_MODELS[category]}@")

        # a header the app sets forces the category (residency known to the app, not the prompt)
        status, headers, _ = await chat(
            session, proxy.base_url, "auto", {"content": "hello"}, {"x-user-region": "cn"}
        )
        assert status == 200
        assert headers["x-modelroute-route"] == "regional-cn-route"
        assert headers["x-modelroute-reason"] == "regional-cn: header x-user-region: cn"

        # a request naming a route directly is not classified: route header, no reason
        status, headers, _ = await chat(
            session, proxy.base_url, "reasoning", {"content": "Prove that 2 + 2 = 4."}
        )
        assert status == 200
        assert headers["x-modelroute-route"] == "reasoning-route"
        assert "x-modelroute-reason" not in headers

        assert proxy.admin_url is not None
        async with session.get(proxy.admin_url + "/metrics") as resp:
            exposition = await resp.text()

    for category in CATEGORY_MODELS:
        want = 2.0 if category == "regional-cn" else 1.0
        assert metric_sum(exposition, "modelroute_classified_total", category=category) == want
    assert metric_sum(exposition, "modelroute_classified_total") == 6.0  # the direct one isn't
    for category, model in CATEGORY_MODELS.items():
        want = {"regional-cn": 2.0, "reasoning": 2.0}.get(category, 1.0)
        got = metric_sum(
            exposition,
            "modelroute_requests_total",
            route=f"{category}-route",
            model=model,
            outcome="ok",
        )
        assert got == want, category
    # the classify route itself never serves: every request is counted under its category route
    assert metric_sum(exposition, "modelroute_requests_total", route="auto") == 0.0


async def test_a_category_without_a_route_is_refused_naming_the_category(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes()
    routes = (
        provider_yaml("fake", [("us-east-1", fake.url)])
        + AUTO_ROUTE
        + route_yaml("general-route", ["general"], ["{provider: fake, model: deepseek-v4-flash}"])
    )
    proxy = await proxies(routes)
    async with aiohttp.ClientSession() as session:
        status, _, doc = await chat(session, proxy.base_url, "auto", PROMPTS["reasoning"])
    assert status == 404, doc
    message = doc["error"]["message"]
    assert "classified the request as 'reasoning'" in message
    assert "captures model 'reasoning'" in message  # says what to add, and where
    assert doc["error"]["route"] == "auto"
    assert fake.fake.stats.requests == 0
