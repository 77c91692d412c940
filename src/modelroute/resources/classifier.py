"""The ``classifier:`` block of a ``ModelRoute`` (rules for ``model: auto``).

The seeds' claim is that tiered routing (cheap models for the simple 80 %,
premium reasoning only where it pays) cuts spend 40-60 %.  An app should not
have to know its own category, so a route marked ``classify: true`` (and the
``auto`` alias) runs a cheap pre-classifier whose answer is a *model name*
looked up like any other alias.  Everything the classifier decides on is
declared here, so an operator can tune it per route without a release; every
field has the product default, so ``classifier: {}`` (or no block at all) is
the documented behaviour.

All collections are tuples and every model is frozen: the compiled table
hashes these specs, and the proxy caches one compiled classifier per spec.
Lists in an override *replace* the default list (copy the defaults from
``docs/classifier.md`` to extend them).  The default keyword lists are data:
``classifier_keywords.json`` beside this module, loaded and checked by
:mod:`.classifier_defaults`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import SpecModel
from .classifier_defaults import DEFAULTS

Category = Literal["light", "general", "reasoning", "multimodal", "regional-cn"]
"""The five workload categories of the seeds, in the classifier's vocabulary."""

CATEGORIES: tuple[Category, ...] = ("multimodal", "regional-cn", "reasoning", "light", "general")


def _lower_all(values: tuple[str, ...]) -> tuple[str, ...]:
    """Keywords are matched against lower-cased text, so store them lower-cased and trimmed."""
    out = tuple(v.strip().lower() for v in values)
    if any(not v for v in out):
        raise ValueError("keywords must not be empty")
    return out


class CategoryModels(SpecModel):
    """Category -> the model name the request is re-resolved as (an alias some route captures)."""

    light: str = Field(default="light", min_length=1)
    general: str = Field(default="general", min_length=1)
    reasoning: str = Field(default="reasoning", min_length=1)
    multimodal: str = Field(default="multimodal", min_length=1)
    regional_cn: str = Field(default="regional-cn", min_length=1, alias="regionalCn")

    def for_category(self, category: Category) -> str:
        """The model name for one category (``regional-cn`` is spelt ``regionalCn`` in YAML)."""
        if category == "regional-cn":
            return self.regional_cn
        value: str = getattr(self, category)
        return value


