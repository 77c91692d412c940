"""The fake provider answers as OpenAI does where SDKs notice: base64 embeddings, streamed completions.

Through the proxy, with the real SDK: a fake that ignored ``encoding_format``
made the Node SDK decode a float list as base64 (``[0]``), and one that
ignored ``stream: true`` on ``/v1/completions`` left streamed completions
untested.
"""

from __future__ import annotations

import base64
import struct

import openai

from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml

EMBED_MODELS = """  models:
    - {name: text-embed, upstreamModel: bge-m3, outputUSDPerMTok: 0.02, contextTokens: 8192,
       capabilities: [embeddings]}
"""


async def test_base64_embeddings_and_streamed_completions(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    fake = await fakes("us-east-1", output_tokens=7)
    proxy = await proxies(
        provider_yaml("api", [("us-east-1", fake.url)], EMBED_MODELS)
        + route_yaml("general", ["general"], ["{provider: api, model: deepseek-v4-flash}"])
        + route_yaml("embed", ["embed"], ["{provider: api, model: text-embed}"])
    )
    c = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=5)

    # asked for explicitly, the SDK hands back the base64 string as the wire carries it
    raw = await c.embeddings.create(model="embed", input=["a", "b"], encoding_format="base64")
    assert fake.fake.stats.last_body is not None
    assert fake.fake.stats.last_body["encoding_format"] == "base64"
    assert isinstance(raw.data[1].embedding, str)
    decoded = struct.unpack("<4f", base64.b64decode(raw.data[1].embedding))
    assert [round(x, 5) for x in decoded] == [0.1, 0.2, 0.3, 1.0]
    floats = await c.embeddings.create(model="embed", input="a", encoding_format="float")
    assert [round(x, 5) for x in floats.data[0].embedding] == [0.1, 0.2, 0.3, 0.0]
    # the SDK's default: it asks for base64 itself and decodes it into floats
    default = await c.embeddings.create(model="embed", input="a")
    assert fake.fake.stats.last_body["encoding_format"] == "base64"
    assert [round(x, 5) for x in default.data[0].embedding] == [0.1, 0.2, 0.3, 0.0]

    stream = await c.completions.create(model="general", prompt="Say hi", stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices).count("tok") == 7
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(ch.object == "text_completion" and ch.usage is None for ch in chunks)
    stream = await c.completions.create(
        model="general", prompt="Say hi", stream=True, stream_options={"include_usage": True}
    )
    usage = [ch.usage async for ch in stream if ch.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 7
    await c.close()
