"""What a request needs from a target, read once from the parsed body.

The router drops targets by these features (image parts need ``vision``,
audio needs ``audio``, ``tools`` needs ``tools``, a prompt longer than the
context window can't be sent), so they are computed once per request, cheaply.

Token estimate: providers' tokenizers differ (the seeds' "tokenizer
variance" pitfall), so this errs on the long side: ASCII text at ~4
characters a token and every non-ASCII character as a token of its own (CJK
text is close to one token per character on these families' tokenizers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelroute.resources import Capability

from .errors import InvalidRequest, MissingModel


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"

    @property
    def path(self) -> str:
        return _PATHS[self.value]

    @property
    def operation(self) -> str:
        """``gen_ai.operation.name`` of the GenAI semantic conventions."""
        return _OPERATIONS[self.value]


_PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
}
_OPERATIONS = {
    "chat": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",  # the GenAI conventions name no other operation for it
}


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    endpoint: Endpoint
    model: str
    stream: bool
    needs: frozenset[Capability]
    prompt_tokens: int
    max_output_tokens: int
    client_wants_usage: bool

    def describe_needs(self) -> str:
        return ", ".join(sorted(c.value for c in self.needs))


def estimate_text_tokens(text: str) -> int:
    if text.isascii():
        return (len(text) + 3) // 4
    ascii_chars = len(text.encode("ascii", "ignore"))  # counted in C, no Python loop
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def _scan_content(content: Any, needs: set[Capability]) -> int:
    """Tokens of one message content; notes image/audio parts in ``needs``."""
    if isinstance(content, str):
        return estimate_text_tokens(content)
    tokens = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind in ("text", "input_text", "output_text"):
                text = part.get("text")
                if isinstance(text, str):
                    tokens += estimate_text_tokens(text)
            elif kind in ("image_url", "image", "input_image"):
                needs.add(Capability.VISION)
                tokens += 85  # a low-detail image tile; providers count images differently
            elif kind in ("input_audio", "audio"):
                needs.add(Capability.AUDIO)
                tokens += 100
    return tokens


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _input_tokens(value: Any, field: str) -> list[int]:
    """Tokens of each input of ``/completions`` ``prompt`` or ``/embeddings`` ``input``.

    The API takes a string, an array of strings, an array of token ids, or an
    array of token-id arrays; anything else is the client's mistake (a 400
    naming the field), never a crash.
    """
    if isinstance(value, str):
        return [estimate_text_tokens(value)]
    if value and _is_token_ids(value):
        return [len(value)]
    if isinstance(value, list) and value:
        out = []
        for item in value:
            if isinstance(item, str):
                out.append(estimate_text_tokens(item))
            elif item and _is_token_ids(item):
                out.append(len(item))
            else:
                break
        else:
            return out
    raise InvalidRequest(
        f"`{field}` must be a string, a non-empty array of strings, or (arrays of) token ids"
    )


def _responses_input_tokens(body: Mapping[str, Any], needs: set[Capability]) -> int:
    """Tokens of a Responses API ``input`` (a string or a list of items) and ``instructions``."""
    value = body.get("input")
    tokens = 0
    if isinstance(value, str):
        tokens = estimate_text_tokens(value)
    elif isinstance(value, list) and value:
        for item in value:
            if not isinstance(item, Mapping):
                raise InvalidRequest("each entry of `input` must be an object (an input item)")
            tokens += 4 + _scan_content(item.get("content"), needs)
            if item.get("type") == "function_call_output" and isinstance(item.get("output"), str):
                tokens += estimate_text_tokens(item["output"])
    elif body.get("previous_response_id") is None or value is not None:
        raise InvalidRequest("`input` must be a string or a non-empty array of input items")
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        tokens += estimate_text_tokens(instructions)
    if body.get("tools"):
        needs.add(Capability.TOOLS)
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
        needs.add(Capability.JSON)
    return tokens


def extract_features(body: Any, endpoint: Endpoint) -> RequestFeatures:
    """Validate the few fields the proxy itself relies on and compute the routing features."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if model is None or model == "":
        raise MissingModel(
            "`model` is required: name a model or route alias (GET /v1/models lists them)"
        )
    if not isinstance(model, str):
        raise InvalidRequest("`model` must be a string")
    needs: set[Capability] = set()
    tokens = 0
    if endpoint is Endpoint.CHAT:
        needs.add(Capability.TEXT)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("`messages` must be a non-empty array of chat messages")
        for message in messages:
            if not isinstance(message, Mapping):
                raise InvalidRequest("each entry of `messages` must be an object")
            tokens += 4 + _scan_content(message.get("content"), needs)
        if body.get("tools") or body.get("functions"):
            needs.add(Capability.TOOLS)
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
            needs.add(Capability.JSON)
    elif endpoint is Endpoint.COMPLETIONS:
        needs.add(Capability.TEXT)
        tokens = sum(_input_tokens(body.get("prompt"), "prompt"))
    elif endpoint is Endpoint.RESPONSES:
        needs.update((Capability.TEXT, Capability.RESPONSES))
        tokens = _responses_input_tokens(body, needs)
    else:
        needs.add(Capability.EMBEDDINGS)
        # each input is embedded on its own: the longest one is what must fit the window
        tokens = max(_input_tokens(body.get("input"), "input"))
    max_out = (
        body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    ) or 0
    if not isinstance(max_out, int) or isinstance(max_out, bool) or max_out < 0:
        raise InvalidRequest("`max_tokens` must be a non-negative integer")
    stream = body.get("stream") is True
    options = body.get("stream_options")
    wants_usage = bool(isinstance(options, Mapping) and options.get("include_usage"))
    if endpoint is Endpoint.RESPONSES:
        wants_usage = True  # its stream always ends with the usage, in response.completed
    return RequestFeatures(
        endpoint=endpoint,
        model=model,
        stream=stream and endpoint is not Endpoint.EMBEDDINGS,
        needs=frozenset(needs),
        prompt_tokens=tokens,
        max_output_tokens=max_out,
        client_wants_usage=wants_usage,
    )
