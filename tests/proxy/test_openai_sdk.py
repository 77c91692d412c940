"""The official OpenAI SDK against the proxy, unchanged: the sidecar core's contract.

Each test starts its own fake providers and proxy on free loopback ports.
"""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from .conftest import FakeFactory, ProxyFactory, dead_port, provider_yaml, route_yaml

EMBED_MODELS = """  models:
    - {name: text-embed, upstreamModel: bge-m3, outputUSDPerMTok: 0.02, contextTokens: 8192,
       capabilities: [embeddings]}
"""


def client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="sk-client-key", max_retries=0, timeout=10)


async def two_tier(fakes: FakeFactory, proxies: ProxyFactory, extra: str = "", **knobs0: object):
    primary = await fakes("us-east-1", **knobs0)
    backup = await fakes("eu-west-1")
    routes = (
        provider_yaml("primary", [("us-east-1", primary.url)])
        + provider_yaml("backup", [("eu-west-1", backup.url)])
        + route_yaml(
            "general",
            ["general", "gpt-4o"],
            [
                "{provider: primary, model: deepseek-v4-flash, tier: 0}",
                "{provider: backup, model: qwen3-32b, tier: 1}",
            ],
            extra
            or "  timeouts: {firstByteMs: 400, totalMs: 5000}\n"
            "  retry: {maxAttempts: 3, baseBackoffMs: 10, maxBackoffMs: 50}",
        )
    )
    proxy = await proxies(routes)
    return primary, backup, proxy


