"""The lean OTLP encoder writes what the SDK's encoder writes, and the exporter really uses it.

The sidecar's spans and spans using every other field (events, links, arrays,
maps, negative and 64-bit ints, floats, bytes, unicode, trace state, a remote
parent, error status, two resources and scopes with versions and schema URLs)
are encoded by both; decoded with the official protobuf classes the two
messages must be equal.  Then the exporter ``tracing_from_env`` builds posts a
batch to a loopback collector that decodes it.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from modelroute.proxy.otlp_encode import Encoder, varint
from modelroute.proxy.tracing import TracingObserver
from modelroute.proxy.tracing_export import LeanOTLPSpanExporter
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from ..otlp import otlp_receiver


def sdk_message(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(encode_spans(spans).SerializeToString())
    return message


def lean_message(
    spans: list[ReadableSpan], encoder: Encoder | None = None
) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString((encoder or Encoder()).request(spans))
    return message


def sidecar_spans(rec: SimpleNamespace, n: int = 3) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    processor = SimpleSpanProcessor(exporter)
    obs = TracingObserver(provider, [processor])
    for i in range(n):
        first = rec.attempt(1, rec.FLASH, "5xx", status=503)
        second = rec.attempt(2, rec.KIMI, fallback_reason="5xx", upstream_model="moonshot-k2.5")
        record = rec.request([first, second], input_tokens=100 + i, output_tokens=20)
        obs.request_started(record, {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})
        for attempt in record.attempts:
            obs.attempt_finished(record, attempt)
        obs.request_finished(record)
    return list(exporter.get_finished_spans())


def odd_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    spans: list[ReadableSpan] = []
    for service, scope_version in (("a", "1.0"), ("b", None)):
        provider = TracerProvider(
            resource=Resource(
                {"service.name": service, "host.cores": 2, "ratio": 0.5},
                schema_url="https://opentelemetry.io/schemas/1.21.0",
            )
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer(
            "lib", scope_version, schema_url="https://example.test/s", attributes={"k": "v"}
        )
        remote = SpanContext(
            0xFFFF_0000_0000_0000_0000_0000_0000_0001,
            0xABCD,
            is_remote=True,
            trace_flags=TraceFlags(1),
            trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
        )
        parent = set_span_in_context(NonRecordingSpan(remote))
        for kind in SpanKind:
            span = tracer.start_span(
                "naïve ünïcode ✓",
                context=parent,
                kind=kind,
                attributes={
                    "neg": -5,
                    "int64.min": -(1 << 63),
                    "int64.max": (1 << 63) - 1,
                    "zero": 0,
                    "false": False,
                    "true": True,
                    "empty": "",
                    "float": -0.25,
                    "strs": ("a", "b", ""),
                    "ints": (1, -2, 300),
                    "bools": (True, False),
                    "floats": (1.5, 2.0),
                },
                links=[Link(SpanContext(5, 6, is_remote=True), {"link.n": 1}), Link(remote)],
            )
            span.add_event("with attributes", {"x": 1.5, "s": "é"})
            span.add_event("", {})
            span.set_status(Status(StatusCode.ERROR, "boom"))
            span.end()
        ok = tracer.start_span("ok", kind=SpanKind.CLIENT)
        ok.set_status(Status(StatusCode.OK))
        ok.end()
        spans.extend(exporter.get_finished_spans())
        exporter.clear()
    return spans


def test_the_sidecars_spans_encode_as_the_sdk_encodes_them(rec: SimpleNamespace) -> None:
    spans = sidecar_spans(rec)
    encoder = Encoder()
    assert lean_message(spans, encoder) == sdk_message(spans)
    # again with every attribute now from the cache
    assert lean_message(spans, encoder) == sdk_message(spans)


def test_every_other_span_field_encodes_as_the_sdk_encodes_it() -> None:
    spans = odd_spans()
    lean, sdk = lean_message(spans), sdk_message(spans)
    assert len(sdk.resource_spans) == 2
    assert lean == sdk


def test_a_value_otlp_cannot_carry_fails_the_encoding() -> None:
    span = ReadableSpan(
        "x", context=SpanContext(1, 2, False), attributes={"n": 1 << 64}, resource=Resource({})
    )
    with pytest.raises(TypeError, match="64 bits"):
        Encoder().request([span])
    assert varint(300) == b"\xac\x02"
    assert varint(-1) == b"\xff" * 9 + b"\x01"


async def test_the_exporter_posts_lean_batches_a_collector_decodes(rec: SimpleNamespace) -> None:
    spans = sidecar_spans(rec, n=2)
    async with otlp_receiver() as collector:
        exporter = LeanOTLPSpanExporter(endpoint=collector.url, timeout=5)
        assert exporter.lean  # the lean path, not the SDK encoder fallback
        result = await asyncio.wait_for(asyncio.to_thread(exporter.export, spans), timeout=20)
        exporter.shutdown()
    assert result is SpanExportResult.SUCCESS
    assert len(collector.received) == 1
    assert collector.received[0] == sdk_message(spans)


def canonical(message: ExportTraceServiceRequest) -> bytes:
    """The message's deterministic bytes: equal only if every field is bit for bit (-0.0 too)."""
    return message.SerializeToString(deterministic=True)


