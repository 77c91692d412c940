"""OpenAI-shaped prompts and answers in the OpenTelemetry GenAI message format.

A route with ``recordContent: true`` puts what the app asked and what the
model answered on the span as ``gen_ai.input.messages`` and
``gen_ai.output.messages``.  The semantic conventions give those a shape of
their own (``[{"role", "parts": [{"type": "text", "content"}, ...]}]``, output
messages with a ``finish_reason``), which trace backends parse to show the
conversation; OpenAI's ``{"role", "content"}`` would show as an opaque blob.
The dispatcher keeps the raw OpenAI values; this module converts them once,
when the span is written, and only for routes that opted in.
"""

from __future__ import annotations

from typing import Any

Part = dict[str, Any]
Message = dict[str, Any]


def input_messages(prompt: Any) -> list[Message]:
    """Chat ``messages``, a completion ``prompt`` or embedding ``input``, as input messages."""
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return [_message(m) for m in prompt]
    texts = prompt if isinstance(prompt, list) else [prompt]
    return [{"role": "user", "parts": [_text(t) for t in texts if t is not None]}]


def output_messages(answer: Any, finish_reasons: tuple[str, ...]) -> list[Message]:
    """The answer's choices (``message`` or ``text``), each with its finish reason."""
    out: list[Message] = []
    for i, choice in enumerate(answer if isinstance(answer, list) else [answer]):
        if isinstance(choice, dict) and "role" in choice:
            message = _message(choice)
        elif isinstance(choice, dict):  # a completions choice: {"text": ...}
            message = {"role": "assistant", "parts": [_text(choice.get("text"))]}
        else:
            message = {"role": "assistant", "parts": [_text(choice)]}
        if i < len(finish_reasons):
            message["finish_reason"] = finish_reasons[i]
        out.append(message)
    return out


def _message(message: dict[str, Any]) -> Message:
    role = str(message.get("role") or "user")
    parts: list[Part] = []
    content = message.get("content")
    if role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}
        )
    elif isinstance(content, list):
        parts += [_content_part(p) for p in content]
    elif content is not None:
        parts.append(_text(content))
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            function = call.get("function") or {}
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
    return {"role": role, "parts": parts}


def _content_part(part: Any) -> Part:
    if not isinstance(part, dict):
        return _text(part)
    kind = part.get("type")
    if kind == "text":
        return _text(part.get("text"))
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return {"type": "uri", "modality": "image", "uri": url}
    return {"type": str(kind or "unknown")}  # audio and the rest: named, not copied


def _text(value: Any) -> Part:
    return {"type": "text", "content": value if isinstance(value, str) else str(value)}
