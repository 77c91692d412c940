"""A failover read back from a real Jaeger, the way a person sees it in the trace view.

The app (the official OpenAI SDK under its own OpenTelemetry span, exported to
Jaeger as service ``checkout-app``) calls the sidecar with a W3C
``traceparent``.  The sidecar is configured only the way a user configures it
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_SERVICE_NAME``); its route's
first target answers 503 and the fallback serves.  The trace is then fetched
through Jaeger's HTTP query API (the one its UI uses), and must show:

    POST /ask                   checkout-app
    └── chat chat               modelroute  SERVER   route, served model, cost
        ├── chat chat-a-up      modelroute  CLIENT   error, error.type=5xx
        └── chat chat-b-up      modelroute  CLIENT   fallback.reason=5xx, usage, cost

Jaeger itself (v1.75.0, built from Go modules by scripts/install-test-tools.sh)
runs on loopback with in-memory storage and is stopped after the test.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ..proxy.conftest import (  # fixtures re-used from the proxy suite
    FakeFactory,
    ProxyFactory,
    fakes,  # noqa: F401
    provider_key,  # noqa: F401
    provider_yaml,
    proxies,  # noqa: F401
    route_yaml,
)
from .backends import Jaeger, get_json, run_jaeger
from .conftest import require_tool

MODELS = """  models:
    - {name: chat-a, upstreamModel: chat-a-up, outputUSDPerMTok: 1.0, inputUSDPerMTok: 0.5,
       contextTokens: 32000, capabilities: [text]}
    - {name: chat-b, upstreamModel: chat-b-up, outputUSDPerMTok: 2.0, inputUSDPerMTok: 1.0,
       contextTokens: 32000, capabilities: [text]}
