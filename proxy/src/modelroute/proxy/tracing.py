"""OpenTelemetry traces following the GenAI semantic conventions, off unless ``OTEL_*`` asks.

One SERVER span per request continues the app's ``traceparent``; under it one
CLIENT span per upstream attempt, so a fallback shows as two attempts side by
side in the trace, the failed one carrying ``error.type``.  The serving
attempt carries usage, cost and the response model.

Tracing costs nothing when it isn't configured: :func:`tracing_from_env`
returns None without importing OpenTelemetry at all (this module imports it
only inside :class:`TracingObserver`), so the sidecar's memory and import time
don't grow for users who don't trace.  When it is configured, everything
(endpoint, headers, timeout, sampler, batch sizes, resource attributes) is read
by the OpenTelemetry SDK itself from the standard ``OTEL_*`` variables.

Even when tracing is on, an idle sidecar doesn't load the OTLP/HTTP exporter:
it pulls in requests, urllib3, charset-normalizer and protobuf (~6 MB of RSS),
and nothing needs them before the first batch of spans is exported.
:class:`DeferredOTLPExporter` builds the real exporter on its first export, in
the batch processor's thread.

Prompt and completion text are never recorded, unless the route sets
``recordContent`` and the dispatcher put them in ``record.extra``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import orjson

from .events import AttemptRecord, RequestRecord, ShadowRecord
from .genai_content import input_messages, output_messages

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import Span

log = logging.getLogger("modelroute.tracing")

# characters of prompt or completion a recordContent span carries (each)
CONTENT_LIMIT = 64 * 1024

_TRUE = ("true", "1", "yes", "on")


def tracing_configured(environ: Mapping[str, str]) -> bool:
    """Do the standard ``OTEL_*`` variables ask for traces?"""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def tracing_from_env(
    service_name: str = "modelroute", environ: Mapping[str, str] | None = None
) -> TracingObserver | None:
    """A :class:`TracingObserver` exporting as ``OTEL_*`` says, or None when tracing is off.

    Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp`` or
    ``console``) or, with it unset, an OTLP endpoint is given; ``OTEL_SDK_DISABLED=true``
    turns it off whatever else is set.  OTLP goes over HTTP/protobuf.
    """
    env = os.environ if environ is None else environ
    if not tracing_configured(env):
        return None

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [
        e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if e.strip()
    ]
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our default name.
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    added = 0
    for name in exporters:
        exporter: SpanExporter
        if name in ("otlp", "otlp_proto_http"):
            protocol = env.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
            )
            if protocol and protocol != "http/protobuf":
                log.warning(
                    "OTLP protocol %r is not supported: exporting over http/protobuf", protocol
                )
            exporter = _otlp_exporter(env)
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER %r is not supported (otlp, console): ignored", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
        added += 1
    if not added:
        provider.shutdown()
        return None
    log.info("tracing on: exporting spans via %s", ", ".join(exporters))
    return TracingObserver(provider)


_OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    """The OTLP/HTTP span exporter: deferred to the first export unless it runs user code.

    What can go wrong is still found at start, where it was before:

    * the exporter package missing: looked up (not imported) here;
    * a credential provider (``OTEL_PYTHON_EXPORTER_OTLP_HTTP[_TRACES]_CREDENTIAL_PROVIDER``):
      the one setting the exporter's constructor raises on (an unknown entry point, a
      provider that doesn't return a ``requests.Session``), and it runs the user's own
      code, so then the real exporter is built right away, as before.

    Every other ``OTEL_EXPORTER_OTLP_*`` setting the exporter reads with a warning and a
    default when it is malformed (timeout, compression, headers) and uses only when it
    sends (endpoint, certificates), so building it at the first export changes nothing
    but when that warning is logged.
    """
    if importlib.util.find_spec(_OTLP_MODULE) is None:  # imports only its empty parents
        raise ModuleNotFoundError(
            f"OTEL_TRACES_EXPORTER=otlp needs {_OTLP_MODULE}, which is not installed",
            name=_OTLP_MODULE,
        )
    if any(
        name.startswith("OTEL_PYTHON_EXPORTER_OTLP") and name.endswith("CREDENTIAL_PROVIDER")
        for name in env
    ):
        return _build_otlp_exporter()
    return cast("SpanExporter", DeferredOTLPExporter())


def _build_otlp_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class DeferredOTLPExporter:
    """A span exporter that imports and builds ``OTLPSpanExporter`` when it first exports.

    Duck-typed to the SDK's ``SpanExporter`` (``export``, ``shutdown``, ``force_flush``:
    all the batch processor calls) rather than subclassing it, so that this module stays
    importable without OpenTelemetry.  ``export`` runs in the batch processor's thread,
    so the import happens there, not on the event loop.  Shut down before anything was
    exported, it never imports the exporter at all.
    """

    def __init__(self, build: Callable[[], SpanExporter] = _build_otlp_exporter) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._exporter: SpanExporter | None = None
        self._failed = False
        self._shutdown = False

    @property
    def built(self) -> bool:
        """Has the real exporter been built (a batch was exported)?"""
        return self._exporter is not None

    def _real(self) -> SpanExporter | None:
        with self._lock:
            if self._exporter is None and not self._failed and not self._shutdown:
                try:
                    self._exporter = self._build()
                except Exception:
                    # the environment won't change while we run: say why once, loudly, and
                    # drop batches from now on instead of a traceback per batch
                    self._failed = True
                    log.exception("cannot build the OTLP span exporter: spans are dropped")
            return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        exporter = self._real()
        if exporter is None:
            from opentelemetry.sdk.trace.export import SpanExportResult

            return SpanExportResult.FAILURE
        return exporter.export(spans)

    def shutdown(self) -> None:
        with self._lock:
            self._shutdown = True
            exporter = self._exporter
        if exporter is not None:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        exporter = self._exporter
        return True if exporter is None else exporter.force_flush(timeout_millis)


class TracingObserver:
    """The :class:`~.events.Observer` that turns request records into spans.

    Spans live in ``record.span`` and ``attempt.span``.  Usage and cost are set
    on the serving attempt's span when it ends (the dispatcher finishes that
    attempt after the body is complete) or, if it is still open then, when the
    request ends.
    """

    def __init__(self, tracer_provider: TracerProvider) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("modelroute.proxy")
        self._extract = propagate.extract
        # the header names the configured propagators read (OTEL_PROPAGATORS): a request
        # carrying none of them starts a new trace without running the propagators
        self._carrier_fields = tuple(propagate.get_global_textmap().fields)
        self._in_context = trace.set_span_in_context
        self._server = SpanKind.SERVER
        self._client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._status = Status
        self._code_error = StatusCode.ERROR

    # -- Observer protocol ------------------------------------------------------------

    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        parent = None
        for name in self._carrier_fields:
            if name in headers:
                parent = self._extract(headers)  # W3C traceparent/tracestate (OTEL_PROPAGATORS)
                break
        record.span = self.tracer.start_span(
            f"{record.operation} {record.requested_model}",
            context=parent,
            kind=self._server,
            attributes={
                "gen_ai.operation.name": record.operation,
                "gen_ai.request.model": record.requested_model,
                "http.request.method": "POST",
                "modelroute.endpoint": record.endpoint,
                "modelroute.stream": record.stream,
            },
        )

    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        parent = record.span
        if parent is not None and not parent.is_recording():
            # the request's span was sampled out (OTEL_TRACES_SAMPLER): every standard sampler
            # decides the same for its children (same trace id, or follows the parent), so
            # don't build attributes and spans nobody records
            return
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": record.operation,
            "gen_ai.provider.name": attempt.provider,
            "gen_ai.request.model": attempt.upstream_model,
            "modelroute.attempt": attempt.number,
            "modelroute.model": attempt.model,
            "modelroute.region": attempt.region,
        }
        if record.route is not None:
            attributes["modelroute.route"] = record.route
        if attempt.fallback_reason is not None:
            attributes["modelroute.fallback.reason"] = attempt.fallback_reason
        if attempt.hedge:
            attributes["modelroute.hedge"] = True
        if attempt.server_address:
            attributes.update(_server_address(attempt.server_address))
        attempt.span = self.tracer.start_span(
            f"{record.operation} {attempt.upstream_model}",
            context=self._in_context(parent) if parent is not None else None,
            kind=self._client,
            attributes=attributes,
        )

    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        span: Span | None = attempt.span
        if span is None or not span.is_recording():
            return
        attributes: dict[str, Any] = {}
        if attempt.status is not None:
            attributes["http.response.status_code"] = attempt.status
        if attempt.result != "ok":
            attributes["error.type"] = attempt.result
            # a hedge that lost was cancelled on purpose: not an error of the upstream
            if attempt.result not in ("hedge_lost", "cancelled"):
                span.set_status(self._status(self._code_error, attempt.detail or attempt.result))
        if record.served is attempt:
            self._served(record, attributes)
        span.set_attributes(attributes)  # one call: the SDK locks and validates per call
        span.end()

    def request_finished(self, record: RequestRecord) -> None:
        served = record.served
        for attempt in record.attempts:  # attempts the dispatcher never finished (cancelled)
            span = attempt.span
            if span is not None and span.is_recording():
                if attempt is served:
                    attributes: dict[str, Any] = {}
                    self._served(record, attributes)
                    span.set_attributes(attributes)
                elif attempt.result not in ("ok", "pending"):
                    span.set_attribute("error.type", attempt.result)
                span.end()
        span = record.span
        if span is None or not span.is_recording():
            return
        attributes = {
            "modelroute.outcome": record.outcome,
            "modelroute.attempts": len(record.attempts),
            "modelroute.fallback": record.fallback,
        }
        if record.status:
            attributes["http.response.status_code"] = record.status
        if record.route is not None:
            attributes["modelroute.route"] = record.route
        if record.category is not None:
            attributes["modelroute.category"] = record.category
        if record.classify_reason is not None:
            attributes["modelroute.classify.reason"] = record.classify_reason
        if served is not None:
            attributes["gen_ai.provider.name"] = served.provider
            attributes["modelroute.region"] = served.region
            if record.response_model:
                attributes["gen_ai.response.model"] = record.response_model
        if record.cost_usd is not None:
            attributes["modelroute.cost_usd"] = record.cost_usd
        if record.budget_action is not None:
            attributes["modelroute.budget.action"] = record.budget_action
        if record.outcome != "ok":
            attributes["error.type"] = record.error_code or record.outcome
        span.set_attributes(attributes)
        # the app hanging up, or a request refused as the client's fault, is not our error
        if record.outcome != "ok" and (
            record.outcome in ("error", "stream_error") or record.status >= 500
        ):
            span.set_status(self._status(self._code_error, record.error_code or record.outcome))
        span.end()

    def shadow_finished(self, record: ShadowRecord) -> None:
        pass  # shadows are measured in metrics; they are not part of the app's trace

    # -- helpers ----------------------------------------------------------------------

    def _served(self, record: RequestRecord, attributes: dict[str, Any]) -> None:
        """Usage, cost and response model (facts of the attempt that answered) into ``attributes``."""
        if record.response_model:
            attributes["gen_ai.response.model"] = record.response_model
        if record.input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = record.input_tokens
        if record.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = record.output_tokens
        if record.usage_estimated:
            attributes["modelroute.usage.estimated"] = True
        if record.finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = list(record.finish_reasons)
        if record.cost_usd is not None:
            attributes["modelroute.cost_usd"] = record.cost_usd
        if record.record_content:  # opted in per route; only what the dispatcher kept
            prompt, answer = record.extra.get("prompt"), record.extra.get("completion")
            if prompt is not None:
                attributes["gen_ai.input.messages"] = _content(input_messages(prompt))
            if answer is not None:
                attributes["gen_ai.output.messages"] = _content(
                    output_messages(answer, record.finish_reasons)
                )

    def shutdown(self) -> None:
        """Flush what is queued and stop exporting (blocking: call it off the event loop)."""
        try:
            self.provider.force_flush()
        finally:
            self.provider.shutdown()


def _content(messages: list[dict[str, Any]]) -> str:
    """GenAI messages as the span attribute's JSON, capped (a 32 MiB prompt is no attribute).

    Over the cap, the text parts are shortened (each keeps its start and says how much
    was left out) rather than the JSON cut, so trace backends can still parse it.
    """
    text = orjson.dumps(messages, default=str).decode()
    if len(text) <= CONTENT_LIMIT:
        return text
    parts = [p for m in messages for p in m.get("parts", ()) if isinstance(p.get("content"), str)]
    share = max(64, CONTENT_LIMIT // (2 * max(1, len(parts))))
    for part in parts:
        content = part["content"]
        if len(content) > share:
            part["content"] = content[:share] + f"… [{len(content) - share} more characters]"
    text = orjson.dumps(messages, default=str).decode()
    if len(text) > CONTENT_LIMIT:  # too many messages even so: keep the last ones whole
        kept: list[dict[str, Any]] = []
        size = 0
        for message in reversed(messages):
            size += len(orjson.dumps(message, default=str))
            if size > CONTENT_LIMIT - 200:
                break
            kept.insert(0, message)
        dropped = len(messages) - len(kept)
        note = {"type": "text", "content": f"[{dropped} earlier messages not recorded]"}
        text = orjson.dumps([{"role": "system", "parts": [note]}, *kept], default=str).decode()
    return text


@functools.lru_cache(maxsize=256)  # a handful of base URLs, parsed once each
def _server_address(address: str) -> dict[str, Any]:
    """``server.address``/``server.port`` from a host, ``host:port`` or a base URL."""
    if not address:
        return {}
    if "://" in address:
        parts = urlsplit(address)
        out: dict[str, Any] = {"server.address": parts.hostname or address}
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is not None:
            out["server.port"] = port
        return out
    host, sep, port_text = address.rpartition(":")
    if sep and port_text.isdigit() and "]" not in port_text:
        return {"server.address": host.strip("[]"), "server.port": int(port_text)}
    return {"server.address": address}
