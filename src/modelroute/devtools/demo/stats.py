"""Small number helpers shared by the records and the summaries.

Why here: the JSON report and the summaries must round and rank the same
way, so there is one percentile and one rounding rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (an observed value, never interpolated); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def most_common(counter: Mapping[Any, int]) -> list[Any]:
    """Most first, ties by key, so two runs with the same counts list them the same way."""
    return sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds to 0.1 ms: the JSON shows what a person can read."""
    return None if seconds is None else round(seconds * 1000, 1)


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``round`` that lets a missing value through as None (JSON ``null``)."""
    return None if value is None else round(value, digits)
