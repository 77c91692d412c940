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
