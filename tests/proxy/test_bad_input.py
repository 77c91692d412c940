"""Bad input gets OpenAI's error shape with a message that says what to fix; nothing crashes."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from .conftest import FakeFactory, ProxyFactory, dead_port, provider_yaml, route_yaml


async def routes_for(fakes: FakeFactory) -> str:
    fake = await fakes("us-east-1")
    return provider_yaml("api", [("us-east-1", fake.url)]) + route_yaml(
        "general", ["general"], ["{provider: api, model: deepseek-v4-flash}"]
    )


async def post(url: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=data, headers=headers or {}) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def assert_openai_error(doc: Any, code: str) -> str:
    assert set(doc) == {"error"}
    error = doc["error"]
    assert {"message", "type", "code"} <= set(error)
    assert error["code"] == code, error
    return str(error["message"])


async def test_malformed_json(fakes: FakeFactory, proxies: ProxyFactory) -> None:
    proxy = await proxies(await routes_for(fakes))
    status, doc = await post(proxy.base_url + "/chat/completions", b'{"model": "general",')
    assert status == 400
    assert "not valid JSON" in assert_openai_error(doc, "invalid_json")


async def test_missing_model(fakes: FakeFactory, proxies: ProxyFactory) -> None:
    proxy = await proxies(await routes_for(fakes))
    status, doc = await post(proxy.base_url + "/chat/completions", b'{"messages": []}')
    assert status == 400
    assert "`model` is required" in assert_openai_error(doc, "missing_model")


async def test_unknown_model_names_what_is_served(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    proxy = await proxies(await routes_for(fakes))
    c = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        await c.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "gpt-9" in str(caught.value)
    assert "general" in str(caught.value)


async def test_body_over_the_limit_is_413(fakes: FakeFactory, proxies: ProxyFactory) -> None:
    proxy = await proxies(await routes_for(fakes), max_body_bytes=1024)
    body = (
        b'{"model": "general", "messages": [{"role": "user", "content": "' + b"a" * 4096 + b'"}]}'
    )
    status, doc = await post(proxy.base_url + "/chat/completions", body)
    assert status == 413
    assert "1024-byte limit" in assert_openai_error(doc, "body_too_large")


async def test_every_candidate_failing_names_the_route_and_attempts(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    broken = await fakes("us-east-1", error_rate=1.0, error_status=500)
    routes = provider_yaml(
        "api", [("us-east-1", broken.url), ("eu-west-1", f"http://127.0.0.1:{dead_port()}/v1")]
    ) + route_yaml(
        "general",
        ["general"],
        ["{provider: api, model: deepseek-v4-flash}"],
        "  retry: {maxAttempts: 2, baseBackoffMs: 1, maxBackoffMs: 5}",
    )
    # no probes: the refused eu-west-1 must still be in the plan for the request to name it
    routes += (
        "apiVersion: modelroute.io/v1alpha1\nkind: FailoverPolicy\nmetadata: {name: regions}\n"
        "spec:\n  regionPreference: [us-east-1, eu-west-1]\n  healthCheck: {enabled: false}\n"
    )
    proxy = await proxies(routes)
    status, doc = await post(
        proxy.base_url + "/chat/completions",
        b'{"model": "general", "messages": [{"role": "user", "content": "x"}]}',
    )
    assert status == 503
    message = assert_openai_error(doc, "upstream_unavailable")
    assert "route 'general'" in message and "2 attempt(s)" in message
    assert doc["error"]["attempts"] == [
        "api/deepseek-v4-flash@us-east-1: 5xx 500 (injected failure)",
        doc["error"]["attempts"][1],
    ]
    assert doc["error"]["attempts"][1].startswith("api/deepseek-v4-flash@eu-west-1: connect")


async def test_upstream_client_error_is_passed_through_not_retried(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes("us-east-1", error_rate=1.0, error_status=422)
    routes = provider_yaml("api", [("us-east-1", fake.url)]) + route_yaml(
        "general", ["general"], ["{provider: api, model: deepseek-v4-flash}"]
    )
    proxy = await proxies(routes)
    status, doc = await post(
        proxy.base_url + "/chat/completions",
        b'{"model": "general", "messages": [{"role": "user", "content": "x"}]}',
    )
    assert status == 422 and doc["error"]["message"] == "injected failure"
    assert fake.fake.stats.requests == 1


async def test_wrong_types_and_paths_get_openai_errors(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    proxy = await proxies(await routes_for(fakes))
    cases = [
        (b'["not", "an", "object"]', "invalid_request"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "invalid_request"),
        (b'{"model": "general", "messages": "hello"}', "invalid_request"),
        (
            b'{"model": "general", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            "invalid_request",
        ),
    ]
    for body, code in cases:
        status, doc = await post(proxy.base_url + "/chat/completions", body)
        assert status == 400, (body, doc)
        assert_openai_error(doc, code)
    async with aiohttp.ClientSession() as http, http.get(proxy.base_url + "/nope") as resp:
        assert resp.status == 404
        assert_openai_error(await resp.json(), "not_found")
