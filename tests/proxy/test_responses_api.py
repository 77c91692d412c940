"""``/v1/responses`` with the real SDK: create, stream, failover, follow-ups routed back, tampering.

Two fake regions of one provider stand in for a provider that stores each
response in the region that created it: a follow-up sent to the other region
gets the provider's own ``previous_response_not_found``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest

from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml

SPEAKS = "capabilities: [responses]"
MODELROUTE = Path(sys.executable).parent / "modelroute"


async def setup(fakes: FakeFactory, proxies: ProxyFactory, **us_knobs: object):
    us = await fakes("us-east-1", **us_knobs)
    eu = await fakes("eu-west-1")
    proxy = await proxies(
        provider_yaml("global", [("us-east-1", us.url), ("eu-west-1", eu.url)])
        + route_yaml(
            "general",
            ["general"],
            [f"{{provider: global, model: deepseek-v4-flash, {SPEAKS}}}"],
            "  timeouts: {firstByteMs: 1000, totalMs: 8000, streamIdleMs: 5000}\n"
            "  retry: {maxAttempts: 3, baseBackoffMs: 1, maxBackoffMs: 5}",
        )
        + route_yaml("chatonly", ["chatonly"], ["{provider: global, model: qwen3-8b}"])
    )
    c = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=10)
    return us, eu, proxy, c


def explain(routes: Path, model: str) -> str:
    shown = subprocess.run(
        [str(MODELROUTE), "explain", "--routes", str(routes), "--endpoint", "responses",
         "--request", "-"],
        input=orjson.dumps({"model": model, "input": "hello"}),
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return shown.stdout.decode() + shown.stderr.decode()


async def metrics(admin: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(admin + "/metrics") as resp:
        return await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_create_then_retrieve_input_items_and_delete_reach_the_region_that_stores_it(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    us, eu, proxy, c = await setup(fakes, proxies)
    raw = await c.responses.with_raw_response.create(model="general", input="hello there")
    created = raw.parse()
    assert raw.headers["x-modelroute-target"] == "global/deepseek-v4-flash@us-east-1"
    assert created.id.startswith("resp_mr1") and "us-east-1" not in created.id
    assert created.output_text == " ".join(["tok"] * 20)
    assert created.usage is not None and created.usage.output_tokens == 20
    [upstream_id] = us.fake.responses.store.responses
    assert us.fake.stats.last_body is not None
    assert us.fake.stats.last_body["model"] == "deepseek-v4-flash"  # the alias rewritten

    again = await c.responses.retrieve(created.id)
    assert again.id == created.id and again.output_text == created.output_text
    items = await c.responses.input_items.list(created.id)
    assert [item.type for item in items.data] == ["message"]
    # cancel reaches the holder too: a finished (non-background) response can't be cancelled,
    # and the provider's own 400 says so
    with pytest.raises(openai.BadRequestError) as refused:
        await c.responses.cancel(created.id)
    assert "background" in refused.value.message
    deleted = await c.responses.delete(created.id)
    assert deleted is None  # the SDK returns nothing for a delete; the store says it happened
    assert upstream_id not in us.fake.responses.store.responses
    with pytest.raises(openai.NotFoundError):  # the provider's own 404, passed on
        await c.responses.retrieve(created.id)
    assert eu.fake.stats.requests == 0

    # usage and cost as for chat: output tokens at the catalogue's output price
    text = await metrics(proxy.admin_url or "")
    assert sample(text, "modelroute_tokens_total", route="general", type="output") == 20
    cost = sample(text, "modelroute_cost_usd_total", route="general")
    assert cost == pytest.approx(20 * 0.25 / 1e6)
    await c.close()


async def test_a_stream_fails_over_before_its_first_byte_and_its_follow_up_goes_back_there(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    us, eu, proxy, c = await setup(fakes, proxies, down=True)
    eu.knobs.output_tokens, eu.knobs.tokens_per_second = 10, 10  # ~1 s of deltas
    started = time.perf_counter()
    stream = await c.responses.create(model="general", input="hello", stream=True)
    kinds: list[str] = []
    first_delta_at = None
    ids = []
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta" and first_delta_at is None:
            first_delta_at = time.perf_counter() - started
        if event.type in ("response.created", "response.completed"):
            ids.append(event.response.id)
    total = time.perf_counter() - started
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 10
    assert first_delta_at is not None and first_delta_at < total - 0.5  # not buffered
    assert len(set(ids)) == 1 and ids[0].startswith("resp_mr1")
    stream_id = ids[0]
    assert us.fake.stats.by_path["/v1/responses"] == 1  # the one attempt us reset
    assert len(eu.fake.responses.store.responses) == 1

    # us is back and first in failover order, but only eu has the response
    us.knobs.down = False
    raw = await c.responses.with_raw_response.create(
        model="general", input="and more", previous_response_id=stream_id
    )
    follow = raw.parse()
    assert raw.headers["x-modelroute-target"] == "global/deepseek-v4-flash@eu-west-1"
    assert follow.previous_response_id == stream_id
    assert us.fake.stats.by_path["/v1/responses"] == 1  # nothing more went there
    sent = eu.fake.stats.last_body
    assert sent is not None and sent["previous_response_id"] in eu.fake.responses.store.responses
    # the follow-up's cached tokens are counted apart (priced within input: no input price)
    text = await metrics(proxy.admin_url or "")
    cached = sample(text, "modelroute_token_details_total", route="general", type="cached_input")
    assert cached == follow.usage.input_tokens_details.cached_tokens > 0  # type: ignore[union-attr]
    # a request with no previous response goes where routing says: us again
    fresh = await c.responses.with_raw_response.create(model="general", input="new")
    assert fresh.headers["x-modelroute-target"].endswith("@us-east-1")
    await c.close()


async def test_a_tampered_id_is_refused_and_a_down_holder_is_named(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    us, eu, _, c = await setup(fakes, proxies)
    created = await c.responses.create(model="general", input="hello")
    body = created.id[len("resp_mr1") :]
    flipped = "A" if body[3] != "A" else "B"
    tampered = "resp_mr1" + body[:3] + flipped + body[4:]
    before = us.fake.stats.requests + eu.fake.stats.requests
    for call in (
        c.responses.retrieve(tampered),
        c.responses.create(model="general", input="x", previous_response_id=tampered),
        c.responses.retrieve("resp_somebody_elses"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            await call
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "response_not_found"
    assert us.fake.stats.requests + eu.fake.stats.requests == before  # nothing was sent

    us.knobs.down = True  # the holder goes away: nothing else may answer for it
    with pytest.raises(openai.InternalServerError) as caught:
        await c.responses.create(model="general", input="more", previous_response_id=created.id)
    message = caught.value.message
    assert "provider 'global' in region 'us-east-1'" in message and "not sent elsewhere" in message
    assert eu.fake.stats.requests == 0
    with pytest.raises(openai.InternalServerError) as caught:
        await c.responses.retrieve(created.id)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "response_holder_unavailable"
    assert "no other region holds this response" in caught.value.message
    await c.close()


async def test_targets_that_dont_speak_the_responses_api_are_filtered_and_explained(
    fakes: FakeFactory, proxies: ProxyFactory, tmp_path: Path
) -> None:
    us, eu, _, c = await setup(fakes, proxies)
    with pytest.raises(openai.BadRequestError) as caught:
        await c.responses.create(model="chatonly", input="hello")
    assert "responses" in caught.value.message
    assert us.fake.stats.requests == eu.fake.stats.requests == 0
    # chat on the same route still works: the capability is asked of /v1/responses only
    assert (
        await c.chat.completions.create(
            model="chatonly", messages=[{"role": "user", "content": "x"}]
        )
    ).choices
    # `modelroute explain --endpoint responses` shows the filter, in the CLI's own words
    routes = tmp_path / "routes-0.yaml"  # what the proxies fixture gave the sidecar
    out = await asyncio.to_thread(explain, routes, "chatonly")
    assert "capability" in out and "responses" in out, out
    out = await asyncio.to_thread(explain, routes, "general")
    assert "deepseek-v4-flash" in out and "capability" not in out, out
    await c.close()
