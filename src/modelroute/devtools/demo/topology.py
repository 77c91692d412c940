"""Where the demo's fake endpoints sit and how fast each answers.

Why a module of its own: the route file (``modelroute/examples/demo.yaml``,
package data) names its endpoints only as ``${provider_region}``
placeholders; this is the one place that turns a placeholder into a fake
provider's behaviour, so tuning the demo's speeds never touches the run.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Final

from ..fake_provider import Knobs


@dataclass(frozen=True)
class Profile:
    """How a model family's endpoint behaves (time compressed, in the seeds' order of speed).

    The seeds put DeepSeek V4 Flash at ~60 tokens/s and Kimi at 30-35 with
    the slowest p99; Qwen's small models and GLM sit between.  Token rates
    here are ~5x the real ones so a reasoning answer streams in about a
    second, and answers are short; what matters is the ordering.
    """

    latency_ms: float  # before the answer (non-stream) or the stream headers
    ttft_ms: float  # then before the first streamed token
    tokens_per_second: float
    output_tokens: int


PROFILES: Final[Mapping[str, Profile]] = {
    "qwen": Profile(latency_ms=20, ttft_ms=15, tokens_per_second=400, output_tokens=16),
    "deepseek": Profile(latency_ms=30, ttft_ms=25, tokens_per_second=300, output_tokens=48),
    "kimi": Profile(latency_ms=50, ttft_ms=120, tokens_per_second=150, output_tokens=160),
    "glm": Profile(latency_ms=35, ttft_ms=40, tokens_per_second=250, output_tokens=64),
}
DEFAULT_PROFILE: Final = Profile(latency_ms=30, ttft_ms=30, tokens_per_second=300, output_tokens=32)

# Extra round trip from the app (in us-east-1) to each region.
REGION_RTT_MS: Final[Mapping[str, float]] = {
    "us-east-1": 0.0,
    "eu-west-1": 30.0,
    "cn-north-1": 80.0,
}
DEFAULT_RTT_MS: Final = 50.0

# A small slow tail on every endpoint, so p99 is not just p50.
TAIL_SHARE: Final = 0.04
TAIL_EXTRA_MS: Final = 250.0

ROUTES_RESOURCE: Final = "demo.yaml"  # in modelroute.examples


def load_template() -> string.Template:
    """The demo's route file (package data), with ``${provider_region}`` base URL placeholders."""
    text = (
        resources.files("modelroute.examples").joinpath(ROUTES_RESOURCE).read_text(encoding="utf-8")
    )
    return string.Template(text)


def endpoint_of(placeholder: str) -> tuple[str, str]:
    """``deepseek_us_east_1`` → ``("deepseek", "us-east-1")`` (provider names have no ``_``)."""
    provider, sep, region = placeholder.partition("_")
    if not sep or not region:
        raise ValueError(f"placeholder {placeholder!r} is not <provider>_<region>")
    return provider, region.replace("_", "-")


def knobs_for(provider: str, region: str) -> Knobs:
    """The fake's behaviour: the family's speed, the region's distance, a small slow tail."""
    p = PROFILES.get(provider, DEFAULT_PROFILE)
    return Knobs(
        region=region,
        latency_ms=p.latency_ms + REGION_RTT_MS.get(region, DEFAULT_RTT_MS),
        ttft_ms=p.ttft_ms,
        tokens_per_second=p.tokens_per_second,
        output_tokens=p.output_tokens,
        slow_share=TAIL_SHARE,
        slow_extra_ms=TAIL_EXTRA_MS,
    )
