"""Traces through the real proxy: what ``docs/observability.md`` promises, end to end.

``test_tracing.py`` pins the observer on hand-built records; here the records
come from the dispatcher itself.  A fake primary answers 503, a fake backup
serves, the app sends a W3C ``traceparent`` through the official OpenAI SDK,
and an SDK ``TracerProvider`` with an in-memory exporter is attached to the
running proxy's observers.  The trace must show the fallback the way an
operator reads it: one SERVER span continuing the app's trace, two CLIENT
spans under it (the failed primary with ``error.type``, the backup with usage
and cost), GenAI attributes on each, for plain and streaming answers; and
prompt/completion text only on a route that opted in with ``recordContent``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from modelroute.proxy.process import RunningProxy
from modelroute.proxy.tracing import TracingObserver
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ..proxy.conftest import (  # fixtures re-used from the proxy suite
    Fake,
    FakeFactory,
    ProxyFactory,
    fakes,  # noqa: F401
    provider_key,  # noqa: F401
    provider_yaml,
    proxies,  # noqa: F401
    route_yaml,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
OUTPUT_TOKENS = 7
PROMPT = "what is the capital of France?"

# both prices, so the serving span's cost is exact: 7 output tokens at $2/M plus input at $1/M
MODELS = """  models:
    - {name: chat-a, upstreamModel: chat-a-up, outputUSDPerMTok: 1.0, inputUSDPerMTok: 0.5,
       contextTokens: 32000, capabilities: [text]}
    - {name: chat-b, upstreamModel: chat-b-up, outputUSDPerMTok: 2.0, inputUSDPerMTok: 1.0,
       contextTokens: 32000, capabilities: [text]}
