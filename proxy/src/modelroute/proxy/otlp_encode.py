"""OTLP trace protobuf, written directly: the bytes ``encode_spans(...).SerializeToString()`` gives.

Why not the SDK's encoder: it builds a protobuf object per span, per attribute
and per value, then serialises them; at two spans per request that was the
dearest thing in the sidecar (~60 µs of CPU per span on the bench machine,
more than the request's own routing).  The wire format of the few OTLP messages
a span batch uses is small and frozen (``opentelemetry/proto/trace/v1``), so
this module writes it directly, and remembers the encoding of each attribute
(key, value) it has seen: a sidecar's spans repeat the same routes, models,
providers and regions, so most of a span is a few cached byte strings joined.

It encodes any SDK ``ReadableSpan`` (events, links, trace state, status, dropped
counts, array values), not only the sidecar's; tests/observability/test_otlp_encode.py
checks every field against the official encoder by decoding both.  A value of a
type OTLP can't carry raises ``TypeError``, which the exporter reports as a failed
batch (as the SDK's encoder does).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack

# SpanFlags (trace.proto): the span says whether its parent was remote
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_CACHE_LIMIT = 8192  # encoded attributes remembered; cleared when full (values that vary)


def varint(n: int) -> bytes:
    """Unsigned LEB128; negative int64 values as their 64-bit two's complement (10 bytes)."""
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        if n < -(1 << 63):
            raise TypeError(f"integer attribute {n} does not fit in int64")
        n += 1 << 64
    elif n >= 1 << 64:
        raise TypeError(f"integer {n} does not fit in 64 bits")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes([i]) for i in range(0x80)]


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, bytes."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else varint(n)) + payload


def _string(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8", "surrogatepass"))


# tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32)
def _tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


T1, T2, T3, T4, T5, T6, T7 = (_tag(n, 2) for n in range(1, 8))
_ANY_BOOL, _ANY_INT, _ANY_DOUBLE = _tag(2, 0), _tag(3, 0), _tag(4, 1)
_SPAN_KIND, _SPAN_START, _SPAN_END = _tag(6, 0), _tag(7, 1), _tag(8, 1)
_SPAN_ATTR, _SPAN_DROPPED_ATTRS, _SPAN_EVENT = _tag(9, 2), _tag(10, 0), _tag(11, 2)
_SPAN_DROPPED_EVENTS, _SPAN_LINK, _SPAN_DROPPED_LINKS = _tag(12, 0), _tag(13, 2), _tag(14, 0)
_SPAN_STATUS, _SPAN_FLAGS = _tag(15, 2), _tag(16, 5)
_EVENT_TIME, _EVENT_DROPPED = _tag(1, 1), _tag(4, 0)
_LINK_DROPPED, _LINK_FLAGS = _tag(5, 0), _tag(6, 5)
_STATUS_CODE = _tag(3, 0)
_SCOPE_DROPPED = _tag(4, 0)


def any_value(value: Any) -> bytes:
    """An ``AnyValue`` message (the oneof set even when the value is a default: 0, "", False)."""
    if isinstance(value, bool):  # before int: bool is an int
        return _ANY_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _string(T1, value)
    if isinstance(value, int):
        return _ANY_INT + varint(value)
    if isinstance(value, float):
        return _ANY_DOUBLE + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(T7, value)
    if isinstance(value, Mapping):
        return _field(T6, b"".join(_field(T1, key_value(str(k), v)) for k, v in value.items()))
    if isinstance(value, Sequence):
        return _field(T5, b"".join(_field(T1, any_value(v)) for v in value))
    if value is None:
        return b""
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} is not OTLP")


def key_value(key: str, value: Any) -> bytes:
    return _string(T1, key) + _field(T2, any_value(value))


