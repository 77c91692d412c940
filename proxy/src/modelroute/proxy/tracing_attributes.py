"""What a span says: the GenAI semantic conventions' attribute names, filled from a record.

Pure functions of a finished request's record (no OpenTelemetry import), so
the two ways ``tracing_spans`` builds spans – straight to the batch
processors, or through a tracer – carry exactly the same attributes.  The
SERVER span is the request (``server_*``), each CLIENT span one upstream
attempt (``attempt_*``); usage, cost and the response model go on the attempt
that served (``add_served``).  Prompt and completion text only when the route set
``recordContent`` and the dispatcher kept them (``capped_content`` caps them).
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

import orjson

from .events import AttemptRecord, RequestRecord
from .genai_content import input_messages, output_messages

# characters of prompt or completion a recordContent span carries (each)
CONTENT_LIMIT = 64 * 1024


def server_start(record: RequestRecord) -> dict[str, Any]:
    """What the SERVER span knows when the request starts (and the sampler is shown)."""
    return {
        "gen_ai.operation.name": record.operation,
        "gen_ai.request.model": record.requested_model,
        "http.request.method": "POST",
        "modelroute.endpoint": record.endpoint,
        "modelroute.stream": record.stream,
    }


def server_end(record: RequestRecord, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the SERVER span learns by its end, added to ``attributes`` (a new dict if None).

    The observer adds them to the span's own attributes rather than building a second
    dict to merge: one dict fewer per request.
    """
    served = record.served
    if attributes is None:
        attributes = {}
    attributes["modelroute.outcome"] = record.outcome
    attributes["modelroute.attempts"] = len(record.attempts)
    attributes["modelroute.fallback"] = record.fallback
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


def server_error(record: RequestRecord) -> str | None:
    """The SERVER span's error description, or None when the request was not our failure."""
    # the app hanging up, or a request refused as the client's fault, is not our error
    if record.outcome != "ok" and (
        record.outcome in ("error", "stream_error") or record.status >= 500
    ):
        return record.error_code or record.outcome
    return None


def attempt_start(record: RequestRecord, attempt: AttemptRecord) -> dict[str, Any]:
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
        attributes.update(server_address(attempt.server_address))
    return attributes


def attempt_end(
    record: RequestRecord, attempt: AttemptRecord, attributes: dict[str, Any]
) -> str | None:
    """The attempt's outcome into ``attributes``; returns its error description, if an error.

    An attempt the dispatcher finished has its status code and verdict; one it never
    finished (cancelled with the request) ends with the request, marked only by its
    result.  Usage, cost and the response model go on the attempt that served.
    """
    error: str | None = None
    if attempt.span is True:
        if attempt.status is not None:
            attributes["http.response.status_code"] = attempt.status
        if attempt.result != "ok":
            attributes["error.type"] = attempt.result
            # a hedge that lost (or a connect that lost its race) was given up on purpose:
            # not an error of the upstream
            if attempt.result not in ("hedge_lost", "race_lost", "cancelled"):
                error = attempt.detail or attempt.result
    elif attempt is not record.served and attempt.result not in ("ok", "pending"):
        attributes["error.type"] = attempt.result
    if record.served is attempt:
        add_served(record, attributes)
    return error


def add_served(record: RequestRecord, attributes: dict[str, Any]) -> None:
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
            attributes["gen_ai.input.messages"] = capped_content(input_messages(prompt))
        if answer is not None:
            attributes["gen_ai.output.messages"] = capped_content(
                output_messages(answer, record.finish_reasons)
            )


def capped_content(messages: list[dict[str, Any]]) -> str:
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
def server_address(address: str) -> dict[str, Any]:
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