"""
RETRY = "  retry: {maxAttempts: 2, baseBackoffMs: 1, maxBackoffMs: 5}"


@dataclass
class Setup:
    primary: Fake
    backup: Fake
    proxy: RunningProxy
    exporter: InMemorySpanExporter
    client: openai.AsyncOpenAI


@pytest.fixture
async def traced(fakes: FakeFactory, proxies: ProxyFactory) -> AsyncIterator[Setup]:  # noqa: F811
    """Primary 503s, backup serves; route ``chat`` records no content, ``chat-rc`` does."""
    primary = await fakes("us-east-1", error_rate=1.0, error_status=503)
    backup = await fakes("eu-west-1", output_tokens=OUTPUT_TOKENS)
    targets = ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-b, tier: 1}"]
    routes = (
        provider_yaml("primary", [("us-east-1", primary.url)], MODELS)
        + provider_yaml("backup", [("eu-west-1", backup.url)], MODELS)
        + route_yaml("chat", ["chat"], targets, RETRY)
        + route_yaml("chat-rc", ["chat-rc"], targets, RETRY + "\n  recordContent: true")
    )
    proxy = await proxies(routes)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    proxy.proxy.observers.add(TracingObserver(provider))
    client = openai.AsyncOpenAI(
        base_url=proxy.base_url, api_key="sk-client-key", max_retries=0, timeout=10
    )
    try:
        yield Setup(primary, backup, proxy, exporter, client)
    finally:
        await client.close()
        provider.shutdown()


async def finished(exporter: InMemorySpanExporter, n: int = 3) -> tuple[ReadableSpan, ...]:
    """The finished spans once there are ``n`` (bounded wait: the app can read a whole answer
    a moment before the proxy's handler ends the request's span)."""
    for _ in range(200):
        spans = exporter.get_finished_spans()
        if len(spans) >= n:
            return spans
        await asyncio.sleep(0.01)
    return exporter.get_finished_spans()


def split(spans: tuple[ReadableSpan, ...]) -> tuple[ReadableSpan, ReadableSpan, ReadableSpan]:
    """(server, failed attempt, served attempt) of one request; fails on any other shape."""
    assert len(spans) == 3, [(s.name, s.kind) for s in spans]
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    clients = sorted(
        (s for s in spans if s.kind is SpanKind.CLIENT),
        key=lambda s: int(s.attributes["modelroute.attempt"]),  # type: ignore[index,arg-type]
    )
    assert len(clients) == 2
    return server, clients[0], clients[1]


def assert_attributes(span: ReadableSpan, expected: dict[str, Any]) -> None:
    """The documented attributes, with these values (others may be added without breaking this)."""
    attrs = dict(span.attributes or {})
    missing = sorted(set(expected) - set(attrs))
    assert not missing, f"{span.name}: missing {missing}; has {sorted(attrs)}"
    assert {k: attrs[k] for k in expected} == expected, span.name


async def check_fallback_trace(
    setup: Setup, *, stream: bool, input_tokens: int
) -> tuple[ReadableSpan, ReadableSpan, ReadableSpan]:
    """Everything the docs' span tables promise for a 503-then-backup request."""
    server, failed, served = split(await finished(setup.exporter))
    primary_port, backup_port = setup.primary.port, setup.backup.port

    # the app's trace continues: same trace id, the SERVER span's parent is the app's span
    assert server.context is not None and server.parent is not None
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.parent.is_remote
    for client_span in (failed, served):
        assert client_span.context is not None and client_span.parent is not None
        assert client_span.context.trace_id == server.context.trace_id
        assert client_span.parent.span_id == server.context.span_id

    assert server.name == "chat chat"
    assert_attributes(
        server,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "chat",
            "http.request.method": "POST",
            "modelroute.endpoint": "chat",
            "modelroute.stream": stream,
            "modelroute.outcome": "ok",
            "modelroute.attempts": 2,
            "modelroute.fallback": True,
            "http.response.status_code": 200,
            "modelroute.route": "chat",
            "gen_ai.provider.name": "backup",
            "modelroute.region": "eu-west-1",
            "gen_ai.response.model": "chat-b-up",
            "modelroute.cost_usd": pytest.approx((OUTPUT_TOKENS * 2.0 + input_tokens * 1.0) / 1e6),
        },
    )
    assert server.status.status_code is StatusCode.UNSET

    assert failed.name == "chat chat-a-up"
    assert_attributes(
        failed,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "primary",
            "gen_ai.request.model": "chat-a-up",
            "modelroute.attempt": 1,
            "modelroute.model": "chat-a",
            "modelroute.region": "us-east-1",
            "modelroute.route": "chat",
            "server.address": "127.0.0.1",
            "server.port": primary_port,
            "http.response.status_code": 503,
            "error.type": "5xx",
        },
    )
    assert failed.status.status_code is StatusCode.ERROR
    # usage, cost and the response model belong to the attempt that served, only
    served_only = {"gen_ai.response.model", "gen_ai.usage.input_tokens", "modelroute.cost_usd"}
    assert not served_only & set(failed.attributes or {})
    assert "modelroute.fallback.reason" not in (failed.attributes or {})

    assert served.name == "chat chat-b-up"
    assert_attributes(
        served,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "backup",
            "gen_ai.request.model": "chat-b-up",
            "modelroute.attempt": 2,
            "modelroute.model": "chat-b",
            "modelroute.region": "eu-west-1",
            "modelroute.route": "chat",
            "modelroute.fallback.reason": "5xx",
            "server.address": "127.0.0.1",
            "server.port": backup_port,
            "http.response.status_code": 200,
            "gen_ai.response.model": "chat-b-up",
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": OUTPUT_TOKENS,
            "gen_ai.response.finish_reasons": ("stop",),
            "modelroute.cost_usd": pytest.approx((OUTPUT_TOKENS * 2.0 + input_tokens * 1.0) / 1e6),
        },
    )
    assert served.status.status_code is StatusCode.UNSET
    # nothing of the conversation leaves the proxy on a route that did not opt in
    for span in (server, failed, served):
        assert not any("messages" in key for key in span.attributes or {})
    # the CLIENT spans lie inside the SERVER span, in the order they happened
    assert server.start_time is not None and server.end_time is not None
    assert failed.start_time is not None and failed.end_time is not None
    assert served.start_time is not None and served.end_time is not None
    assert server.start_time <= failed.start_time <= failed.end_time <= served.start_time
    assert served.end_time <= server.end_time
    return server, failed, served


