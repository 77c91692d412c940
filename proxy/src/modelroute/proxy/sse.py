"""Watch an OpenAI server-sent-event stream go by without holding it up.

The proxy forwards each upstream chunk as soon as it arrives.  On the side it
needs a few facts from the stream: the served model (first event), the usage
(last event when ``stream_options.include_usage`` was asked for), the finish
reasons, whether ``[DONE]`` arrived and whether the upstream sent an error
event.  Only events that can carry those facts are JSON-decoded; the rest is
a substring check.

One case needs holding: when the *proxy* asked the upstream for usage and
the client didn't, the usage-only event must not reach the client.  Then
complete events are forwarded and at most one partial event (a few hundred
bytes, usually completed by the same read) waits for its end.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .usage import usage_details, usage_tokens

_MAX_CARRY = 1 << 20  # an "event" larger than 1 MiB without a separator is not SSE we understand

# An event ends at a blank line; SSE lines end in CRLF, LF or a lone CR (servers built on
# sse-starlette send CRLF).  A CR directly followed by LF is one line end, never two.
_EOL = rb"(?:\r\n|\r(?!\n)|\n)"
_BOUNDARY = re.compile(_EOL + _EOL)


def event_ends(data: bytes) -> list[int]:
    """Offsets just past each complete event (its blank line included) in ``data``."""
    if b"\r" not in data:  # the usual LF-only stream: plain substring search
        ends = []
        at = data.find(b"\n\n")
        while at >= 0:
            ends.append(at + 2)
            at = data.find(b"\n\n", at + 2)
        return ends
    # a trailing CR may be the first half of a CRLF still in flight: judge it with the next chunk
    limit = len(data) - 1 if data.endswith(b"\r") else len(data)
    return [m.end() for m in _BOUNDARY.finditer(data, 0, limit)]


_MAX_CONTENT = 64 * 1024  # characters of streamed text kept for a recordContent span


class StreamFacts:
    __slots__ = (
        "cached_input_tokens",
        "content",
        "content_chars",
        "data_events",
        "error",
        "finish_reasons",
        "input_tokens",
        "model",
        "output_tokens",
        "reasoning_tokens",
        "saw_done",
        "saw_event",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_input_tokens: int | None = None  # parts of the two above, where itemised
        self.reasoning_tokens: int | None = None
        self.finish_reasons: list[str] = []
        self.saw_done = False
        self.saw_event = False
        self.data_events = 0  # every data event but [DONE]: about one token each (estimates)
        self.content: list[str] = []  # streamed text, only when the route records content
        self.content_chars = 0
        self.error: dict[str, Any] | None = None

    def add_content(self, text: str) -> None:
        room = _MAX_CONTENT - self.content_chars
        if room > 0:
            self.content.append(text[:room])
        self.content_chars += len(text)

    @property
    def complete(self) -> bool:
        """Did the stream end properly ([DONE], or at least a finish reason)?"""
        return self.saw_done or bool(self.finish_reasons)


class SSEScanner:
    def __init__(self, strip_usage_event: bool, collect_content: bool = False) -> None:
        self.strip_usage_event = strip_usage_event
        # a route with recordContent: decode every event for its text (off the usual path)
        self.collect_content = collect_content
        self.facts = StreamFacts()
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        """Take an upstream chunk; return the bytes to forward to the client now.

        Only complete events go out; an event still in flight (usually completed by
        the same read) waits for its end.  Forwarding half an event would leave the
        client mid-line if the stream then breaks, and the closing error event would
        be glued onto that line where no SDK can read it.
        """
        data = self._carry + chunk if self._carry else chunk
        ends = event_ends(data)
        if not ends:
            self._carry = data
            if len(data) > _MAX_CARRY:
                self._carry = b""  # nothing of it is forwarded, not even by flush()
                raise ValueError("upstream stream has an event over 1 MiB; not OpenAI SSE")
            return b""
        self._carry = data[ends[-1] :]
        starts = [0, *ends[:-1]]
        if not self.strip_usage_event:
            for start, end in zip(starts, ends, strict=True):
                self._scan_event(data[start:end])
            return data[: ends[-1]]
        # forward every complete event byte for byte, except the usage-only one
        kept = [
            data[start:end]
            for start, end in zip(starts, ends, strict=True)
            if not self._scan_event(data[start:end])
        ]
        return b"".join(kept)

    def flush(self) -> bytes:
        """The end of the stream: the last event if it came without its blank line.

        The caller forwards it only when the stream ended properly; after a failure an
        unfinished event is dropped, so the error event starts on a line of its own.
        """
        rest, self._carry = self._carry, b""
        if not rest.strip():
            return rest
        stripped = self._scan_event(rest)
        return b"" if self.strip_usage_event and stripped else rest

    def _scan_event(self, event: bytes) -> bool:
        """Record facts from one event; True if it is the usage-only event to strip."""
        facts = self.facts
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                facts.saw_done = True
                continue
            first = not facts.saw_event
            facts.saw_event = True
            facts.data_events += 1
            interesting = (
                first
                or b'"usage":{' in payload
                or b'"usage": {' in payload
                or b'"finish_reason":"' in payload
                or b'"finish_reason": "' in payload
                or b'"error"' in payload
            )
            if not interesting and not self.collect_content:
                continue
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(doc, dict):
                continue
            if first and isinstance(doc.get("model"), str):
                facts.model = doc["model"]
            if isinstance(doc.get("error"), dict):
                facts.error = doc["error"]
                facts.data_events -= 1  # an error event carries no generated tokens
            for choice in doc.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                if isinstance(choice.get("finish_reason"), str):
                    facts.finish_reasons.append(choice["finish_reason"])
                if self.collect_content:
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                    if isinstance(text, str) and text:
                        facts.add_content(text)
            usage = doc.get("usage")
            if isinstance(usage, dict):
                facts.input_tokens, facts.output_tokens = usage_tokens(usage)
                facts.cached_input_tokens, facts.reasoning_tokens = usage_details(usage)
                if not doc.get("choices"):
                    return True
        return False


def error_event(message: str, code: str, route: str | None) -> bytes:
    """An SSE error event; the OpenAI SDKs raise it as an APIError instead of ending silently."""
    error: dict[str, Any] = {"message": message, "type": "server_error", "code": code}
    if route:
        error["route"] = route
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"
