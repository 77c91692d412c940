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

    @property
    def path(self) -> str:
        return {
            "chat": "/chat/completions",
            "completions": "/completions",
            "embeddings": "/embeddings",
        }[self.value]

    @property
    def operation(self) -> str:
        """``gen_ai.operation.name`` of the GenAI semantic conventions."""
        return {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}[
            self.value
        ]


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
    non_ascii = len(text.encode("utf-8")) - len(text)  # ≥ 1 per non-ASCII character
    ascii_chars = len(text) - min(len(text), non_ascii)
    return (ascii_chars + 3) // 4 + max(1, non_ascii // 2)


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
            if kind == "text":
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
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            tokens = estimate_text_tokens(prompt)
        elif isinstance(prompt, list):
            tokens = sum(estimate_text_tokens(p) if isinstance(p, str) else len(p) for p in prompt)
        else:
            raise InvalidRequest("`prompt` must be a string or an array")
    else:
        needs.add(Capability.EMBEDDINGS)
        value = body.get("input")
        if isinstance(value, str):
            tokens = estimate_text_tokens(value)
        elif isinstance(value, list) and value:
            tokens = max(
                (
                    estimate_text_tokens(v)
                    if isinstance(v, str)
                    else len(v)
                    if isinstance(v, list)
                    else 1
                )
                for v in value
            )
        else:
            raise InvalidRequest("`input` must be a string or a non-empty array")
    max_out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    if not isinstance(max_out, int) or max_out < 0:
        raise InvalidRequest("`max_tokens` must be a non-negative integer")
    stream = body.get("stream") is True
    options = body.get("stream_options")
    wants_usage = bool(isinstance(options, Mapping) and options.get("include_usage"))
    return RequestFeatures(
        endpoint=endpoint,
        model=model,
        stream=stream and endpoint is not Endpoint.EMBEDDINGS,
        needs=frozenset(needs),
        prompt_tokens=tokens,
        max_output_tokens=max_out,
        client_wants_usage=wants_usage,
    )
