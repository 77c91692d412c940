"""The OTLP/HTTP span exporter with the lean encoder (``otlp_encode``) in place of the SDK's.

Everything else is the SDK's ``OTLPSpanExporter``: it reads the user's
``OTEL_EXPORTER_OTLP_[TRACES_]*`` variables (endpoint, headers, timeout,
compression, certificates, credential provider), and its HTTP client sends,
retries and backs off.  Only the bytes are made differently: the same
``ExportTraceServiceRequest``, written without building a protobuf object per
attribute.  And the client's ``requests`` session settles what the environment says
(proxies, CA bundle) once rather than rescanning it on every POST
(:func:`session_environment_once`; the session is the client's ``_transport._session``,
another internal, and without one nothing changes).

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


def session_environment_once(session: Any) -> None:
    """Make a ``requests`` session read the environment once per endpoint, not per POST.

    With ``trust_env`` (the default) every request runs ``merge_environment_settings``,
    which scans the whole environment twice for ``*_proxy`` variables: ~0.1 ms per batch
    here, ~0.5 ms (as much as the rest of the POST) with the few hundred variables a
    Kubernetes pod gets for its namespace's services.  Its result depends only on its
    arguments, the session's own settings and the environment, which a running sidecar
    doesn't change (the SDK reads its ``OTEL_*`` variables once too), so it is
    remembered per (arguments, session settings).  The user's ``HTTPS_PROXY``,
    ``NO_PROXY`` and ``REQUESTS_CA_BUNDLE`` still apply, read when the exporter first
    posts.  Anything but a ``requests`` session with requests' own merge is left alone.
    """
    import requests

    standard = requests.Session.merge_environment_settings
    if getattr(type(session), "merge_environment_settings", None) is not standard:
        return  # not a session, or one whose merge is its own
    merge = session.merge_environment_settings
    settled: dict[tuple[Any, ...], dict[str, Any]] = {}

    def merge_once(url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        try:
            key = (
                url, tuple(sorted((proxies or {}).items())), stream, verify, cert,
                session.trust_env, tuple(sorted(session.proxies.items())), session.stream,
                session.verify, session.cert,
            )  # fmt: skip
            hit = settled.get(key)
        except (TypeError, AttributeError):  # unhashable or unsortable settings: as before
            return dict(merge(url, proxies, stream, verify, cert))
        if hit is None:
            if len(settled) >= 16:
                settled.clear()
            hit = settled[key] = dict(merge(url, proxies, stream, verify, cert))
        out = dict(hit)
        if isinstance(out.get("proxies"), dict):
            out["proxies"] = dict(out["proxies"])  # the caller's to change
        return out

    session.merge_environment_settings = merge_once


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
        transport = getattr(client, "_transport", None)
        session_environment_once(getattr(transport, "_session", None))

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
