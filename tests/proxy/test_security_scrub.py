"""Provider keys an upstream echoes back never leave the sidecar (issue 13, item 4).

Real providers quote the key they were sent in the error for a malformed or
revoked key ("Incorrect API key provided: sk-…").  That text used to travel on
into the client's error body, the admin ``/explain`` and the attempt span's
status.  Here an upstream on loopback echoes whatever key it got (in the
Authorization header or a provider's own header) and a key-shaped token it was
never sent, in a 401 (falls over), a 400 (relayed to the client as is) and an
error event inside a stream; none of it may come out of the proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from modelroute.proxy.tracing import TracingObserver
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from .conftest import ProxyFactory, route_yaml

KEY = "sk-provider-secret"  # what conftest's provider_key fixture puts in FAKE_PROVIDER_KEY
CUSTOM_KEY = "azure0123456789abcdef0123456789ab"  # sent in `api-key`, as Azure does
FOREIGN = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"  # key-shaped, never sent by us
PARTIAL = "sk-prov**********cret"  # how OpenAI masks a key in its 401

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Upstream:
    url: str


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for r in runners:
        await r.cleanup()


def _sent_key(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    return auth.removeprefix("Bearer ") or request.headers.get("api-key", "")


def _echo(status: int) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        key = _sent_key(request)
        message = (
            f"Incorrect API key provided: {key}. Masked: {PARTIAL}. Also seen: {FOREIGN}. "
            f"Header was 'Authorization: Bearer {key}'."
        )
        return web.json_response(
            {"error": {"message": message, "type": "invalid_request_error", "code": None}},
            status=status,
        )

    return handler


def _provider(url: str, credentials: str = "{env: FAKE_PROVIDER_KEY}") -> str:
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {{name: echo, namespace: default}}
spec:
  endpoints:
    - {{region: r1, baseURL: "{url}"}}
  credentials: {credentials}
  models:
    - {{name: m, outputUSDPerMTok: 1.0, contextTokens: 32000, capabilities: [text]}}
---
"""


ROUTE = route_yaml("chat", ["chat"], ["{provider: echo, model: m}"])


def _assert_clean(text: str, *keys: str) -> None:
    for k in (*keys, FOREIGN, PARTIAL, "sk-prov"):
        assert k not in text, f"{k!r} leaked in {text[:400]!r}"


async def _traced(proxies: ProxyFactory, routes: str) -> tuple[object, InMemorySpanExporter]:
    proxy = await proxies(routes)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    proxy.proxy.observers.add(TracingObserver(provider))
    return proxy, exporter


async def _everything_said(
    proxy: object, exporter: InMemorySpanExporter, body: dict[str, object]
) -> tuple[int, str]:
    """Status and every text the sidecar produced about the request: response, /explain, spans."""
    assert hasattr(proxy, "api_url") and hasattr(proxy, "admin_url")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{proxy.api_url}/v1/chat/completions", json=body) as resp:
            status, text = resp.status, await resp.text()
        async with http.get(f"{proxy.admin_url}/explain") as resp:
            explained = await resp.text()
    for _ in range(100):  # the server span ends just after the response is written
        if any(s.kind is SpanKind.SERVER for s in exporter.get_finished_spans()):
            break
        await asyncio.sleep(0.01)
    spans = json.dumps(
        [
            {
                "status": s.status.description,
                "attributes": {k: str(v) for k, v in (s.attributes or {}).items()},
                "events": [str(e.attributes) for e in s.events],
            }
            for s in exporter.get_finished_spans()
        ]
    )
    assert '"requests": [' in explained.replace('"requests":[', '"requests": [')
    return status, "\n---\n".join((text, explained, spans))


CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_key_echoed_in_a_401_reaches_no_client_explain_or_span(
    proxies: ProxyFactory,
    upstream: Callable[[Handler], Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = await upstream(_echo(401))
    proxy, exporter = await _traced(proxies, _provider(url) + ROUTE)
    status, said = await _everything_said(proxy, exporter, CHAT)
    assert status >= 400
    assert "Incorrect API key provided" in said  # the upstream's words still help the reader
    _assert_clean(said, KEY)
    _assert_clean(caplog.text, KEY)


async def test_a_key_echoed_in_a_relayed_400_is_scrubbed_from_the_body(
    proxies: ProxyFactory, upstream: Callable[[Handler], Awaitable[str]]
) -> None:
    url = await upstream(_echo(400))
    proxy, exporter = await _traced(proxies, _provider(url) + ROUTE)
    status, said = await _everything_said(proxy, exporter, CHAT)
    assert status == 400
    assert "Incorrect API key provided" in said
    _assert_clean(said, KEY)


async def test_a_key_in_a_custom_header_is_scrubbed_too(
    proxies: ProxyFactory,
    upstream: Callable[[Handler], Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_KEY", CUSTOM_KEY)
    url = await upstream(_echo(401))
    routes = _provider(url, "{env: AZURE_KEY, header: api-key}") + ROUTE
    proxy, exporter = await _traced(proxies, routes)
    _, said = await _everything_said(proxy, exporter, CHAT)
    assert "Incorrect API key provided" in said
    _assert_clean(said, CUSTOM_KEY)


async def test_a_key_in_a_mid_stream_error_event_is_scrubbed(
    proxies: ProxyFactory, upstream: Callable[[Handler], Awaitable[str]]
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        key = _sent_key(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "he"}, "finish_reason": None}],
        }
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        error = {"error": {"message": f"key {key} was revoked mid-stream ({FOREIGN})"}}
        await resp.write(f"data: {json.dumps(error)}\n\n".encode())
        await resp.write_eof()
        return resp

    url = await upstream(handler)
    proxy, exporter = await _traced(proxies, _provider(url) + ROUTE)
    _, said = await _everything_said(proxy, exporter, {**CHAT, "stream": True})
    assert "revoked mid-stream" in said
    _assert_clean(said, KEY)


def _completion(text: str) -> web.Response:
    """A whole chat answer saying ``text``."""
    message = {"role": "assistant", "content": text}
    return web.json_response(
        {
            "id": "c",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
        }
    )


async def test_a_key_echoed_in_a_whole_answer_is_replaced_and_the_answer_kept(
    proxies: ProxyFactory, upstream: Callable[[Handler], Awaitable[str]]
) -> None:
    """A 2xx answer (not a stream) that quotes the key we sent: the key goes, the words stay.

    Streams and Responses follow-ups had this; a whole chat answer went out as it came.
    A key-shaped token we never sent is the model's own text and stays, as in a stream.
    """

    async def handler(request: web.Request) -> web.Response:
        text = f"Your key is {_sent_key(request)}; an example key looks like {FOREIGN}."
        return _completion(text)

    url = await upstream(handler)
    proxy, exporter = await _traced(proxies, _provider(url) + ROUTE)
    status, said = await _everything_said(proxy, exporter, CHAT)
    assert status == 200
    answer = said.split("\n---\n")[0]
    content = json.loads(answer)["choices"][0]["message"]["content"]
    assert content == f"Your key is [redacted]; an example key looks like {FOREIGN}."
    assert KEY not in said


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_recorded_answer_that_echoes_the_key_reaches_the_span_without_it(
    proxies: ProxyFactory, upstream: Callable[[Handler], Awaitable[str]], stream: bool
) -> None:
    """``recordContent`` puts the answer on the span: not the key the answer quoted."""

    async def handler(request: web.Request) -> web.StreamResponse:
        text = f"Your key is {_sent_key(request)}."
        if not (await request.json()).get("stream"):
            return _completion(text)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece, finish in ((text[:9], None), (text[9:], "stop")):
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    url = await upstream(handler)
    route = route_yaml("chat", ["chat"], ["{provider: echo, model: m}"], "  recordContent: true")
    routes = _provider(url) + route
    proxy, exporter = await _traced(proxies, routes)
    status, said = await _everything_said(proxy, exporter, {**CHAT, "stream": stream})
    assert status == 200
    spans = said.split("\n---\n")[2]
    # the answer is on the span as it was, but for its key (and no "more characters" note)
    recorded = '\\"content\\":\\"Your key is [redacted].\\"}'
    assert recorded in spans, spans
    assert KEY not in said


async def test_a_key_echoed_by_a_responses_follow_up_is_scrubbed(
    proxies: ProxyFactory, upstream: Callable[[Handler], Awaitable[str]]
) -> None:
    """``GET /v1/responses/{id}`` and ``…/input_items`` go straight to the holder, past the
    attempt machinery: their answers are scrubbed too (a 401 quoting the key, a stored
    answer echoing it) while the model's own words about ``sk-`` keys stay."""

    async def handler(request: web.Request) -> web.Response:
        key = _sent_key(request)
        if request.method == "POST":
            return web.json_response(
                {
                    "id": "resp_up1",
                    "object": "response",
                    "status": "completed",
                    "model": "m",
                    "error": None,
                    "output": [],
                    "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
                }
            )
        if request.path.endswith("/input_items"):
            text = f"my key is {key}; keys look like {FOREIGN}"
            item = {"id": "msg_1", "type": "message", "role": "user", "content": [
                {"type": "input_text", "text": text}]}  # fmt: skip
            return web.json_response({"object": "list", "data": [item], "error": None})
        return await _echo(401)(request)

    url = await upstream(handler)
    route = route_yaml("chat", ["chat"], ["{provider: echo, model: m, capabilities: [responses]}"])
    proxy = await proxies(_provider(url) + route)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{proxy.api_url}/v1/responses", json={"model": "chat", "input": "hi"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            wrapped = (await resp.json())["id"]
        async with http.get(f"{proxy.api_url}/v1/responses/{wrapped}") as resp:
            status, text = resp.status, await resp.text()
        async with http.get(f"{proxy.api_url}/v1/responses/{wrapped}/input_items") as resp:
            items_status, items = resp.status, await resp.text()
    assert status == 401 and "Incorrect API key provided" in text
    _assert_clean(text, KEY)
    assert items_status == 200 and "my key is [redacted]" in items
    assert KEY not in items
    assert FOREIGN in items  # the model's words stay as written