def built_spans() -> list[ReadableSpan]:
    """ReadableSpans built as the sidecar builds them, in every shape the fast path takes or refuses."""
    resource = Resource({"service.name": "built"})
    state = TraceState([("vendor", "x1")])
    local = SpanContext(7, 8, is_remote=False, trace_flags=TraceFlags(1))
    remote = SpanContext(7, 9, is_remote=True, trace_flags=TraceFlags(1), trace_state=state)
    values: list[dict[str, object] | None] = [
        {"v": 1, "t": (1, 2), "f": 0.5, "s": "a", "r": ("stop",)},
        {"v": True, "t": (True, 2), "f": 0.0, "s": "a", "r": ("stop",)},
        {"v": 1.0, "t": ("1",), "f": -0.0, "s": "b", "r": ("length",)},
        {"v": 1, "l": ["x", "y"], "f": 0.5, "s": "a", "n": -3, "big": (1 << 63) - 1},
        {"r": (["x"], "y"), "l": ("x",), "f": 1.5},
        None,
        {},
    ]
    statuses = [Status(StatusCode.UNSET), Status(StatusCode.ERROR, "boom"), Status(StatusCode.OK)]
    spans = []
    for i, attributes in enumerate(values * 2):
        for parent, span_state in ((None, None), (local, None), (remote, state), (None, state)):
            spans.append(
                ReadableSpan(
                    f"span {i % 3}",
                    context=SpanContext(
                        0xFFFF_0000_0000_0000_0000_0000_0000_0001 + i,
                        100 + i,
                        False,
                        TraceFlags(1),
                        span_state,
                    ),
                    parent=parent,
                    resource=resource,
                    attributes=attributes,
                    kind=list(SpanKind)[i % 5],
                    status=statuses[i % 3],
                    start_time=1_700_000_000_000_000_000 + i if i != 3 else 0,
                    end_time=1_700_000_000_500_000_000 + i,
                )
            )
    return spans


class OverridingSpan(ReadableSpan):
    """A span class whose attributes are not its field: encoded through its properties."""

    @property
    def attributes(self) -> dict[str, object]:  # type: ignore[override]
        return {"overridden": True}


def test_built_spans_of_every_shape_encode_as_the_sdk_encodes_them() -> None:
    spans = built_spans()
    spans.append(OverridingSpan("o", context=SpanContext(1, 2, False), resource=spans[0].resource))
    encoder = Encoder()
    for _ in range(2):  # the second time from the caches
        assert canonical(lean_message(spans, encoder)) == canonical(sdk_message(spans))
    decoded = lean_message(spans, encoder).resource_spans[0].scope_spans[0].spans
    assert [a.key for a in decoded[-1].attributes] == ["overridden"]


def test_the_exporter_reads_the_proxy_environment_once_and_still_obeys_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests
    import requests.sessions

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "nearby.test")
    url = "https://collector.test:4318/v1/traces"
    exporter = LeanOTLPSpanExporter(endpoint=url)
    session = exporter._client._transport._session  # type: ignore[attr-defined]
    plain = requests.Session()
    plain.verify = session.verify
    scans: list[object] = []
    real = requests.sessions.get_environ_proxies

    def counted(*args: object, **kwargs: object) -> object:
        scans.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    proxies = []
    for target in (url, "https://nearby.test/v1/traces"):
        first = session.merge_environment_settings(target, {}, None, None, None)
        first["proxies"]["mutated"] = "by the caller"  # must not reach the next answer
        second = session.merge_environment_settings(target, {}, None, None, None)
        assert second == plain.merge_environment_settings(target, {}, None, None, None)
        proxies.append(second["proxies"])
    assert proxies[0]["https"] == "http://proxy.test:3128"  # HTTPS_PROXY
    assert "https" not in proxies[1]  # NO_PROXY
    assert len(scans) == 4  # each target once for the exporter's session, once for plain
    exporter.shutdown()