async def test_chat_non_streaming_rewrites_model_and_sends_provider_key(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    primary, backup, proxy = await two_tier(fakes, proxies)
    raw = await client(proxy.base_url).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens == 20
    assert raw.headers["x-modelroute-route"] == "general"
    assert raw.headers["x-modelroute-target"] == "primary/deepseek-v4-flash@us-east-1"
    stats = primary.fake.stats
    assert stats.last_body is not None and stats.last_body["model"] == "deepseek-v4-flash"
    assert stats.last_authorization == "Bearer sk-provider-secret"  # never the client's key
    assert backup.fake.stats.requests == 0


async def test_chat_streaming_passes_chunks_and_hides_usage_the_client_did_not_ask_for(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    primary, _, proxy = await two_tier(fakes, proxies)
    stream = await client(proxy.base_url).chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.count("tok") == 20
    assert all(c.usage is None for c in chunks)
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    # the proxy asked the upstream for usage on its own account
    assert primary.fake.stats.last_body["stream_options"] == {"include_usage": True}

    stream = await client(proxy.base_url).chat.completions.create(
        model="general",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in [c async for c in stream] if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 20


async def test_completions_embeddings_and_models(fakes: FakeFactory, proxies: ProxyFactory) -> None:
    fake = await fakes("us-east-1")
    routes = (
        provider_yaml("api", [("us-east-1", fake.url)], EMBED_MODELS)
        + route_yaml("general", ["general"], ["{provider: api, model: deepseek-v4-flash}"])
        + route_yaml("embed", ["embed"], ["{provider: api, model: text-embed}"])
    )
    proxy = await proxies(routes)
    c = client(proxy.base_url)
    completion = await c.completions.create(model="general", prompt="Say hi", max_tokens=5)
    assert completion.choices[0].text
    embedding = await c.embeddings.create(model="embed", input=["one", "two"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding
    assert fake.fake.stats.last_body["model"] == "bge-m3"
    models = [m.id async for m in c.models.list()]
    assert sorted(models) == ["embed", "general"]


async def test_falls_back_on_503(fakes: FakeFactory, proxies: ProxyFactory) -> None:
    primary, backup, proxy = await two_tier(fakes, proxies, error_rate=1.0, error_status=503)
    raw = await client(proxy.base_url).chat.completions.with_raw_response.create(
        model="general", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().model == "Qwen/Qwen3-32B"
    assert raw.headers["x-modelroute-attempts"] == "2"
    assert primary.fake.stats.requests == 1 and backup.fake.stats.requests == 1


async def test_429_with_retry_after_falls_back_and_holds_the_target(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    primary, backup, proxy = await two_tier(
        fakes, proxies, error_rate=1.0, error_status=429, retry_after=30
    )
    c = client(proxy.base_url)
    for _ in range(3):
        answer = await c.chat.completions.create(
            model="general", messages=[{"role": "user", "content": "x"}]
        )
        assert answer.model == "Qwen/Qwen3-32B"
    # the primary said "come back in 30 s": it is skipped until then
    assert primary.fake.stats.requests == 1
    assert backup.fake.stats.requests == 3


async def test_connect_refused_tries_the_same_model_in_the_next_region(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    eu = await fakes("eu-west-1")
    other = await fakes("ap-1")
    routes = (
        provider_yaml(
            "global-api",
            [("us-east-1", f"http://127.0.0.1:{dead_port()}/v1"), ("eu-west-1", eu.url)],
        )
        + provider_yaml("other", [("ap-1", other.url)])
        + route_yaml(
            "general",
            ["general"],
            [
                "{provider: global-api, model: deepseek-v4-flash, tier: 0}",
                "{provider: other, model: qwen3-32b, tier: 1}",
            ],
        )
    )
    proxy = await proxies(routes)
    raw = await client(proxy.base_url).chat.completions.with_raw_response.create(
        model="general", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.headers["x-modelroute-target"] == "global-api/deepseek-v4-flash@eu-west-1"
    assert raw.parse().model == "deepseek-v4-flash"
    assert other.fake.stats.requests == 0


async def test_first_byte_timeout_falls_back_quickly(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    _, _, proxy = await two_tier(fakes, proxies, latency_ms=3000)
    started = time.perf_counter()
    answer = await client(proxy.base_url).chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hello"}]
    )
    elapsed = time.perf_counter() - started
    assert answer.model == "Qwen/Qwen3-32B"
    assert elapsed < 1.5, f"first-byte timeout is 400 ms, the answer took {elapsed:.2f}s"


async def test_stream_that_hangs_after_headers_falls_back(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    _, _, proxy = await two_tier(fakes, proxies, hang_after_headers=True)
    stream = await client(proxy.base_url).chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert chunks[0].model == "Qwen/Qwen3-32B"


async def test_vision_request_skips_text_only_targets(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    text_only = await fakes("us-east-1")
    vision = await fakes("us-east-1")
    routes = (
        provider_yaml("text", [("us-east-1", text_only.url)])
        + provider_yaml("vision", [("us-east-1", vision.url)])
        + route_yaml(
            "general",
            ["general"],
            [
                "{provider: text, model: deepseek-v4-flash, tier: 0}",
                "{provider: vision, model: qwen3-vl-32b, tier: 1}",
            ],
        )
    )
    proxy = await proxies(routes)
    answer = await client(proxy.base_url).chat.completions.create(
        model="general",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    )
    assert answer.model == "Qwen/Qwen3-VL-32B"
    assert text_only.fake.stats.requests == 0


async def test_stream_cut_midway_is_an_error_in_the_sdk(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    _, backup, proxy = await two_tier(fakes, proxies, cut_after=3)
    stream = await client(proxy.base_url).chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received: list[object] = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError) as caught:
        await consume()
    assert 1 <= len(received) <= 4  # what arrived before the cut reached the client at once
    assert "general" in str(caught.value) and "incomplete" in str(caught.value)
    assert backup.fake.stats.requests == 0  # never retried after the first byte


async def test_client_disconnect_mid_stream_cancels_the_upstream(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    primary, _, proxy = await two_tier(fakes, proxies, tokens_per_second=20, output_tokens=200)
    c = client(proxy.base_url)
    stream = await c.chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async for _ in stream:
        break
    await stream.close()
    await c.close()
    for _ in range(100):
        if primary.fake.stats.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert primary.fake.stats.in_flight == 0
    assert primary.fake.stats.cancelled == 1
