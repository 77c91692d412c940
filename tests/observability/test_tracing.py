"""Spans per the GenAI semantic conventions: in memory, and over real OTLP/HTTP.

A fallback must be visible in the trace: one SERVER span continuing the app's
``traceparent``, under it one CLIENT span per upstream attempt, the failed one
carrying ``error.type`` and the serving one the usage and cost.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from modelroute.proxy.events import RequestRecord
from modelroute.proxy.tracing import (
    CONTENT_LIMIT,
    TracingObserver,
    tracing_configured,
    tracing_from_env,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ..otlp import otlp_receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def fallback_request(rec: SimpleNamespace, **fields: Any) -> RequestRecord:
    """deepseek-v4-flash answers 503, kimi-k2.5 (upstream name moonshot-k2.5) serves."""
    first = rec.attempt(1, rec.FLASH, "5xx", status=503)
    second = rec.attempt(2, rec.KIMI, fallback_reason="5xx", upstream_model="moonshot-k2.5")
    return rec.request(
        [first, second], price_per_mtok=3.00, input_tokens=100, output_tokens=20, **fields
    )


def drive(obs: TracingObserver, record: RequestRecord, *, finish_served: bool = True) -> None:
    """Call the observer in the order the dispatcher does."""
    obs.request_started(record, {"traceparent": TRACEPARENT, "content-type": "application/json"})
    for attempt in record.attempts:
        obs.attempt_started(record, attempt)
        if attempt is not record.served or finish_served:
            obs.attempt_finished(record, attempt)
    obs.request_finished(record)


@pytest.fixture(params=["processors", "tracer"])
def memory(request: pytest.FixtureRequest) -> tuple[TracingObserver, InMemorySpanExporter]:
    """Both ways the observer emits: to the processors it was given (what tracing_from_env
    does), and through a provider's tracer (a provider built elsewhere): same spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    if request.param == "processors":
        return TracingObserver(provider, [processor]), exporter
    return TracingObserver(provider), exporter


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


@pytest.mark.parametrize("finish_served", [True, False], ids=["served-finished", "served-open"])
def test_fallback_is_two_client_spans_under_one_server_span(
    rec: SimpleNamespace,
    memory: tuple[TracingObserver, InMemorySpanExporter],
    finish_served: bool,
) -> None:
    obs, exporter = memory
    record = fallback_request(rec, extra={"prompt": "secret prompt text"})
    drive(obs, record, finish_served=finish_served)
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    [server] = by_kind(spans, SpanKind.SERVER)
    failed, served = sorted(
        by_kind(spans, SpanKind.CLIENT), key=lambda s: s.attributes["modelroute.attempt"]
    )  # type: ignore[index]

    # the app's trace continues: same trace id, parent is the app's span
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    assert server.name == "chat general"
    for client in (failed, served):
        assert client.context.trace_id == server.context.trace_id
        assert client.parent is not None and client.parent.span_id == server.context.span_id

    assert failed.name == "chat deepseek-v4-flash"
    assert failed.attributes is not None
    assert failed.attributes["gen_ai.operation.name"] == "chat"
    assert failed.attributes["gen_ai.provider.name"] == "deepseek"
    assert failed.attributes["gen_ai.request.model"] == "deepseek-v4-flash"
    assert failed.attributes["error.type"] == "5xx"
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.status.status_code is StatusCode.ERROR
    assert "gen_ai.usage.output_tokens" not in failed.attributes
    assert "modelroute.fallback.reason" not in failed.attributes

    assert served.name == "chat moonshot-k2.5"
    assert served.attributes is not None
    assert dict(served.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "kimi",
        "gen_ai.request.model": "moonshot-k2.5",
        "gen_ai.response.model": "moonshot-k2.5",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "cn-north.kimi.example",
        "server.port": 8443,
        "modelroute.route": "general",
        "modelroute.attempt": 2,
        "modelroute.model": "kimi-k2.5",
        "modelroute.region": "cn-north",
        "modelroute.fallback.reason": "5xx",
        "modelroute.cost_usd": 20 * 3.00 / 1_000_000,
        **({"http.response.status_code": 200} if finish_served else {}),
    }
    assert served.status.status_code is StatusCode.UNSET

    assert server.attributes is not None
    assert server.attributes["modelroute.route"] == "general"
    assert server.attributes["modelroute.outcome"] == "ok"
    assert server.attributes["modelroute.fallback"] is True
    assert server.attributes["http.response.status_code"] == 200
    assert "error.type" not in server.attributes
    # recordContent is off: the prompt appears nowhere
    for span in spans:
        assert "secret prompt text" not in repr(dict(span.attributes or {}))


