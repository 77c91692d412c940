"""``GET /v1/models/{id}``: the SDK's ``models.retrieve`` for every alias, OpenAI's 404 otherwise."""

from __future__ import annotations

import openai
import pytest

from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml


async def test_models_retrieve_every_listed_alias_and_404_for_others(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes("us-east-1")
    routes = (
        provider_yaml("api", [("us-east-1", fake.url)])
        + route_yaml(
            "general",
            ["general", "gpt-4o", "org/model-x"],
            ["{provider: api, model: deepseek-v4-flash}"],
        )
        + route_yaml("light", ["light"], ["{provider: api, model: qwen3-8b}"])
    )
    proxy = await proxies(routes)
    c = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=5)
    listed = [m.id async for m in c.models.list()]
    assert sorted(listed) == ["general", "gpt-4o", "light", "org/model-x"]
    for alias in listed:
        model = await c.models.retrieve(alias)
        assert model.id == alias and model.object == "model" and model.owned_by == "modelroute"
    raw = await c.models.with_raw_response.retrieve("gpt-4o")
    assert raw.parse().model_extra == {"modelroute": {"routes": ["general"]}}

    with pytest.raises(openai.NotFoundError) as caught:
        await c.models.retrieve("gpt-5-nonexistent")
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found" and body["type"] == "invalid_request_error"
    assert "gpt-5-nonexistent" in body["message"]
    assert fake.fake.stats.requests == 0  # answered from the table, never upstream
    await c.close()
