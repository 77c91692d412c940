"""Tail decisions (``MODELROUTE_TRACES_TAIL_RATIO``): every trace that matters kept, whole.

Each category the docs promise is kept at a ratio of 0 (so nothing is kept by
chance), with its SERVER span and every attempt's CLIENT span under it; an
ordinary request is dropped at 0 and kept at 1; a sampled app ``traceparent``
keeps its trace; the ratio is decided on the trace id, so it keeps about the share
asked.  The last test drives the real dispatcher: a failover kept, a plain answer dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

import openai
import pytest
from modelroute.proxy.events import RequestRecord
from modelroute.proxy.tail_sampling import (
    TailConfigError,
    TailSampler,
    tail_ratio_from_env,
)
from modelroute.proxy.tracing import TracingObserver, tracing_from_env
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ..proxy.conftest import (  # fixtures re-used from the proxy suite
    FakeFactory,
    ProxyFactory,
    fakes,  # noqa: F401
    provider_key,  # noqa: F401
    provider_yaml,
    proxies,  # noqa: F401
    route_yaml,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED_PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
UNSAMPLED_PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-00"


def tail_observer(ratio: float) -> tuple[TracingObserver, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return TracingObserver(provider, [processor], TailSampler(ratio)), exporter


def drive(
    obs: TracingObserver, record: RequestRecord, headers: dict[str, str] | None = None
) -> None:
    obs.request_started(record, headers or {"content-type": "application/json"})
    for attempt in record.attempts:
        obs.attempt_started(record, attempt)
        obs.attempt_finished(record, attempt)
    obs.request_finished(record)


def assert_whole(spans: tuple[ReadableSpan, ...], attempts: int) -> ReadableSpan:
    """One SERVER span and ``attempts`` CLIENT spans under it, all of one sampled trace."""
    assert len(spans) == 1 + attempts, [s.name for s in spans]
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert server.context is not None and server.context.trace_flags.sampled
    assert sorted(int(c.attributes["modelroute.attempt"]) for c in clients) == list(  # type: ignore[index,arg-type]
        range(1, attempts + 1)
    )
    for client in clients:
        assert client.context is not None and client.parent is not None
        assert client.context.trace_id == server.context.trace_id
        assert client.parent.span_id == server.context.span_id
        assert client.context.trace_flags.sampled
    return server


def _failover(rec: SimpleNamespace) -> RequestRecord:
    first = rec.attempt(1, rec.FLASH, "5xx", status=503)
    second = rec.attempt(2, rec.KIMI, fallback_reason="5xx")
    return rec.request([first, second])  # type: ignore[no-any-return]


def _hedge(rec: SimpleNamespace) -> RequestRecord:
    first = rec.attempt(1, rec.FLASH, "hedge_lost", status=None)
    second = rec.attempt(2, rec.KIMI, fallback_reason="hedge")
    second.hedge = True
    return rec.request([first, second])  # type: ignore[no-any-return]


def _skipped_primary(rec: SimpleNamespace) -> RequestRecord:
    # the primary's circuit is open: the one attempt already goes to the fallback
    only = rec.attempt(1, rec.KIMI, fallback_reason="circuit_open")
    return rec.request([only], extra={"skipped_reason": "circuit_open"})  # type: ignore[no-any-return]


def _error(rec: SimpleNamespace) -> RequestRecord:
    only = rec.attempt(1, rec.FLASH, "timeout", status=None)
    return rec.request([only], outcome="error", error_code="upstream_timeout")  # type: ignore[no-any-return]


def _client_closed(rec: SimpleNamespace) -> RequestRecord:
    only = rec.attempt(1, rec.FLASH, "cancelled", status=None)
    record = rec.request([only], outcome="client_closed")
    record.status = 499
    return record  # type: ignore[no-any-return]


def _budget(rec: SimpleNamespace) -> RequestRecord:
    only = rec.attempt(1, rec.FLASH)
    return rec.request([only], budget_action="downgrade")  # type: ignore[no-any-return]


def _budget_rejected(rec: SimpleNamespace) -> RequestRecord:
    record = rec.request([], outcome="rejected", error_code="budget_exhausted")
    record.status, record.budget_action = 429, "reject"
    return record  # type: ignore[no-any-return]


def _slow(rec: SimpleNamespace) -> RequestRecord:
    only = rec.attempt(1, rec.FLASH)
    return rec.request([only], duration=2.5, latency_budget=1.8)  # type: ignore[no-any-return]


CATEGORIES: dict[str, tuple[Callable[[SimpleNamespace], RequestRecord], str]] = {
    "failover": (_failover, "failover"),
    "hedge": (_hedge, "hedge"),
    "skipped-primary": (_skipped_primary, "failover"),
    "error": (_error, "error"),
    "client-closed": (_client_closed, "error"),
    "budget-downgrade": (_budget, "budget"),
    "budget-rejected": (_budget_rejected, "error"),
    "over-latency-budget": (_slow, "latency"),
}


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_every_trace_that_matters_is_kept_whole(rec: SimpleNamespace, category: str) -> None:
    build, reason = CATEGORIES[category]
    obs, exporter = tail_observer(0.0)
    record = build(rec)
    drive(obs, record)
    server = assert_whole(exporter.get_finished_spans(), len(record.attempts))
    assert server.attributes is not None
    assert server.attributes["modelroute.trace.kept"] == reason
    assert server.attributes["modelroute.outcome"] == record.outcome


def test_an_ordinary_request_is_dropped_at_ratio_0_and_kept_at_1(rec: SimpleNamespace) -> None:
    def ordinary() -> RequestRecord:
        # inside its latency budget, no budget hit, one attempt that served
        return rec.request([rec.attempt(1, rec.FLASH)], duration=0.5, latency_budget=1.8)  # type: ignore[no-any-return]

    dropped, none = tail_observer(0.0)
    drive(dropped, ordinary())
    assert none.get_finished_spans() == ()

    kept, spans = tail_observer(1.0)
    drive(kept, ordinary())
    server = assert_whole(spans.get_finished_spans(), 1)
    assert server.attributes is not None and server.attributes["modelroute.trace.kept"] == "ratio"


def test_a_sampled_app_trace_stays_whole_and_an_unsampled_one_is_not_forced(
    rec: SimpleNamespace,
) -> None:
    obs, exporter = tail_observer(0.0)
    drive(obs, rec.request([rec.attempt(1, rec.FLASH)]), {"traceparent": SAMPLED_PARENT})
    server = assert_whole(exporter.get_finished_spans(), 1)
    assert format(server.context.trace_id, "032x") == TRACE_ID  # type: ignore[union-attr]
    assert server.attributes is not None and server.attributes["modelroute.trace.kept"] == "parent"

    exporter.clear()
    drive(obs, rec.request([rec.attempt(1, rec.FLASH)]), {"traceparent": UNSAMPLED_PARENT})
    assert exporter.get_finished_spans() == ()
    # but a failover under an unsampled app trace is still kept, in the app's trace
    drive(obs, _failover(rec), {"traceparent": UNSAMPLED_PARENT})
    server = assert_whole(exporter.get_finished_spans(), 2)
    assert format(server.context.trace_id, "032x") == TRACE_ID  # type: ignore[union-attr]


def test_the_ratio_keeps_about_its_share_decided_on_the_trace_id(rec: SimpleNamespace) -> None:
    obs, exporter = tail_observer(0.1)
    n = 4000
    for _ in range(n):
        drive(obs, rec.request([rec.attempt(1, rec.FLASH)]))
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert 0.07 * n < len(servers) < 0.13 * n
    sampler = TailSampler(0.1)
    record = rec.request([rec.attempt(1, rec.FLASH)])
    # the same trace id gets the same answer (sidecars sampling one trace agree)
    assert sampler.decide(record, 1, False) == "ratio"
    assert sampler.decide(record, (1 << 64) - 1, False) is None


def test_the_variable_is_read_and_a_bad_value_says_what_to_set() -> None:
    assert tail_ratio_from_env({}) is None
    assert tail_ratio_from_env({"MODELROUTE_TRACES_TAIL_RATIO": "0.01"}) == 0.01
    for bad in ("1%", "2", "-0.1"):
        with pytest.raises(TailConfigError, match="between 0 and 1"):
            tail_ratio_from_env({"MODELROUTE_TRACES_TAIL_RATIO": bad})
    obs = tracing_from_env(
        environ={
            "OTEL_TRACES_EXPORTER": "console",
            "MODELROUTE_TRACES_TAIL_RATIO": "0.25",
        }
    )
    assert obs is not None and obs.tail is not None and obs.tail.ratio == 0.25
    obs.shutdown()


async def test_through_the_proxy_a_failover_is_kept_and_a_plain_answer_dropped(
    fakes: FakeFactory,  # noqa: F811
    proxies: ProxyFactory,  # noqa: F811
) -> None:
    primary = await fakes("us-east-1", error_rate=1.0, error_status=503)
    backup = await fakes("eu-west-1")
    models = """  models:
    - {name: chat-a, upstreamModel: chat-a-up, outputUSDPerMTok: 1.0, contextTokens: 32000,
       capabilities: [text]}
