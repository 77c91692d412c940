"""Spans from a finished request's record, under the OpenTelemetry SDK's contract.

:class:`TracingObserver` is the :class:`~.events.Observer` that builds them;
what each span says is :mod:`.tracing_attributes`, how tracing is switched on
and exported :mod:`.tracing`.  OpenTelemetry is imported only when an
observer is made, so importing this module costs nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .events import AttemptRecord, RequestRecord, ShadowRecord, idle_hook
from .tail_sampling import TailSampler
from .tracing_attributes import attempt_end, attempt_start, server_end, server_error, server_start

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider


# ReadableSpan.__init__'s parameters, in the order request_finished passes them
_READABLE_SPAN_PARAMETERS = (
    "name", "context", "parent", "resource", "attributes", "events", "links", "kind",
    "instrumentation_info", "status", "start_time", "end_time", "instrumentation_scope",
)  # fmt: skip


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
            TraceState,
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
        # ReadableSpan's arguments are passed by position: a keyword call of its 13
        # parameters costs 2.5x as much (~0.3 µs a span).  Should an SDK change them, the
        # same arguments go by name (those it still has)
        parameters = inspect.signature(ReadableSpan).parameters
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if tuple(parameters) == _READABLE_SPAN_PARAMETERS and all(
            p.kind in positional for p in parameters.values()
        ):
            self._readable: Callable[..., ReadableSpan] = ReadableSpan
        else:
            any_name = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
            names = {n for n in _READABLE_SPAN_PARAMETERS if any_name or n in parameters}

            def by_name(*args: Any) -> ReadableSpan:
                given = zip(_READABLE_SPAN_PARAMETERS, args, strict=True)
                return ReadableSpan(**{k: v for k, v in given if k in names})

            self._readable = by_name
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
        # the flags with the random-trace-id bit, one object per value: the same flags,
        # without a new TraceFlags (an object the garbage collector tracks) per span
        self._randomised = {
            int(f): TraceFlags(f | self._random_flag) for f in (self._sampled, self._not_sampled)
        }
        ids = getattr(tracer_provider, "id_generator", None)
        if ids is None:
            from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

            ids = RandomIdGenerator()
        self._ids = ids
        # bound once, as the SDK's tracer holds its provider's generator, sampler, resource
        self._trace_id = ids.generate_trace_id
        self._span_id = ids.generate_span_id
        self._should_sample = tracer_provider.sampler.should_sample
        self._resource = tracer_provider.resource
        self._no_state = TraceState()
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

    @idle_hook
    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        pass  # its start is attempt.started; the span is built when the request ends

    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        attempt.span = True  # finished by the dispatcher (status code, verdict): see _attempt

    def request_finished(self, record: RequestRecord) -> None:
        carrier = record.span
        record.span = None
        parent = self._extract(carrier) if carrier else None
        processors = self.processors
        if processors is None:
            self._through_tracer(record, parent)
            return
        parent_sc = self._get_span(parent).get_span_context() if parent is not None else None
        if parent_sc is not None and not parent_sc.is_valid:
            parent_sc = None
        trace_id = parent_sc.trace_id if parent_sc is not None else self._trace_id()
        name = f"{record.operation} {record.requested_model}"
        attributes = server_start(record)
        keep_reason: str | None = None
        if self.tail is not None:
            sampled_parent = parent_sc is not None and parent_sc.trace_flags.sampled
            keep_reason = self.tail.decide(record, trace_id, sampled_parent)
            if keep_reason is None:
                return
            attributes["modelroute.trace.kept"] = keep_reason
            flags = self._sampled
            state = parent_sc.trace_state if parent_sc is not None else None
        else:
            result = self._should_sample(parent, trace_id, name, self._server, attributes, None)
            if result.decision is self._drop:
                return
            if not self._children_follow:
                # a sampler of the user's may add or change attributes: the span has its
                # (as the SDK's tracer copies them)
                attributes = dict(result.attributes) if result.attributes else {}
            # else a standard sampler: its result's attributes are the very dict it was
            # shown (a read-only view of it), which the span can keep without a copy
            flags = self._sampled if result.decision is self._keep else self._not_sampled
            state = result.trace_state
        if state is None:
            state = self._no_state  # what SpanContext makes of None, made once
        if parent_sc is None:
            random_id = self._random_ids
        else:
            random_id = bool(getattr(parent_sc.trace_flags, "random_trace_id", False))
        if random_id and self._random_flag:
            flags = self._randomised.get(flags) or self._flags(flags | self._random_flag)
        span_context, span_id = self._span_context, self._span_id
        server_sc = span_context(trace_id, span_id(), False, flags, state)
        start_ns = int(record.wall_started * 1e9)
        end_ns = start_ns + int(record.duration * 1e9)
        server_end(record, attributes)
        error = server_error(record)
        bounded, readable = self._bounded, self._readable
        resource, scope = self._resource, self._scope
        spans = [
            readable(
                name,
                server_sc,
                parent_sc,
                resource,
                bounded(attributes) if bounded is not None else attributes,
                (),  # events
                (),  # links
                self._server,
                None,  # instrumentation_info (deprecated)
                self._status_for(error),
                start_ns,
                end_ns,
                scope,
            )
        ]
        server_ctx = (
            None
            if self.tail is not None or self._children_follow
            else self._in_context(self._non_recording(server_sc))
        )
        started = record.started
        for attempt in record.attempts:
            a_name = f"{record.operation} {attempt.upstream_model}"
            a_attrs = attempt_start(record, attempt)
            if server_ctx is None:  # decided as the SERVER span was (tail, or a standard sampler)
                a_flags, a_state = flags, state
            else:
                result = self._should_sample(
                    server_ctx, trace_id, a_name, self._client, a_attrs, None
                )
                if result.decision is self._drop:
                    continue
                a_attrs = dict(result.attributes) if result.attributes else {}
                a_flags = self._sampled if result.decision is self._keep else self._not_sampled
                if random_id and self._random_flag:
                    a_flags = self._randomised.get(a_flags) or self._flags(
                        a_flags | self._random_flag
                    )
                a_state = self._no_state if result.trace_state is None else result.trace_state
            error = attempt_end(record, attempt, a_attrs)
            a_start_ns = start_ns + int((attempt.started - started) * 1e9)
            spans.append(
                readable(
                    a_name,
                    span_context(trace_id, span_id(), False, a_flags, a_state),
                    server_sc,
                    resource,
                    bounded(a_attrs) if bounded is not None else a_attrs,
                    (),
                    (),
                    self._client,
                    None,
                    self._status_for(error),
                    a_start_ns,
                    a_start_ns + int(attempt.duration * 1e9) if attempt.span is True else end_ns,
                    scope,
                )
            )
        for processor in processors:
            on_end = processor.on_end
            for span in spans:
                on_end(span)

    @idle_hook
    def shadow_finished(self, record: ShadowRecord) -> None:
        pass  # shadows are measured in metrics; they are not part of the app's trace

    # -- building -----------------------------------------------------------------------

    def _through_tracer(self, record: RequestRecord, parent: Any) -> None:
        """The same spans through ``provider``'s tracer, for a provider whose processors we don't hold."""
        start_ns = int(record.wall_started * 1e9)
        end_ns = start_ns + int(record.duration * 1e9)
        server = self.tracer.start_span(
            f"{record.operation} {record.requested_model}",
            context=parent,
            kind=self._server,
            attributes=server_start(record),
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
                attributes=attempt_start(record, attempt),
                start_time=a_start_ns,
            )
            if span.is_recording():
                attributes: dict[str, Any] = {}
                status = self._status_for(attempt_end(record, attempt, attributes))
                span.set_attributes(attributes)
                if status is not self._unset:
                    span.set_status(status)
                done = attempt.span is True
                span.end(end_time=a_start_ns + int(attempt.duration * 1e9) if done else end_ns)
        server.set_attributes(server_end(record))
        status = self._status_for(server_error(record))
        if status is not self._unset:
            server.set_status(status)
        server.end(end_time=end_ns)

    def _status_for(self, error: str | None) -> Any:
        """A span's status: UNSET, or ERROR with what went wrong (``server_error``/``attempt_end``)."""
        return self._unset if error is None else self._status(self._code_error, error)

    def shutdown(self) -> None:
        """Flush what is queued and stop exporting (blocking: call it off the event loop)."""
        try:
            self.provider.force_flush()
        finally:
            self.provider.shutdown()