"""
RETRY = "  retry: {maxAttempts: 2, baseBackoffMs: 1, maxBackoffMs: 5}"
OUTPUT_TOKENS = 7
GO_MOD = Path(__file__).resolve().parents[2] / "scripts" / "jaeger" / "go.mod"


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    binary = require_tool("jaeger", "go build of scripts/jaeger")
    # the approved release pinned in scripts/jaeger/go.mod, not whatever is on PATH
    pinned = re.search(r"github.com/jaegertracing/jaeger (v\S+)", GO_MOD.read_text())
    assert pinned is not None
    stamped = subprocess.run(
        [binary, "version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert json.loads(stamped.strip().splitlines()[-1])["gitVersion"] == pinned[1], stamped
    with run_jaeger(binary, tmp_path) as server:
        yield server


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def parent_of(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


async def read_trace(jaeger: Jaeger, trace_id: str, spans: int) -> dict[str, Any]:
    """The trace as Jaeger's UI fetches it, once it holds ``spans`` spans (bounded wait:
    the sidecar exports in batches)."""
    url = f"{jaeger.url}/api/traces/{trace_id}"
    last: Any = None
    for _ in range(150):
        try:
            last = await asyncio.to_thread(get_json, url)
        except OSError as e:  # 404 until the first span of the trace is stored
            last = e
        else:
            if last.get("data") and len(last["data"][0]["spans"]) >= spans:
                return dict(last["data"][0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"trace {trace_id} never had {spans} spans in Jaeger: {last}")


async def test_failover_trace_in_jaeger(
    jaeger: Jaeger,
    fakes: FakeFactory,  # noqa: F811
    proxies: ProxyFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the sidecar configured as a user does it: the standard variables, nothing else
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", jaeger.otlp_traces)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "modelroute")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    primary = await fakes("us-east-1", error_rate=1.0, error_status=503)
    backup = await fakes("eu-west-1", output_tokens=OUTPUT_TOKENS)
    routes = (
        provider_yaml("primary", [("us-east-1", primary.url)], MODELS)
        + provider_yaml("backup", [("eu-west-1", backup.url)], MODELS)
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-b, tier: 1}"],
            RETRY,
        )
    )
    proxy = await proxies(routes)

    # the app: its own provider and span, exported straight to the same Jaeger
    app = TracerProvider(resource=Resource.create({"service.name": "checkout-app"}))
    app.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=jaeger.otlp_traces)))
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="sk-app", max_retries=0)
    try:
        with app.get_tracer("checkout").start_as_current_span(
            "POST /ask", kind=trace.SpanKind.SERVER
        ) as app_span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            answer = await client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": "what is the capital of France?"}],
                extra_headers=headers,
            )
        trace_id = format(app_span.get_span_context().trace_id, "032x")
        app_span_id = format(app_span.get_span_context().span_id, "016x")
    finally:
        await client.close()
        await asyncio.to_thread(app.shutdown)
    assert answer.usage is not None
    input_tokens, output_tokens = answer.usage.prompt_tokens, answer.usage.completion_tokens
    assert output_tokens == OUTPUT_TOKENS
    cost = (output_tokens * 2.0 + input_tokens * 1.0) / 1e6

    found = await read_trace(jaeger, trace_id, spans=4)
    spans = found["spans"]
    services = {pid: p["serviceName"] for pid, p in found["processes"].items()}
    by_id = {s["spanID"]: s for s in spans}
    assert len(spans) == 4, [(s["operationName"], services[s["processID"]]) for s in spans]

    # the app's span is the root; the sidecar's SERVER span hangs under it
    root = by_id[app_span_id]
    assert parent_of(root) is None and services[root["processID"]] == "checkout-app"
    [server] = [s for s in spans if parent_of(s) == app_span_id]
    assert services[server["processID"]] == "modelroute"
    assert server["operationName"] == "chat chat"
    st = tags(server)
    assert st["span.kind"] == "server"
    assert {k: st.get(k) for k in (
        "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model",
        "gen_ai.provider.name", "modelroute.route", "modelroute.outcome", "modelroute.fallback",
        "modelroute.attempts",
    )} == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "chat",
        "gen_ai.response.model": "chat-b-up", "gen_ai.provider.name": "backup",
        "modelroute.route": "chat", "modelroute.outcome": "ok", "modelroute.fallback": True,
        "modelroute.attempts": 2,
    }  # fmt: skip
    assert st["modelroute.cost_usd"] == pytest.approx(cost)
    assert "error" not in st  # the app got its answer: the request is no error

    # one CLIENT span per attempt, in order, both children of the SERVER span
    attempts = sorted(
        (s for s in spans if parent_of(s) == server["spanID"]),
        key=lambda s: tags(s)["modelroute.attempt"],
    )
    assert len(attempts) == 2
    failed, served = (tags(s) for s in attempts)
    assert [s["operationName"] for s in attempts] == ["chat chat-a-up", "chat chat-b-up"]
    assert failed["span.kind"] == served["span.kind"] == "client"

    # the failed primary: marked as an error in the UI, with why
    assert failed["error"] is True and failed["otel.status_code"] == "ERROR"
    assert {k: failed.get(k) for k in (
        "gen_ai.provider.name", "gen_ai.request.model", "error.type", "http.response.status_code",
        "server.port",
    )} == {
        "gen_ai.provider.name": "primary", "gen_ai.request.model": "chat-a-up",
        "error.type": "5xx", "http.response.status_code": 503, "server.port": primary.port,
    }  # fmt: skip
    assert "gen_ai.usage.output_tokens" not in failed and "modelroute.cost_usd" not in failed

    # the fallback that served: why it exists, what it answered, what it cost
    assert "error" not in served
    assert {k: served.get(k) for k in (
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
        "gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
        "modelroute.fallback.reason", "modelroute.route", "modelroute.region", "server.port",
    )} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "backup",
        "gen_ai.request.model": "chat-b-up", "gen_ai.response.model": "chat-b-up",
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
        "modelroute.fallback.reason": "5xx", "modelroute.route": "chat",
        "modelroute.region": "eu-west-1", "server.port": backup.port,
    }  # fmt: skip
    assert served["modelroute.cost_usd"] == pytest.approx(cost)

    # and the service list a person picks from in the UI names both sides
    listed = (await asyncio.to_thread(get_json, f"{jaeger.url}/api/services"))["data"]
    assert {"checkout-app", "modelroute"} <= set(listed)
