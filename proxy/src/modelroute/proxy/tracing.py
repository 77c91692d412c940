"""OpenTelemetry traces following the GenAI semantic conventions, off unless ``OTEL_*`` asks.

One SERVER span per request continues the app's ``traceparent``; under it one
CLIENT span per upstream attempt, so a fallback shows as two attempts side by
side in the trace, the failed one carrying ``error.type``.  The serving
attempt carries usage, cost and the response model.

Tracing costs nothing when it isn't configured: :func:`tracing_from_env`
returns None without importing OpenTelemetry at all (these modules import it
only inside functions that run once tracing is on), so the sidecar's memory
and import time don't grow for users who don't trace.  When it is configured, everything
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

Three modules, one job each: this one switches tracing on and sets up the
SDK and its exporters; :mod:`.tracing_spans` builds the spans under the SDK's
contract (propagation, ids, sampling, processors); :mod:`.tracing_attributes`
names what each span says (the GenAI conventions' attributes).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from .tail_sampling import TailSampler, tail_ratio_from_env
from .tracing_attributes import CONTENT_LIMIT
from .tracing_spans import TracingObserver

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "CONTENT_LIMIT",
    "DeferredOTLPExporter",
    "TracingObserver",
    "tracing_configured",
    "tracing_from_env",
]

log = logging.getLogger("modelroute.tracing")

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
