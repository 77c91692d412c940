"""The Responses API: response ids that say where a response lives, and follow-ups sent back there.

A provider stores a response in the region that created it; ``GET
/v1/responses/{id}``, ``DELETE``, ``…/cancel``, ``…/input_items`` and a new
request's ``previous_response_id`` only work there.  The sidecar fails over
between providers and regions, so the app can't know where that is, and the
upstream id alone doesn't say.  So every response id the app sees is a
*wrapped* id::

    resp_mr1 + base64url( location (8 bytes) | tag (16 bytes) | upstream id )

* **location** is HMAC-SHA256(key, provider, region), cut to 8 bytes: the
  sidecar finds the provider and region by comparing it with the current
  table's endpoints; the id itself names neither (nothing of the sidecar's
  topology or its base URLs leaks into the app's storage or logs);
* **tag** is HMAC-SHA256(key, location, upstream id), cut to 16 bytes: an id
  the app changed – to steer a follow-up to another provider or region, or
  to ask for another upstream response – fails the check and is refused
  with 404 before anything is sent.  The upstream id is readable (it is the
  provider's own id, not a secret) and comes back out unchanged;
* the **key** is ``MODELROUTE_RESPONSE_ID_KEY`` (any string, shared by the
  sidecars that should accept each other's ids, e.g. from a Secret), or a
  random key per sidecar process (shared by its ``--workers``): then ids are
  accepted only until the sidecar restarts.

A follow-up whose holder is unreachable fails with 503
``response_holder_unavailable`` saying so: it is never sent elsewhere, since
no other region has the response.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from . import errors
from .keys import split_target
from .router import Dropped, Plan
from .sse import StreamFacts, event_ends
from .table import CompiledRoute, CompiledTable
from .usage import usage_counts, usage_details

PREFIX = "resp_mr1"
KEY_ENV = "MODELROUTE_RESPONSE_ID_KEY"
_LOC, _TAG = 8, 16
MAX_ID_CHARS = 1024  # an upstream id is ~50 characters; anything this long is not ours


def response_id_key() -> bytes:
    """The key of this sidecar's ids: the environment's, else random for this process."""
    configured = os.environ.get(KEY_ENV, "").strip()
    if configured:
        return hashlib.sha256(b"modelroute response ids\0" + configured.encode()).digest()
    return secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class Location:
    """Where one response lives, and its id there."""

    provider: str
    region: str
    upstream_id: str

    @property
    def shown(self) -> str:
        return f"provider {self.provider!r} in region {self.region!r}"


class ResponseIds:
    """Wraps and unwraps response ids with one key (see the module docstring)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _location(self, provider: str, region: str) -> bytes:
        message = b"loc\0" + provider.encode() + b"\0" + region.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_LOC]

    def _tag(self, location: bytes, upstream: bytes) -> bytes:
        return hmac.new(self._key, b"id\0" + location + upstream, hashlib.sha256).digest()[:_TAG]

    def wrap(self, provider: str, region: str, upstream_id: str) -> str:
        location = self._location(provider, region)
        upstream = upstream_id.encode()
        blob = location + self._tag(location, upstream) + upstream
        return PREFIX + base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")

    def unwrap(self, wrapped: object, table: CompiledTable, field: str = "id") -> Location:
        """The location of an id this sidecar's key made; 404 ``response_not_found`` otherwise."""
        if (
            not isinstance(wrapped, str)
            or not wrapped.startswith(PREFIX)
            or len(wrapped) > MAX_ID_CHARS
        ):
            raise _not_ours(wrapped, field)
        text = wrapped[len(PREFIX) :]
        try:
            blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise _not_ours(wrapped, field) from None
        location, tag, upstream = blob[:_LOC], blob[_LOC : _LOC + _TAG], blob[_LOC + _TAG :]
        if not upstream or not hmac.compare_digest(tag, self._tag(location, upstream)):
            raise _not_ours(wrapped, field)
        where = self._locations(table).get(location)
        if where is None:
            raise errors.ResponseNotFound(
                f"response {_short(wrapped)} was created at a provider endpoint that is no longer "
                "in the route table; it can't be reached from here"
            )
        return Location(where[0], where[1], upstream.decode("utf-8", "replace"))

    def _locations(self, table: CompiledTable) -> dict[bytes, tuple[str, str]]:
        cache_key = f"response_locations:{id(self)}"
        found = table.derived.get(cache_key)
        if found is None:
            found = table.derived[cache_key] = {
                self._location(p.name, e.region): (p.name, e.region)
                for p in table.providers
                for e in p.endpoints
            }
        locations: dict[bytes, tuple[str, str]] = found
        return locations


def _short(wrapped: object) -> str:
    text = str(wrapped)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _not_ours(wrapped: object, field: str) -> errors.ResponseNotFound:
    return errors.ResponseNotFound(
        f"`{field}` {_short(wrapped)} is not a response id this sidecar issued (or it was "
        "altered): use the `id` of a response created through it; ids issued before a "
        f"restart are valid only when {KEY_ENV} is set"
    )


# ---------------------------------------------------------------------------------------
# rewriting what comes back


def wrap_response_object(doc: dict[str, Any], ids: ResponseIds, provider: str, region: str) -> None:
    """Wrap the ids of a response object (or a ``response.deleted`` answer) in place."""
    for key in ("id", "previous_response_id"):
        value = doc.get(key)
        if isinstance(value, str) and value:
            doc[key] = ids.wrap(provider, region, value)


