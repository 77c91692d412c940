"""The classifier's default keyword lists, read from ``classifier_keywords.json``.

About 300 phrases are data, not code: they live in a JSON file inside the
package (so a wheel carries them), are loaded once through
``importlib.resources`` and checked on load.  A file someone edited by hand
must fail loudly, naming itself and the key, rather than leave the classifier
quietly matching nothing: a missing or unknown key, an empty list, a
non-string, a blank, a duplicate or an entry that isn't already trimmed and
lower-cased is refused.  ``docs/classifier.md``'s keyword section is
generated from the same file (``make classifier-docs``).  JSON rather than
YAML because resources are imported by an in-cluster sidecar, which never
loads PyYAML (``tests/proxy/test_lazy_imports.py``); the file's ``$comment``
key (JSON Schema's convention) says what it is and is otherwise ignored.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

RESOURCE = "classifier_keywords.json"
"""The data file, a sibling of this module in ``modelroute.resources``."""


class KeywordDataError(ValueError):
    """The packaged keyword file is unreadable or breaks its rules (a build fault, not a user's)."""


class DefaultKeywords(BaseModel):
    """The six default lists, keyed as the data file (and a ``ModelRoute``) spells them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strong: tuple[str, ...] = Field(min_length=1)
    weak: tuple[str, ...] = Field(min_length=1)
    negative: tuple[str, ...] = Field(min_length=1)
    puzzle_cues: tuple[str, ...] = Field(min_length=1, alias="puzzleCues")
    light: tuple[str, ...] = Field(min_length=1)
    light_exclude: tuple[str, ...] = Field(min_length=1, alias="lightExclude")

    @field_validator("*")
    @classmethod
    def _clean(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for v in values:
            if not v.strip():
                raise ValueError("an entry is blank")
            if v != v.strip().lower():
                raise ValueError(f"{v!r} must be written trimmed and lower-cased")
        seen: set[str] = set()
        for v in values:
            if v in seen:
                raise ValueError(f"{v!r} is listed twice")
            seen.add(v)
        return values


def parse_keywords(text: str, source: str) -> DefaultKeywords:
    """Parse and check one keyword file; every failure names ``source`` and what to fix."""
    try:
        raw: Any = json.loads(text)
    except ValueError as exc:
        raise KeywordDataError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise KeywordDataError(f"{source}: expected an object of list name -> keywords")
    raw.pop("$comment", None)
    try:
        return DefaultKeywords.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise KeywordDataError(f"{source}: {problems}") from exc


def load_default_keywords() -> DefaultKeywords:
    """The packaged defaults (read once, at import of :mod:`.classifier`)."""
    path = resources.files(__package__ or "modelroute.resources").joinpath(RESOURCE)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeywordDataError(f"{RESOURCE}: cannot be read from the package: {exc}") from exc
    return parse_keywords(text, f"modelroute.resources/{RESOURCE}")


DEFAULTS = load_default_keywords()
"""Loaded once at import: the classifier spec's field defaults point here."""