async def test_fallback_trace_through_the_proxy(traced: Setup) -> None:
    raw = await traced.client.chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"traceparent": TRACEPARENT},
    )
    answer = raw.parse()
    assert raw.headers["x-modelroute-target"] == "backup/chat-b@eu-west-1"
    assert answer.usage is not None and answer.usage.completion_tokens == OUTPUT_TOKENS
    assert traced.primary.fake.stats.errors_sent == 1
    await check_fallback_trace(traced, stream=False, input_tokens=answer.usage.prompt_tokens)


async def test_streaming_fallback_trace_through_the_proxy(traced: Setup) -> None:
    stream = await traced.client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": TRACEPARENT},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.count("tok") == OUTPUT_TOKENS
    [usage] = [c.usage for c in chunks if c.usage is not None]
    assert usage.completion_tokens == OUTPUT_TOKENS
    await check_fallback_trace(traced, stream=True, input_tokens=usage.prompt_tokens)


async def test_no_traceparent_starts_a_new_trace(traced: Setup) -> None:
    await traced.client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": PROMPT}]
    )
    server, failed, served = split(await finished(traced.exporter))
    assert server.parent is None
    assert server.context is not None and format(server.context.trace_id, "032x") != TRACE_ID
    assert failed.context is not None and served.context is not None
    assert failed.context.trace_id == served.context.trace_id == server.context.trace_id


def texts(doc: Any) -> set[str]:
    """Every string value in a JSON document."""
    if isinstance(doc, str):
        return {doc}
    if isinstance(doc, dict):
        return set().union(*(texts(v) for v in doc.values()))
    if isinstance(doc, list):
        return set().union(*(texts(v) for v in doc))
    return set()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_record_content_puts_prompt_and_completion_on_the_span_only_when_opted_in(
    traced: Setup, stream: bool
) -> None:
    secret = "the launch code is 0000"
    seen: dict[str, tuple[tuple[ReadableSpan, ...], str]] = {}
    for model in ("chat", "chat-rc"):
        traced.exporter.clear()
        messages: list[Any] = [{"role": "user", "content": secret}]
        if stream:
            chunks = [
                c
                async for c in await traced.client.chat.completions.create(
                    model=model, messages=messages, stream=True
                )
            ]
            completion = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            answer = await traced.client.chat.completions.create(model=model, messages=messages)
            completion = answer.choices[0].message.content or ""
        assert completion.count("tok") == OUTPUT_TOKENS
        seen[model] = (await finished(traced.exporter), completion)

    # without recordContent the conversation is nowhere in the trace
    spans, _ = seen["chat"]
    split(spans)
    for span in spans:
        for key, value in (span.attributes or {}).items():
            assert "messages" not in key
            assert secret not in str(value), key

    # with it, the serving attempt carries the prompt and the completion, and only it does
    spans, completion = seen["chat-rc"]
    server, failed, served = split(spans)
    for span in (server, failed):
        assert not any(secret in str(v) for v in (span.attributes or {}).values())
    attrs = served.attributes or {}
    # JSON messages holding the exact texts (whether as OpenAI messages or semconv parts)
    prompt_doc = json.loads(str(attrs["gen_ai.input.messages"]))
    assert isinstance(prompt_doc, list) and secret in texts(prompt_doc)
    completion_doc = json.loads(str(attrs["gen_ai.output.messages"]))
    assert isinstance(completion_doc, list) and completion in texts(completion_doc)