class HeaderRule(SpecModel):
    """A request header that forces a category (e.g. ``x-user-region: cn`` -> ``regional-cn``).

    Why: residency and product context are often known to the app but not
    visible in the prompt (a China-facing tenant writing English).
    """

    name: str = Field(min_length=1, description="Header name, matched case-insensitively.")
    values: tuple[str, ...] = Field(
        min_length=1, description="Values that match (case-insensitive, trimmed); `*` = any value."
    )
    category: Category

    @field_validator("name")
    @classmethod
    def _lower_name(cls, v: str) -> str:
        return v.strip().lower()

    @field_validator("values")
    @classmethod
    def _lower_values(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _lower_all(v)


_DEFAULT_HEADER_RULES = (
    HeaderRule(
        name="x-user-region", values=("cn", "china", "zh-cn", "cn-mainland"), category="regional-cn"
    ),
)


class ReasoningRules(SpecModel):
    """How ``reasoning`` is scored: keyword weights, maths notation, numbered-constraint puzzles.

    A request is ``reasoning`` when its score reaches ``threshold``.  A
    single weak cue ("explain why", "calculate") is not enough on purpose:
    the seeds' keyword list sends "explain why the sky is blue" to a
    $3.00/M model; a strong phrase, or weak cues backed by notation, is.
    """

    strong: tuple[str, ...] = Field(
        default=DEFAULTS.strong, description="Phrases worth `strongWeight`."
    )
    weak: tuple[str, ...] = Field(
        default=DEFAULTS.weak, description="Words worth `weakWeight` (whole words)."
    )
    negative: tuple[str, ...] = Field(
        default=DEFAULTS.negative, description="Cues of how-to/creative/summary work, subtracted."
    )
    strong_weight: int = Field(default=3, ge=0, le=100, alias="strongWeight")
    weak_weight: int = Field(default=1, ge=0, le=100, alias="weakWeight")
    negative_weight: int = Field(default=2, ge=0, le=100, alias="negativeWeight")
    max_weak_hits: int = Field(
        default=3,
        ge=0,
        le=100,
        alias="maxWeakHits",
        description="Cap on distinct weak cues counted.",
    )
    threshold: int = Field(default=3, ge=1, le=1000)
    math_density: float = Field(
        default=0.04,
        ge=0,
        le=1,
        alias="mathDensity",
        description="Maths symbols per estimated token that add `mathWeight` (ignored in code).",
    )
    math_min_symbols: int = Field(default=3, ge=1, alias="mathMinSymbols")
    math_weight: int = Field(default=2, ge=0, le=100, alias="mathWeight")
    puzzle_min_items: int = Field(
        default=3,
        ge=2,
        alias="puzzleMinItems",
        description="Numbered clues that, with `puzzleMinConstraints` cues, make a puzzle.",
    )
    puzzle_min_constraints: int = Field(default=2, ge=1, alias="puzzleMinConstraints")
    puzzle_cues: tuple[str, ...] = Field(
        default=DEFAULTS.puzzle_cues,
        alias="puzzleCues",
        description="Constraint cues of logic puzzles.",
    )
    puzzle_weight: int = Field(default=3, ge=0, le=100, alias="puzzleWeight")
    code_penalty: int = Field(
        default=1,
        ge=0,
        le=100,
        alias="codePenalty",
        description="Subtracted when the prompt carries code: code review is general work.",
    )

    @field_validator("strong", "weak", "negative", "puzzle_cues")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _lower_all(v)


class LightRules(SpecModel):
    """``light``: a short prompt that asks for classification/extraction-style output."""

    max_tokens: int = Field(
        default=300,
        ge=1,
        le=100_000,
        alias="maxTokens",
        description="Estimated tokens (system + last user turn) up to which a prompt is short.",
    )
    keywords: tuple[str, ...] = Field(
        default=DEFAULTS.light, description="At least one must occur."
    )
    exclude: tuple[str, ...] = Field(
        default=DEFAULTS.light_exclude,
        description="Generation work, short to ask but not light to do (write code, explain).",
    )

    @field_validator("keywords", "exclude")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _lower_all(v)


class RegionalCnRules(SpecModel):
    """``regional-cn``: the user/system text is mostly Chinese."""

    min_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        alias="minRatio",
        description=(
            "Share of Han characters among estimated text tokens (ASCII counted at 4 characters "
            "a token) from which the conversation counts as Chinese."
        ),
    )
    min_han: int = Field(
        default=1, ge=1, alias="minHan", description="Fewest Han characters needed."
    )


class ClassifierSpec(SpecModel):
    """Declarative rules of the pre-classifier; every field has the product default.

    Rule order (first match wins): multimodal (image/audio parts) >
    header-forced > regional-cn > reasoning > light > general.
    """

    models: CategoryModels = Field(default_factory=CategoryModels)
    headers: tuple[HeaderRule, ...] = Field(
        default=_DEFAULT_HEADER_RULES, description="Header matches that force a category."
    )
    category_header: str | None = Field(
        default="x-modelroute-category",
        alias="categoryHeader",
        description="A header in which the app may name its category outright; null disables it.",
    )
    regional_cn: RegionalCnRules = Field(default_factory=RegionalCnRules, alias="regionalCn")
    reasoning: ReasoningRules = Field(default_factory=ReasoningRules)
    light: LightRules = Field(default_factory=LightRules)
    scan_chars: int = Field(
        default=2000,
        ge=200,
        le=1_000_000,
        alias="scanChars",
        description=(
            "Characters of each message scanned for keywords (two thirds from the head, one third "
            "from the tail): instructions sit at the ends, and cost must not grow with the prompt."
        ),
    )
    max_messages: int = Field(
        default=8,
        ge=1,
        le=1000,
        alias="maxMessages",
        description="Most recent user/system messages considered for the language share.",
    )

    @field_validator("category_header")
    @classmethod
    def _lower_header(cls, v: str | None) -> str | None:
        return v.strip().lower() if v else None