class Encoder:
    """Encodes batches of ``ReadableSpan`` to an ``ExportTraceServiceRequest``, with caches.

    One per exporter; not thread-safe (the batch processor exports from one thread).
    """

    def __init__(self) -> None:
        self._attributes: dict[tuple[bytes, str, type, Any], bytes] = {}
        self._strings: dict[str, bytes] = {}
        self._headers: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self._alive: list[tuple[Any, Any]] = []

    # -- pieces ----------------------------------------------------------------------

    def _attrs(self, tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
        """``tag`` + KeyValue per attribute, from the cache when this (key, value) was seen."""
        if not attributes:
            return []
        cache = self._attributes
        out = []
        for key, value in attributes.items():
            try:
                cache_key = (tag, key, value.__class__, value)  # 1 and True must not meet
                hit = cache.get(cache_key)
            except TypeError:  # an unhashable value (a list): encoded every time
                out.append(_field(tag, key_value(key, value)))
                continue
            if hit is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                hit = cache[cache_key] = _field(tag, key_value(key, value))
            out.append(hit)
        return out

    def _name(self, name: str) -> bytes:
        hit = self._strings.get(name)
        if hit is None:
            if len(self._strings) >= _CACHE_LIMIT:
                self._strings.clear()
            hit = self._strings[name] = _string(T5, name)
        return hit

    def _scope_spans_head(self, resource: Any, scope: Any) -> tuple[bytes, bytes]:
        """(ResourceSpans' resource + schema_url fields, ScopeSpans' scope + schema_url fields)."""
        key = (id(resource), id(scope))
        hit = self._headers.get(key)
        if hit is None:
            res = b"".join(self._attrs(T1, resource.attributes))
            resource_part = _field(T1, res)
            schema = resource.schema_url
            resource_part_tail = _string(T3, schema) if schema else b""
            if scope is None:
                scope_part = _field(T1, b"")
            else:
                body = b""
                if scope.name:
                    body += _string(T1, scope.name)
                if scope.version:
                    body += _string(T2, scope.version)
                body += b"".join(self._attrs(T3, getattr(scope, "attributes", None)))
                scope_part = _field(T1, body)
                if scope.schema_url:
                    scope_part += _string(T3, scope.schema_url)
            hit = (resource_part + resource_part_tail, scope_part)
            if len(self._headers) >= 64:
                self._headers.clear()
                self._alive.clear()
            # the resource and scope objects live as long as the provider: ids are stable
            self._headers[key] = hit
            self._alive.append((resource, scope))  # so no other object can take their ids
        return hit

    def span(self, span: Any) -> bytes:
        """One ``Span`` message (without its tag)."""
        ctx = span.context
        parts = [
            T1 + b"\x10" + ctx.trace_id.to_bytes(16, "big"),
            T2 + b"\x08" + ctx.span_id.to_bytes(8, "big"),
        ]
        state = ctx.trace_state
        if state:
            parts.append(_string(T3, ",".join(f"{k}={v}" for k, v in state.items())))
        parent = span.parent
        flags = _HAS_IS_REMOTE
        if parent is not None:
            parts.append(T4 + b"\x08" + parent.span_id.to_bytes(8, "big"))
            if parent.is_remote:
                flags |= _IS_REMOTE
        parts.append(self._name(span.name))
        kind = span.kind.value + 1  # SpanKind.INTERNAL=0 … CONSUMER=4; OTLP's enum is 1 more
        parts.append(_SPAN_KIND + _SMALL[kind])
        if span.start_time:
            parts.append(_SPAN_START + _FIXED64(span.start_time))
        if span.end_time:
            parts.append(_SPAN_END + _FIXED64(span.end_time))
        parts.extend(self._attrs(_SPAN_ATTR, span.attributes))
        if span.dropped_attributes:
            parts.append(_SPAN_DROPPED_ATTRS + varint(span.dropped_attributes))
        for event in span.events:
            parts.append(_field(_SPAN_EVENT, self._event(event)))
        if span.dropped_events:
            parts.append(_SPAN_DROPPED_EVENTS + varint(span.dropped_events))
        for link in span.links:
            parts.append(_field(_SPAN_LINK, self._link(link)))
        if span.dropped_links:
            parts.append(_SPAN_DROPPED_LINKS + varint(span.dropped_links))
        status = span.status
        if status is not None:
            body = _string(T2, status.description) if status.description else b""
            code = status.status_code.value
            if code:
                body += _STATUS_CODE + _SMALL[code]
            parts.append(_field(_SPAN_STATUS, body))
        parts.append(_SPAN_FLAGS + _FIXED32(flags))
        return b"".join(parts)

    def _event(self, event: Any) -> bytes:
        body = _EVENT_TIME + _FIXED64(event.timestamp) if event.timestamp else b""
        if event.name:
            body += _string(T2, event.name)
        body += b"".join(self._attrs(T3, event.attributes))
        if event.dropped_attributes:
            body += _EVENT_DROPPED + varint(event.dropped_attributes)
        return body

    def _link(self, link: Any) -> bytes:
        ctx = link.context
        body: bytes = T1 + b"\x10" + ctx.trace_id.to_bytes(16, "big")
        body += T2 + b"\x08" + ctx.span_id.to_bytes(8, "big")
        body += b"".join(self._attrs(T4, link.attributes))
        if link.dropped_attributes:
            body += _LINK_DROPPED + varint(link.dropped_attributes)
        flags = _HAS_IS_REMOTE | (_IS_REMOTE if ctx.is_remote else 0)
        return body + _LINK_FLAGS + _FIXED32(flags)

    # -- a batch -----------------------------------------------------------------------

    def request(self, spans: Sequence[Any]) -> bytes:
        """``ExportTraceServiceRequest``: spans grouped by resource, then instrumentation scope."""
        groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            by_scope = groups.get(id(resource))
            if by_scope is None:
                by_scope = groups[id(resource)] = (resource, {})
            entry = by_scope[1].get(id(scope))
            if entry is None:
                entry = by_scope[1][id(scope)] = (scope, [])
            entry[1].append(_field(T2, self.span(span)))
        out = []
        for resource, scopes in groups.values():
            resource_head = b""
            scope_spans = []
            for scope, encoded in scopes.values():
                resource_head, scope_head = self._scope_spans_head(resource, scope)
                scope_spans.append(_field(T2, scope_head + b"".join(encoded)))
            # ResourceSpans: resource (1) and schema_url (3), then scope_spans (2): protobuf
            # fields may come in any order
            out.append(_field(T1, resource_head + b"".join(scope_spans)))
        return b"".join(out)
