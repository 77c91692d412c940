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

With every span exported, tracing was the dearest part of the sidecar, so it is
built to cost little: spans are made once, when the request has ended, from its
record (:class:`TracingObserver`), and batches are encoded to OTLP protobuf by
:mod:`.otlp_encode` rather than by the SDK's object-per-attribute encoder
(:mod:`.tracing_export`).  Because the decision can wait for the end,
``MODELROUTE_TRACES_TAIL_RATIO`` turns on tail decisions (:mod:`.tail_sampling`):
every failover, hedge, error, budget or latency-budget hit kept, and a ratio of
the rest.  docs/performance.md has the figures.

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
from .tail_sampling import TailSampler, tail_ratio_from_env

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

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
    tail_ratio = tail_ratio_from_env(env)  # a malformed ratio stops the start, saying why
    provider = TracerProvider(resource=Resource.create(attributes))
    processors: list[SpanProcessor] = []
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
        processor = BatchSpanProcessor(exporter)
        provider.add_span_processor(processor)  # so provider.force_flush/shutdown reach it
        processors.append(processor)
    if not processors:
        provider.shutdown()
        return None
    tail = None
    if tail_ratio is not None:
        tail = TailSampler(tail_ratio)
        if env.get("OTEL_TRACES_SAMPLER"):
            log.warning(
                "%s is set: the sidecar decides at each request's end, OTEL_TRACES_SAMPLER=%s "
                "is not used",
                "MODELROUTE_TRACES_TAIL_RATIO",
                env["OTEL_TRACES_SAMPLER"],
            )
    log.info(
        "tracing on: exporting spans via %s%s",
        ", ".join(exporters),
        f" (tail decisions: every failover, hedge, error, budget or latency-budget hit and "
        f"{tail_ratio:.2%} of the rest)"
        if tail_ratio is not None
        else "",
    )
    return TracingObserver(provider, processors, tail)


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
    from .tracing_export import LeanOTLPSpanExporter

    return LeanOTLPSpanExporter()


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
    """The :class:`~.events.Observer` that turns a finished request's record into its spans.

    Nothing is built while the request runs: ``request_started`` keeps the
    propagation headers the request carried, ``attempt_finished`` marks the
    attempt finished, and ``request_finished`` builds the SERVER span and one
    CLIENT span per attempt from the record, with the times the record holds
    (no clock read, no span object kept open, no attribute set one call at a
    time).  The spans and their attributes are the same as a live span would
    have had; what this saves is the SDK's per-span bookkeeping (a lock per span,
    every attribute validated on every ``set_attributes``), which with every span
    exported cost more than the request's own routing.

    The SDK's contract holds on both paths: the parent context comes from the
    configured propagators (``OTEL_PROPAGATORS``), trace and span ids from the
    provider's id generator, the decision from the provider's sampler
    (``OTEL_TRACES_SAMPLER``, asked once per span as the SDK does), the
    resource from the provider (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``
    and the resource detectors), span limits from ``OTEL_SPAN_*``/``OTEL_ATTRIBUTE_*``.

    * With ``processors`` (what :func:`tracing_from_env` passes: the batch span
      processors it made), finished spans are handed to them as ``ReadableSpan``
      directly.
    * Without (a provider built elsewhere, whose processors this can't see), each
      span goes through the provider's tracer, started and ended with the record's
      times: every processor of that provider sees it, ``on_start`` included.

    ``tail`` (``MODELROUTE_TRACES_TAIL_RATIO``) replaces the head sampler with a
    decision taken at the end (:mod:`.tail_sampling`).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        processors: Sequence[SpanProcessor] | None = None,
        tail: TailSampler | None = None,
    ) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.attributes import BoundedAttributes
        from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
        from opentelemetry.sdk.trace.sampling import Decision
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        if tail is not None and processors is None:
            raise ValueError("tail decisions need the span processors to hand kept spans to")
        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("modelroute.proxy")
        self.processors = tuple(processors) if processors is not None else None
        self.tail = tail
        self._extract = propagate.extract
        # the header names the configured propagators read (OTEL_PROPAGATORS): a request
        # carrying none of them starts a new trace without running the propagators
        self._carrier_fields = tuple(propagate.get_global_textmap().fields)
        self._get_span = trace.get_current_span
        self._in_context = trace.set_span_in_context
        self._non_recording = NonRecordingSpan
        self._span_context = SpanContext
        self._readable = ReadableSpan
        self._scope = InstrumentationScope("modelroute.proxy")
        self._server = SpanKind.SERVER
        self._client = SpanKind.CLIENT
        self._unset = Status(StatusCode.UNSET)
        self._status = Status
        self._code_error = StatusCode.ERROR
        self._drop, self._keep = Decision.DROP, Decision.RECORD_AND_SAMPLE
        # the samplers OTEL_TRACES_SAMPLER names decide a child of a local sampled span as
        # its parent was decided (parent-based: always on; ratio: the same trace id), with
        # the parent's trace state: for them, the children are not asked again
        from opentelemetry.sdk.trace import sampling

        sampler = tracer_provider.sampler
        self._children_follow = sampler in (
            sampling.ALWAYS_ON,
            sampling.ALWAYS_OFF,
            sampling.DEFAULT_ON,
            sampling.DEFAULT_OFF,
        ) or type(sampler) in (sampling.TraceIdRatioBased, sampling.ParentBasedTraceIdRatio)
        self._sampled = TraceFlags(TraceFlags.SAMPLED)
        self._not_sampled = TraceFlags(TraceFlags.DEFAULT)
        self._flags = TraceFlags
        self._random_flag = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
        ids = getattr(tracer_provider, "id_generator", None)
        if ids is None:
            from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

            ids = RandomIdGenerator()
        self._ids = ids
        is_random = getattr(ids, "is_trace_id_random", None)
        self._random_ids = bool(is_random()) if callable(is_random) else False
        limits = SpanLimits()  # the OTEL_SPAN_* / OTEL_ATTRIBUTE_* variables, as the SDK reads them
        count, length = limits.max_span_attributes, limits.max_span_attribute_length
        # our spans carry at most ~25 attributes of bounded size: only a stricter user limit
        # needs the SDK's bounded (validating, dearer) attribute mapping
        self._bounded: Callable[[dict[str, Any]], Any] | None = None
        if length is not None or (count is not None and count < 32):
            self._bounded = lambda attrs: BoundedAttributes(
                count, attrs, immutable=False, max_value_len=length
            )

    # -- Observer protocol ------------------------------------------------------------

    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        for name in self._carrier_fields:
            if name in headers:
                # what the propagators read (W3C traceparent/tracestate, OTEL_PROPAGATORS)
                record.span = {k: headers[k] for k in self._carrier_fields if k in headers}
                return

    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        pass  # its start is attempt.started; the span is built when the request ends

    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        attempt.span = True  # finished by the dispatcher (status code, verdict): see _attempt

    def request_finished(self, record: RequestRecord) -> None:
        carrier = record.span
        record.span = None
        parent = self._extract(carrier) if carrier else None
        if self.processors is None:
            self._through_tracer(record, parent)
            return
        parent_sc = self._get_span(parent).get_span_context() if parent is not None else None
        if parent_sc is not None and not parent_sc.is_valid:
            parent_sc = None
        trace_id = parent_sc.trace_id if parent_sc is not None else self._ids.generate_trace_id()
        name = f"{record.operation} {record.requested_model}"
        start_attrs = self._server_start(record)
        keep_reason: str | None = None
        if self.tail is not None:
            sampled_parent = parent_sc is not None and parent_sc.trace_flags.sampled
            keep_reason = self.tail.decide(record, trace_id, sampled_parent)
            if keep_reason is None:
                return
            attributes: dict[str, Any] = dict(start_attrs)
            attributes["modelroute.trace.kept"] = keep_reason
            flags = self._sampled
            state = parent_sc.trace_state if parent_sc is not None else None
        else:
            result = self.provider.sampler.should_sample(
                parent, trace_id, name, self._server, start_attrs, None
            )
            if result.decision is self._drop:
                return
            attributes = dict(result.attributes) if result.attributes else {}
            flags = self._sampled if result.decision is self._keep else self._not_sampled
            state = result.trace_state
        if parent_sc is None:
            random_id = self._random_ids
        else:
            random_id = bool(getattr(parent_sc.trace_flags, "random_trace_id", False))
        if random_id and self._random_flag:
            flags = self._flags(flags | self._random_flag)
        server_sc = self._span_context(trace_id, self._ids.generate_span_id(), False, flags, state)
        start_ns = int(record.wall_started * 1e9)
        end_ns = start_ns + int(record.duration * 1e9)
        attributes.update(self._server_end(record))
        server = self._span(
            name, server_sc, parent_sc, self._server, attributes, self._server_status(record),
            start_ns, end_ns,
        )  # fmt: skip
        spans = [server]
        server_ctx = (
            None
            if self.tail is not None or self._children_follow
            else self._in_context(self._non_recording(server_sc))
        )
        for attempt in record.attempts:
            a_name = f"{record.operation} {attempt.upstream_model}"
            a_start = self._attempt_start(record, attempt)
            if server_ctx is None:  # decided as the SERVER span was (tail, or a standard sampler)
                a_attrs: dict[str, Any] = a_start
                a_flags, a_state = flags, state
            else:
                result = self.provider.sampler.should_sample(
                    server_ctx, trace_id, a_name, self._client, a_start, None
                )
                if result.decision is self._drop:
                    continue
                a_attrs = dict(result.attributes) if result.attributes else {}
                a_flags = self._sampled if result.decision is self._keep else self._not_sampled
                if random_id and self._random_flag:
                    a_flags = self._flags(a_flags | self._random_flag)
                a_state = result.trace_state
            status = self._attempt_end(record, attempt, a_attrs)
            a_start_ns = start_ns + int((attempt.started - record.started) * 1e9)
            a_end_ns = a_start_ns + int(attempt.duration * 1e9) if attempt.span is True else end_ns
            a_sc = self._span_context(
                trace_id, self._ids.generate_span_id(), False, a_flags, a_state
            )
            spans.append(
                self._span(
                    a_name, a_sc, server_sc, self._client, a_attrs, status, a_start_ns, a_end_ns
                )
            )
        for processor in self.processors:
            for span in spans:
                processor.on_end(span)

    def shadow_finished(self, record: ShadowRecord) -> None:
        pass  # shadows are measured in metrics; they are not part of the app's trace

    # -- building -----------------------------------------------------------------------

    def _span(
        self,
        name: str,
        context: Any,
        parent: Any,
        kind: Any,
        attributes: dict[str, Any],
        status: Any,
        start_ns: int,
        end_ns: int,
    ) -> ReadableSpan:
        bounded = self._bounded
        return self._readable(
            name=name,
            context=context,
            parent=parent,
            resource=self.provider.resource,
            attributes=bounded(attributes) if bounded is not None else attributes,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=self._scope,
        )

    def _through_tracer(self, record: RequestRecord, parent: Any) -> None:
        """The same spans through ``provider``'s tracer, for a provider whose processors we don't hold."""
        start_ns = int(record.wall_started * 1e9)
        end_ns = start_ns + int(record.duration * 1e9)
        server = self.tracer.start_span(
            f"{record.operation} {record.requested_model}",
            context=parent,
            kind=self._server,
            attributes=self._server_start(record),
            start_time=start_ns,
        )
        if not server.is_recording():
            # sampled out: every standard sampler decides the same for its children (same
            # trace id, or follows the parent), so build nothing more
            return
        context = self._in_context(server)
        for attempt in record.attempts:
            a_start_ns = start_ns + int((attempt.started - record.started) * 1e9)
            span = self.tracer.start_span(
                f"{record.operation} {attempt.upstream_model}",
                context=context,
                kind=self._client,
                attributes=self._attempt_start(record, attempt),
                start_time=a_start_ns,
            )
            if span.is_recording():
                attributes: dict[str, Any] = {}
                status = self._attempt_end(record, attempt, attributes)
                span.set_attributes(attributes)
                if status is not self._unset:
                    span.set_status(status)
                done = attempt.span is True
                span.end(end_time=a_start_ns + int(attempt.duration * 1e9) if done else end_ns)
        server.set_attributes(self._server_end(record))
        status = self._server_status(record)
        if status is not self._unset:
            server.set_status(status)
        server.end(end_time=end_ns)

    @staticmethod
    def _server_start(record: RequestRecord) -> dict[str, Any]:
        """What the SERVER span knows when the request starts (and the sampler is shown)."""
        return {
            "gen_ai.operation.name": record.operation,
            "gen_ai.request.model": record.requested_model,
            "http.request.method": "POST",
            "modelroute.endpoint": record.endpoint,
            "modelroute.stream": record.stream,
        }

    def _server_end(self, record: RequestRecord) -> dict[str, Any]:
        served = record.served
        attributes: dict[str, Any] = {
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
        return attributes

    def _server_status(self, record: RequestRecord) -> Any:
        # the app hanging up, or a request refused as the client's fault, is not our error
        if record.outcome != "ok" and (
            record.outcome in ("error", "stream_error") or record.status >= 500
        ):
            return self._status(self._code_error, record.error_code or record.outcome)
        return self._unset

    @staticmethod
    def _attempt_start(record: RequestRecord, attempt: AttemptRecord) -> dict[str, Any]:
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
        return attributes

    def _attempt_end(
        self, record: RequestRecord, attempt: AttemptRecord, attributes: dict[str, Any]
    ) -> Any:
        """The attempt's outcome into ``attributes``; returns its span status.

        An attempt the dispatcher finished has its status code and verdict; one it never
        finished (cancelled with the request) ends with the request, marked only by its
        result.  Usage, cost and the response model go on the attempt that served.
        """
        status = self._unset
        if attempt.span is True:
            if attempt.status is not None:
                attributes["http.response.status_code"] = attempt.status
            if attempt.result != "ok":
                attributes["error.type"] = attempt.result
                # a hedge that lost was cancelled on purpose: not an error of the upstream
                if attempt.result not in ("hedge_lost", "cancelled"):
                    status = self._status(self._code_error, attempt.detail or attempt.result)
        elif attempt is not record.served and attempt.result not in ("ok", "pending"):
            attributes["error.type"] = attempt.result
        if record.served is attempt:
            self._served(record, attributes)
        return status

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
            attributes["gen_ai.response.finish_reasons"] = tuple(record.finish_reasons)
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