def test_server_span_of_a_failed_classified_request(
    rec: SimpleNamespace, memory: tuple[TracingObserver, InMemorySpanExporter]
) -> None:
    obs, exporter = memory
    record = rec.request(
        [rec.attempt(1, rec.FLASH, "timeout", status=None)],
        outcome="error",
        category="reasoning",
        classify_reason="keyword: prove",
        error_code="upstream_timeout",
    )
    drive(obs, record)
    [server] = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert server.attributes is not None
    assert server.attributes["modelroute.category"] == "reasoning"
    assert server.attributes["modelroute.classify.reason"] == "keyword: prove"
    assert server.attributes["error.type"] == "upstream_timeout"
    assert server.attributes["http.response.status_code"] == 502
    assert server.status.status_code is StatusCode.ERROR


def test_content_only_when_the_route_opts_in(
    rec: SimpleNamespace, memory: tuple[TracingObserver, InMemorySpanExporter]
) -> None:
    obs, exporter = memory
    prompt = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}},
            ],
        },
    ]
    answer = [{"role": "assistant", "content": "a cat"}]
    record = fallback_request(
        rec, record_content=True, extra={"prompt": prompt, "completion": answer}
    )
    record.finish_reasons = ("stop",)
    drive(obs, record)
    [served] = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get("modelroute.attempt") == 2
    ]
    assert served.attributes is not None
    # the GenAI conventions' message shape (role + typed parts), not OpenAI's
    assert orjson.loads(str(served.attributes["gen_ai.input.messages"])) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "what is this?"},
                {"type": "uri", "modality": "image", "uri": "https://img.example/cat.png"},
            ],
        },
    ]
    assert orjson.loads(str(served.attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "a cat"}],
            "finish_reason": "stop",
        }
    ]


def test_recorded_content_over_the_cap_stays_valid_json(
    rec: SimpleNamespace, memory: tuple[TracingObserver, InMemorySpanExporter]
) -> None:
    """A huge prompt is shortened part by part, never cut mid-JSON: backends still parse it."""
    obs, exporter = memory
    prompt = [{"role": "user", "content": "x" * 300_000}, {"role": "user", "content": "why?"}]
    record = fallback_request(rec, record_content=True, extra={"prompt": prompt})
    drive(obs, record)
    [served] = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get("modelroute.attempt") == 2
    ]
    assert served.attributes is not None
    raw = str(served.attributes["gen_ai.input.messages"])
    assert len(raw) <= CONTENT_LIMIT
    messages = orjson.loads(raw)
    first, last = messages[0]["parts"][0]["content"], messages[1]["parts"][0]["content"]
    assert first.startswith("xxx") and "more characters]" in first
    assert last == "why?"


def test_tracing_off_without_otel_variables() -> None:
    assert not tracing_configured({})
    assert not tracing_configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing_configured(
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    )
    assert tracing_configured(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}
    )
    assert tracing_configured({"OTEL_TRACES_EXPORTER": "otlp"})


def test_tracing_off_imports_no_opentelemetry() -> None:
    """With no OTEL_* set, the sidecar doesn't even load the SDK (memory, start-up time)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = (
        "import sys\n"
        "from modelroute.proxy import tracing, metrics, events\n"
        "assert tracing.tracing_from_env() is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout


async def test_spans_arrive_over_otlp_http(
    rec: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real exporter, configured only by OTEL_* variables, to a receiver on loopback."""
    async with otlp_receiver() as collector:
        for name in [k for k in os.environ if k.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        # the base endpoint: the exporter appends /v1/traces itself
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.removesuffix("/v1/traces"))
        monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout-sidecar")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
        for name in ("NO_PROXY", "no_proxy"):  # a CI proxy must not swallow loopback
            monkeypatch.setenv(name, "127.0.0.1,localhost")
        obs = tracing_from_env()
        assert obs is not None
        drive(obs, fallback_request(rec))
        # shutdown flushes synchronously over HTTP: off the loop that serves the receiver
        await asyncio.wait_for(asyncio.to_thread(obs.shutdown), timeout=20)
        await asyncio.wait_for(collector.arrived.wait(), timeout=5)

    spans = collector.spans()
    assert len(spans) == 3
    service = {
        a.key: a.value.string_value
        for a in spans[0][0].resource.attributes
        if a.key == "service.name"
    }
    assert service == {"service.name": "checkout-sidecar"}
    by_name = {span.name: span for _, span in spans}
    assert set(by_name) == {"chat general", "chat deepseek-v4-flash", "chat moonshot-k2.5"}
    server = by_name["chat general"]
    assert server.trace_id.hex() == TRACE_ID
    assert server.parent_span_id.hex() == PARENT_ID
    served = by_name["chat moonshot-k2.5"]
    assert served.parent_span_id == server.span_id
    attributes = {a.key: a.value for a in served.attributes}
    assert attributes["gen_ai.usage.output_tokens"].int_value == 20
    assert attributes["gen_ai.response.model"].string_value == "moonshot-k2.5"
    failed = {a.key: a.value for a in by_name["chat deepseek-v4-flash"].attributes}
    assert failed["error.type"].string_value == "5xx"


