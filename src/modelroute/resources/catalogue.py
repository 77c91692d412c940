"""The built-in model catalogue, taken from the seed articles.

Every id, display name and price below is exactly as the seed articles give
it (``../shared/seeds``).  Rules we hold to:

* **No invented prices.**  The seeds quote output prices only, so every
  ``input_usd_per_mtok`` is ``None`` (unknown), never ``0``.  A model the
  seeds name without a price (``qwen3.5-32b``) has no output price either.
* **Context window**: every family is quoted at "up to 128K"; we record
  128,000 tokens for each model, the family ceiling the seeds give.
* **Capabilities**: vision for Qwen3-VL-32B, Qwen3-Omni-30B and GLM-4.6V;
  audio for Qwen3-Omni-30B; none of that for Kimi or DeepSeek (the seeds
  call DeepSeek's vision "limited" – not something to route images to).
  All four families "speak the OpenAI API dialect", so tools and JSON mode
  are listed for every chat model.
* **Upstream names**: where a seed shows the string it sends
  (``deepseek-v4-flash``, ``deepseek-r1``, ``Qwen/Qwen3-32B``,
  ``Qwen/Qwen3-VL-32B``, ``moonshot-k2.5``, ``glm-4.6v``) we use it; the
  others follow the same family pattern.  A ``ModelProvider`` can override
  any entry (``spec.models``), which is the way to fix a name for a real
  upstream.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator

from .base import SpecModel

_ID = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?")


class Capability(StrEnum):
    """What a model can be asked to do; a request needing one drops targets without it."""

    TEXT = "text"
    CODE = "code"
    VISION = "vision"
    AUDIO = "audio"
    TOOLS = "tools"
    JSON = "json"
    EMBEDDINGS = "embeddings"
    # the provider serves OpenAI's Responses API (/v1/responses) for this model; no seed
    # provider is known to, so no catalogue entry has it: a route target declares it
    RESPONSES = "responses"


class CatalogueModel(SpecModel):
    """One model as a provider serves it.  Also the shape of ``ModelProvider.spec.models[]``."""

    name: str = Field(
        min_length=1, description="The id routes refer to, lowercase (deepseek-v4-flash)."
    )
    upstream_model: str | None = Field(
        default=None,
        alias="upstreamModel",
        description="The name sent to the provider in `model`; defaults to `name`.",
    )
    display_name: str | None = Field(default=None, alias="displayName")
    family: str | None = None
    output_usd_per_mtok: float | None = Field(
        default=None,
        ge=0,
        alias="outputUSDPerMTok",
        description="USD per million output tokens; omit when unknown (never 0 for unknown).",
    )
    input_usd_per_mtok: float | None = Field(
        default=None,
        ge=0,
        alias="inputUSDPerMTok",
        description="USD per million input tokens; omit when unknown.",
    )
    context_tokens: int = Field(default=128_000, gt=0, alias="contextTokens")
    capabilities: tuple[Capability, ...] = Field(default=(Capability.TEXT,))

    @field_validator("name")
    @classmethod
    def _lowercase_id(cls, name: str) -> str:
        # Routes look models up by exact id: "Qwen3-32B" next to the built-in "qwen3-32b"
        # would be a second model that no lowercase target ever reaches.  (A validator, not
        # a schema pattern, so the generated CRDs don't change; the webhook still refuses.)
        if not _ID.fullmatch(name):
            raise ValueError(
                f"model name {name!r} must be a lowercase id such as 'qwen3-32b' (letters, "
                "digits, '.', '-', '_'); put the provider's own spelling in upstreamModel"
            )
        return name

    @property
    def upstream(self) -> str:
        return self.upstream_model or self.name


_CHAT = (Capability.TEXT, Capability.CODE, Capability.TOOLS, Capability.JSON)
_VISION = (Capability.TEXT, Capability.VISION, Capability.TOOLS, Capability.JSON)
_OMNI = (Capability.TEXT, Capability.VISION, Capability.AUDIO, Capability.TOOLS, Capability.JSON)


def _m(
    name: str,
    display: str,
    family: str,
    upstream: str,
    price: float | None,
    caps: tuple[Capability, ...] = _CHAT,
) -> CatalogueModel:
    return CatalogueModel(
        name=name,
        upstream_model=upstream,
        display_name=display,
        family=family,
        output_usd_per_mtok=price,
        input_usd_per_mtok=None,
        context_tokens=128_000,
        capabilities=caps,
    )


BUILTIN_CATALOGUE: tuple[CatalogueModel, ...] = (
    # DeepSeek (幻方): $0.25–$2.50/M
    _m("deepseek-v4-flash", "DeepSeek V4 Flash", "deepseek", "deepseek-v4-flash", 0.25),
    _m("deepseek-v3.2", "DeepSeek V3.2", "deepseek", "deepseek-v3.2", 0.38),
    _m("deepseek-v4-pro", "DeepSeek V4 Pro", "deepseek", "deepseek-v4-pro", 0.78),
    _m("deepseek-r1", "DeepSeek R1 (Reasoner)", "deepseek", "deepseek-r1", 2.50),
    _m("deepseek-coder", "DeepSeek Coder", "deepseek", "deepseek-coder", 0.25),
    # Qwen (Alibaba, 阿里): $0.01–$3.20/M
    _m("qwen3-8b", "Qwen3-8B", "qwen", "Qwen/Qwen3-8B", 0.01),
    _m("qwen3-32b", "Qwen3-32B", "qwen", "Qwen/Qwen3-32B", 0.28),
    _m("qwen3-coder-30b", "Qwen3-Coder-30B", "qwen", "Qwen/Qwen3-Coder-30B", 0.35),
    _m("qwen3-vl-32b", "Qwen3-VL-32B", "qwen", "Qwen/Qwen3-VL-32B", 0.52, _VISION),
    _m("qwen3-omni-30b", "Qwen3-Omni-30B", "qwen", "Qwen/Qwen3-Omni-30B", 0.52, _OMNI),
    _m("qwen3.5-397b", "Qwen3.5-397B", "qwen", "Qwen/Qwen3.5-397B", 2.34),
    _m("qwen3.5-32b", "Qwen3.5-32B", "qwen", "Qwen/Qwen3.5-32B", None),
    _m("qwen3.6-35b", "Qwen3.6-35B", "qwen", "Qwen/Qwen3.6-35B", 1.00),
    # Kimi (Moonshot AI, 月之暗面): $3.00–$3.50/M, text only
    _m("kimi-k2.5", "Kimi K2.5", "kimi", "moonshot-k2.5", 3.00),
    _m("kimi-k2.5-thinking", "Kimi K2.5 (thinking mode)", "kimi", "moonshot-k2.5-thinking", 3.50),
    # GLM (Zhipu AI, 智谱): $0.01–$1.92/M
    _m("glm-4-9b", "GLM-4-9B", "glm", "glm-4-9b", 0.01),
    _m("glm-4-9b-chat", "GLM-4-9B-Chat", "glm", "glm-4-9b-chat", 0.01),
    _m("glm-4.6v", "GLM-4.6V", "glm", "glm-4.6v", 0.15, _VISION),
    _m("glm-5", "GLM-5", "glm", "glm-5", 1.92),
)

BUILTIN_BY_NAME: dict[str, CatalogueModel] = {m.name: m for m in BUILTIN_CATALOGUE}