"""
    retry = "  retry: {maxAttempts: 2, baseBackoffMs: 1, maxBackoffMs: 5}"
    routes = (
        provider_yaml("primary", [("us-east-1", primary.url)], models)
        + provider_yaml("backup", [("eu-west-1", backup.url)], models)
        + route_yaml(
            "failing",
            ["failing"],
            ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-a, tier: 1}"],
            retry,
        )
        + route_yaml("plain", ["plain"], ["{provider: backup, model: chat-a}"], retry)
    )
    proxy = await proxies(routes)
    obs, exporter = tail_observer(0.0)
    proxy.proxy.observers.add(obs)
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="sk-x", max_retries=0, timeout=10)
    try:
        for _ in range(3):
            await client.chat.completions.create(
                model="plain", messages=[{"role": "user", "content": "hi"}]
            )
        await client.chat.completions.create(
            model="failing", messages=[{"role": "user", "content": "hi"}]
        )
        for _ in range(500):  # bounded: the handler ends the request a moment after the answer
            if len(exporter.get_finished_spans()) >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await client.close()
    spans = exporter.get_finished_spans()
    server = assert_whole(spans, 2)  # the three plain answers left nothing
    assert server.attributes is not None
    assert server.attributes["modelroute.route"] == "failing"
    assert server.attributes["modelroute.trace.kept"] == "failover"
    failed = [s for s in spans if s.attributes and s.attributes.get("error.type") == "5xx"]
    assert len(failed) == 1 and failed[0].kind is SpanKind.CLIENT