def wrap_document(body: bytes, ids: ResponseIds, provider: str, region: str) -> bytes:
    """A whole (non-streamed) answer with its response ids wrapped; other JSON is left as is."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(doc, dict) or doc.get("object") not in ("response", "response.deleted"):
        return body
    wrap_response_object(doc, ids, provider, region)
    return orjson.dumps(doc)


# event types whose data carries the response object (``"response": {...}``)
_TERMINAL = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}


class ResponsesScanner:
    """Watch a Responses API event stream go by; wrap the response ids it carries.

    The same contract as :class:`~.sse.SSEScanner` (``feed``/``flush``/``facts``):
    complete events go out as they arrive.  Events with a ``response`` object
    (``response.created``, ``…in_progress``, ``…completed`` …, a handful per
    stream) are decoded, their ids wrapped and re-encoded; every other event
    (the deltas) is forwarded byte for byte after a substring check.
    """

    def __init__(
        self, ids: ResponseIds, provider: str, region: str, collect_content: bool = False
    ) -> None:
        self._wrap: Callable[[dict[str, Any]], None] = lambda doc: wrap_response_object(
            doc, ids, provider, region
        )
        self.collect_content = collect_content
        self.facts = StreamFacts()
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk if self._carry else chunk
        ends = event_ends(data)
        if not ends:
            self._carry = data
            if len(data) > 1 << 20:
                self._carry = b""
                raise ValueError("upstream stream has an event over 1 MiB; not OpenAI SSE")
            return b""
        self._carry = data[ends[-1] :]
        starts = [0, *ends[:-1]]
        return b"".join(self._event(data[a:b]) for a, b in zip(starts, ends, strict=True))

    def flush(self) -> bytes:
        rest, self._carry = self._carry, b""
        return self._event(rest) if rest.strip() else rest

    def _event(self, event: bytes) -> bytes:
        facts = self.facts
        lines = event.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            facts.saw_event = True
            facts.data_events += 1
            carries_response = b'"response":' in payload or b'"response" :' in payload
            if (
                not carries_response
                and b'"type":"error"' not in payload
                and b'"error"' not in payload
            ):
                if self.collect_content and b"output_text.delta" in payload:
                    self._collect(payload)
                continue
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(doc, dict):
                continue
            kind = doc.get("type")
            if kind == "error" or isinstance(doc.get("error"), dict):
                err = doc.get("error")
                facts.error = err if isinstance(err, dict) else doc
                facts.data_events -= 1
            response = doc.get("response")
            if not isinstance(response, dict):
                continue
            if facts.model is None and isinstance(response.get("model"), str):
                facts.model = response["model"]
            if isinstance(kind, str) and kind in _TERMINAL:
                facts.finish_reasons.append(_TERMINAL[kind])
                if kind == "response.failed":
                    error = response.get("error")
                    facts.error = error if isinstance(error, dict) else {"message": "failed"}
                usage = response.get("usage")
                if isinstance(usage, dict):
                    facts.input_tokens, facts.output_tokens = usage_counts(usage)
                    facts.cached_input_tokens, facts.reasoning_tokens = usage_details(usage)
            self._wrap(response)
            ending = line[len(line.rstrip(b"\r\n")) :]
            lines[i] = b"data: " + orjson.dumps(doc) + ending
        return b"".join(lines)

    def _collect(self, payload: bytes) -> None:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict) and isinstance(doc.get("delta"), str):
            self.facts.add_content(doc["delta"])


# ---------------------------------------------------------------------------------------
# follow-ups


def pinned_plan(the_plan: Plan, where: Location, route: CompiledRoute) -> Plan:
    """The plan cut to the one place that holds the previous response; refuse if it has none."""
    kept = [
        c
        for c in the_plan.candidates
        if c.target.provider == where.provider and c.region == where.region
    ]
    if kept:
        return Plan(route, kept, the_plan.dropped, the_plan.panic)
    there: list[Dropped] = [
        d
        for d in the_plan.dropped
        if split_target(d.target)[0] == where.provider and d.region in (where.region, None)
    ]
    if there and any(d.reason.is_health for d in there):
        raise errors.ResponseHolderUnavailable(
            f"previous_response_id names a response stored by {where.shown}, the only place "
            f"that holds it, and that target can't be used now ({'; '.join(map(str, there))}); "
            "the request is not sent elsewhere. Retry when it is back, or start a new "
            "conversation without previous_response_id",
            route=route.name,
        )
    why = f" ({'; '.join(map(str, there))})" if there else ""
    raise errors.PreviousResponseElsewhere(
        f"previous_response_id names a response stored by {where.shown}, but route "
        f"{route.name!r} has no target there that can serve this request{why}; send the "
        "follow-up with a model whose route includes that provider and region",
        route=route.name,
    )


def pin_note(where: Location) -> str:
    return (
        f"previous_response_id pins this request to {where.shown}, the only place that holds "
        "the response, so it was not sent elsewhere; retry when that region is back, or start "
        "a new conversation without previous_response_id"
    )


def follow_up_path(where: Location, suffix: str, query: str) -> str:
    path = f"/responses/{quote(where.upstream_id, safe='')}{suffix}"
    return f"{path}?{query}" if query else path


def holder_unreachable(wrapped: str, where: Location, why: str) -> errors.ResponseHolderUnavailable:
    return errors.ResponseHolderUnavailable(
        f"response {_short(wrapped)} is stored by {where.shown}, which did not answer ({why}); "
        "it is not asked elsewhere, since no other region holds this response. Retry when "
        "that region is back"
    )
