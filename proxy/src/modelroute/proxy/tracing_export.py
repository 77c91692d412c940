"""The OTLP/HTTP span exporter with the lean encoder (``otlp_encode``) in place of the SDK's.

Everything else is the SDK's ``OTLPSpanExporter``: it reads the user's
``OTEL_EXPORTER_OTLP_[TRACES_]*`` variables (endpoint, headers, timeout,
compression, certificates, credential provider), and its HTTP client sends,
retries and backs off.  Only the bytes are made differently: the same
``ExportTraceServiceRequest``, written without building a protobuf object per
attribute.

The hand-off to the client is the exporter's ``_client.export(bytes)`` (1.45):
an internal of the SDK's exporter.  If a future exporter lacks it, or the SDK's
own exporter metrics are switched on (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``,
which only the SDK's ``export`` records), this exporter falls back to the SDK's
``export`` – slower, never wrong; ``lean`` says which path is used and a test
pins it.  Imported only when the first batch is exported (``tracing.DeferredOTLPExporter``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from .otlp_encode import Encoder

log = logging.getLogger("modelroute.tracing")


class LeanOTLPSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` whose batches are encoded by :class:`~.otlp_encode.Encoder`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = Encoder()
        client = getattr(self, "_client", None)
        send = getattr(client, "export", None)
        internal_metrics = (
            os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true"
        )
        self._send = send if callable(send) and not internal_metrics else None
        self._limit = int(getattr(self, "_max_request_size", 0) or 0)

    @property
    def lean(self) -> bool:
        """Are batches encoded here (True) or by the SDK's encoder (the fallback)?"""
        return self._send is not None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        send = self._send
        if send is None or getattr(self, "_shutdown", False):
            return super().export(spans)
        try:
            data = self._encoder.request(spans)
        except Exception as exc:  # a value OTLP can't carry: the batch fails, as in the SDK
            log.error("Failed to encode span batch: %s", exc)
            return SpanExportResult.FAILURE
        if 0 < self._limit < len(data):
            log.warning(
                "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                len(data),
                self._limit,
            )
            return SpanExportResult.FAILURE
        result = send(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
