"""Reading an OpenAI ``usage`` object: the one place that decides what counts as a token count.

Answers, stream events and shadow answers all carry ``usage``; a provider that
sends a string, a negative number or ``true`` there has not reported a count,
and the cost accounting must see "unknown" (and estimate), not a bogus figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _count(value: Any) -> int | None:
    """A usage count as the upstream reported it, or None when it isn't a count at all."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_tokens(usage: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens of a ``usage`` object."""
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def usage_counts(usage: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(input, output) tokens of a chat/completions ``usage`` or a Responses API one."""
    prompt, completion = usage_tokens(usage)
    if prompt is None and completion is None:
        return _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    return prompt, completion


def usage_details(usage: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(cached input, reasoning output) tokens, where the upstream reports them.

    Both are parts of the input and output counts, never extra to them: cached
    tokens are in ``input_tokens`` (``prompt_tokens``), reasoning tokens in
    ``output_tokens`` (``completion_tokens``), so the cost is already whole.
    """
    cached = reasoning = None
    for key in ("input_tokens_details", "prompt_tokens_details"):
        details = usage.get(key)
        if isinstance(details, dict):  # a JSON object (dict, not the slower ABC check: per answer)
            cached = _count(details.get("cached_tokens"))
            break
    for key in ("output_tokens_details", "completion_tokens_details"):
        details = usage.get(key)
        if isinstance(details, dict):
            reasoning = _count(details.get("reasoning_tokens"))
            break
    return cached, reasoning