@pytest.mark.parametrize("through", ["processors", "tracer"])
def test_a_custom_sampler_is_asked_for_every_span(rec: SimpleNamespace, through: str) -> None:
    """The standard samplers decide children as their parent; a user's own is asked each time."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class ServerOnly(Sampler):
        def should_sample(
            self,
            parent_context,
            trace_id,
            name,
            kind=None,
            attributes=None,
            links=None,
            trace_state=None,
        ):  # type: ignore[no-untyped-def]
            keep = kind is SpanKind.SERVER
            return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP, attributes)

        def get_description(self) -> str:
            return "server only"

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ServerOnly())
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    obs = (
        TracingObserver(provider, [processor])
        if through == "processors"
        else TracingObserver(provider)
    )
    drive(obs, fallback_request(rec))
    assert [s.kind for s in exporter.get_finished_spans()] == [SpanKind.SERVER]


def test_spans_are_the_same_when_readable_span_changes_its_parameters(
    rec: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The observer passes ReadableSpan's arguments by position only while its signature is
    the one it knows; for any other it passes them by name, and the spans don't change."""
    import opentelemetry.sdk.trace as sdk_trace

    def spans() -> list[tuple[Any, ...]]:
        exporter = InMemorySpanExporter()
        obs = TracingObserver(TracerProvider(), [SimpleSpanProcessor(exporter)])
        drive(obs, fallback_request(rec))
        return [
            (s.name, s.kind, s.parent, dict(s.attributes or {}), s.status.status_code)
            for s in exporter.get_finished_spans()
        ]

    expected = spans()

    def reordered(*, start_time: int, name: str, **rest: Any) -> ReadableSpan:
        return ReadableSpan(name, start_time=start_time, **rest)

    monkeypatch.setattr(sdk_trace, "ReadableSpan", reordered)
    obs = TracingObserver(TracerProvider(), [])
    assert obs._readable is not reordered  # the by-name path
    got = spans()
    assert [s[:2] + s[3:] for s in got] == [s[:2] + s[3:] for s in expected]


def test_spans_are_the_same_when_readable_span_takes_its_parameters_by_name_only(
    rec: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same names in the same order, but keyword-only: a call by position would fail
    every span, so the observer passes them by name."""
    import inspect

    import opentelemetry.sdk.trace as sdk_trace
    from modelroute.proxy.tracing_spans import _READABLE_SPAN_PARAMETERS

    exporter = InMemorySpanExporter()
    obs = TracingObserver(TracerProvider(), [SimpleSpanProcessor(exporter)])
    drive(obs, fallback_request(rec))
    expected = [(s.name, s.kind, dict(s.attributes or {})) for s in exporter.get_finished_spans()]

    def keyword_only(**kw: Any) -> ReadableSpan:
        return ReadableSpan(**kw)

    keyword_only.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in _READABLE_SPAN_PARAMETERS]
    )
    monkeypatch.setattr(sdk_trace, "ReadableSpan", keyword_only)
    exporter = InMemorySpanExporter()
    obs = TracingObserver(TracerProvider(), [SimpleSpanProcessor(exporter)])
    assert obs._readable is not keyword_only
    drive(obs, fallback_request(rec))
    got = [(s.name, s.kind, dict(s.attributes or {})) for s in exporter.get_finished_spans()]
    assert got == expected
