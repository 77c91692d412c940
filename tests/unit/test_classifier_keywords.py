"""The classifier's default keyword lists: a data file, checked on load, and the doc made from it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelroute.devtools import classifier_docs
from modelroute.resources.classifier import ClassifierSpec
from modelroute.resources.classifier_defaults import (
    DEFAULTS,
    KeywordDataError,
    load_default_keywords,
    parse_keywords,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "src" / "modelroute" / "resources" / "classifier_keywords.json"


def good() -> dict[str, list[str]]:
    raw: dict[str, list[str]] = json.loads(DATA.read_text(encoding="utf-8"))
    raw.pop("$comment")
    return raw


def test_the_spec_defaults_are_the_data_file() -> None:
    spec = ClassifierSpec()
    assert spec.reasoning.strong == DEFAULTS.strong == tuple(good()["strong"])
    assert spec.reasoning.weak == tuple(good()["weak"])
    assert spec.reasoning.negative == tuple(good()["negative"])
    assert spec.reasoning.puzzle_cues == tuple(good()["puzzleCues"])
    assert spec.light.keywords == tuple(good()["light"])
    assert spec.light.exclude == tuple(good()["lightExclude"])
    assert load_default_keywords() == DEFAULTS  # the packaged copy is the repository's


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda d: d.pop("weak"), "weak: Field required"),
        (lambda d: d.update(strongg=["x"]), "strongg: Extra inputs are not permitted"),
        (lambda d: d.update(light=[]), "light: Tuple should have at least 1 item"),
        (lambda d: d.update(negative=["install", 3]), "negative.1: Input should be a valid string"),
        (lambda d: d.update(weak=["prove", "  "]), "weak: Value error, an entry is blank"),
        (lambda d: d.update(weak=["Prove"]), "'Prove' must be written trimmed and lower-cased"),
        (lambda d: d.update(weak=["prove", "prove"]), "'prove' is listed twice"),
    ],
)
def test_a_broken_data_file_is_refused_naming_file_and_list(
    mutate: Callable[[dict[str, Any]], object], says: str
) -> None:
    data = good()
    mutate(data)
    with pytest.raises(KeywordDataError) as exc:
        parse_keywords(json.dumps(data), "kw.json")
    assert str(exc.value).startswith("kw.json: ")
    assert says in str(exc.value)


@pytest.mark.parametrize("text", ['{"strong": ["unclosed"', '["just", "a list"]', ""])
def test_data_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(KeywordDataError, match=r"^kw\.json: "):
        parse_keywords(text, "kw.json")


def test_the_docs_keyword_section_is_current() -> None:
    doc = (ROOT / classifier_docs.DOC).read_text(encoding="utf-8")
    assert classifier_docs.update(doc) == doc, (
        "docs/classifier.md is stale: run `make classifier-docs`"
    )
    for phrase in DEFAULTS.strong + DEFAULTS.light_exclude:
        assert f"`{phrase}`" in doc


def test_the_docs_section_follows_an_edit_of_the_data() -> None:
    doc = (ROOT / classifier_docs.DOC).read_text(encoding="utf-8")
    data = good()
    data["weak"].append("ponder")
    edited = classifier_docs.update(doc, parse_keywords(json.dumps(data), "kw.json"))
    assert edited != doc and "`ponder`" in edited and "(55)" in edited
    with pytest.raises(ValueError, match="markers"):
        classifier_docs.update(doc.replace(classifier_docs.END, ""))
