"""The ``model: auto`` pre-classifier: one test per rule, spec overrides, and the labelled set.

The labelled set (``tests/data/classifier_labelled.jsonl``) was written by
hand before the rules were tuned; rows with ``"split": "heldout"`` (every
fourth) were never looked at while tuning, so their figures are the honest
estimate.  The per-category table is printed whatever pytest's capture mode.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from modelroute.proxy.classifier import Classification, Classifier, classifier_for, classify
from pydantic import ValidationError

from modelroute.resources import ClassifierSpec
from modelroute.resources.classifier import CATEGORIES
from modelroute.resources.route import RouteSpec

LABELLED = Path(__file__).parent.parent / "data" / "classifier_labelled.jsonl"


def chat(text: str, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": text}]}


def parts(*items: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": list(items)}]}


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


def cat(body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    return classify(body, headers).category


# -- rule 1: multimodal ---------------------------------------------------------------------------


def test_image_part_is_multimodal() -> None:
    result = classify(parts({"type": "text", "text": "What is this?"}, IMAGE))
    assert result == Classification("multimodal", "multimodal", result.reason)
    assert "image" in result.reason


def test_audio_part_is_multimodal_and_beats_headers_and_chinese() -> None:
    body = parts({"type": "text", "text": "请把这段录音转成文字。"}, AUDIO)
    result = classify(body, {"x-user-region": "cn", "x-modelroute-category": "light"})
    assert result.category == "multimodal"
    assert "audio" in result.reason


def test_image_in_an_earlier_turn_still_needs_vision() -> None:
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]},
            {"role": "assistant", "content": "A latency graph."},
            {"role": "user", "content": "Why does p99 spike?"},
        ]
    }
    assert cat(body) == "multimodal"


# -- rule 2: header-forced ------------------------------------------------------------------------


def test_region_header_forces_regional_cn_case_insensitively() -> None:
    body = chat("Prove that the sum of two even numbers is even.")
    assert cat(body) == "reasoning"
    result = classify(body, {"X-User-Region": " CN "})
    assert result.category == "regional-cn"
    assert result.reason == "regional-cn: header x-user-region: cn"


def test_category_header_names_the_category_and_bad_values_are_ignored() -> None:
    body = chat("Write a haiku about the sea.")
    assert cat(body, {"x-modelroute-category": "reasoning"}) == "reasoning"
    assert cat(body, {"x-modelroute-category": "premium-please"}) == "general"
    assert cat(body, {"x-user-region": "us"}) == "general"


def test_header_rules_are_declarative() -> None:
    spec = ClassifierSpec.model_validate(
        {
            "headers": [{"name": "X-Tier", "values": ["free", "Trial"], "category": "light"}],
            "categoryHeader": None,
        }
    )
    body = chat("Write a haiku about the sea.")
    assert classify(body, {"x-tier": "trial"}, spec).category == "light"
    assert classify(body, {"x-modelroute-category": "reasoning"}, spec).category == "general"
    assert classify(body, {"x-user-region": "cn"}, spec).category == "general"  # default replaced


# -- rule 3: regional-cn ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["你好", "谢谢！", "证明根号2是无理数。", "請問台北有什麼好吃的夜市？"]
)
def test_chinese_text_is_regional_cn_even_when_short_or_reasoning(text: str) -> None:
    result = classify(chat(text))
    assert result.category == "regional-cn"
    assert "Han" in result.reason


def test_chinese_minority_and_japanese_are_not_regional_cn() -> None:
    assert cat(chat("What does the Chinese phrase 一石二鸟 mean in English?")) == "general"
    assert cat(chat("日本語で自己紹介の例文を書いてください。趣味は読書と旅行です。")) == "general"


def test_language_share_looks_at_the_conversation_not_one_turn() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "你是一个专业的法律顾问，请用简洁的中文回答。"},
            {"role": "user", "content": "劳动合同到期不续签，公司需要支付补偿金吗？"},
            {"role": "assistant", "content": "需要视情况而定。"},
            {"role": "user", "content": "OK, and for fixed-term?"},
        ]
    }
    assert cat(body) == "regional-cn"


# -- rule 4: reasoning ----------------------------------------------------------------------------


def test_proof_request_is_reasoning_and_names_its_evidence() -> None:
    result = classify(chat("Prove that there are infinitely many primes, step by step."))
    assert result.category == "reasoning"
    assert '"prove that"' in result.reason
    assert '"step by step"' in result.reason


@pytest.mark.parametrize(
    "text",
    [
        "Explain why the sky is blue.",  # the seed heuristic's "explain why" alone
        "Calculate the tip on a $48 dinner at 18%.",
        "What is the time complexity of binary search?",
        "Explain the reasoning behind the GDPR's right to be forgotten.",
    ],
)
def test_a_single_weak_cue_is_not_reasoning(text: str) -> None:
    assert cat(chat(text)) == "general"


def test_maths_notation_density_backs_weak_cues() -> None:
    assert cat(chat("Compute x^3 + 1/x^3 given x + 1/x = 3, where y = x^2.")) == "reasoning"
    assert cat(chat("Compute the total of my grocery bill: 3 apples and 2 pears.")) == "general"


def test_numbered_constraint_puzzle_is_reasoning() -> None:
    puzzle = (
        "Four friends sit in a row. Clues:\n1) Ana sits next to Ben.\n2) Carl does not sit at "
        "either end.\n3) Dana sits right of Carl.\n4) Ben is not next to Dana.\nWhat is the order?"
    )
    result = classify(chat(puzzle))
    assert result.category == "reasoning"
    assert "puzzle" in result.reason
    todo = "Shopping list:\n1. milk\n2. eggs\n3. bread\n4. butter\nAnything missing?"
    assert cat(chat(todo)) == "general"


def test_how_to_cues_cancel_step_by_step() -> None:
    assert cat(chat("Explain step by step how to install Docker on Ubuntu.")) == "general"
    assert cat(chat("Explain step by step why the limit as x approaches 0 of sin x / x is 1.")) == (
        "reasoning"
    )


def test_code_is_general_even_with_equals_signs_and_compute() -> None:
    code = (
        "Refactor this:\n"
        + "def compute(a, b):\n    x = a * b\n    y = x ^ 2\n    return x + y\n" * 20
    )
    assert cat(chat(code)) == "general"


def test_system_prompt_boilerplate_counts_half() -> None:
    body = chat("How do I read a JSON file in Node.js?", system="Think step by step.")
    assert cat(body) == "general"
    body = chat("Show that f(x) = x^2 is convex.", system="You are a careful maths tutor.")
    assert cat(body) == "reasoning"


def test_keywords_are_whole_words() -> None:
    # "lemma" must not fire inside "dilemma", "prime" not inside "primer".
    assert cat(chat("I have a dilemma: which primer should I buy for my walls?")) == "general"


# -- rule 5: light --------------------------------------------------------------------------------


def test_short_classification_is_light() -> None:
    result = classify(chat("Classify the sentiment: 'The battery died after two days.'"))
    assert result.category == "light"
    assert result.model == "light"
    assert '"classify"' in result.reason


def test_light_task_in_the_system_prompt_counts() -> None:
    body = chat("Where can I find my order history?", system="Label the intent: refund, question.")
    assert cat(body) == "light"


def test_long_prompt_is_not_light() -> None:
    doc = "The quarterly report shows revenue grew in EMEA while APAC stayed flat. " * 40
    assert cat(chat("Classify this document by topic:\n" + doc)) == "general"


def test_generative_asks_are_not_light() -> None:
    assert cat(chat("Write a Python function that extracts emails from text.")) == "general"
    assert cat(chat("Write a regex to extract the domain from a URL.")) == "general"


def test_completions_prompt_is_classified() -> None:
    assert cat({"prompt": "Sentiment (positive/negative): I love it\nSentiment:"}) == "light"
    assert cat({"prompt": ["Prove that 2 + 2 = 4 ", "rigorously."]}) == "reasoning"
    assert cat({"prompt": [1, 2, 3]}) == "general"  # token ids: nothing to read


# -- rule 6: general ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        chat("hi"),
        {"messages": []},
        {"messages": [{"role": "user", "content": None}]},
        {"messages": "not a list"},
        {},
        {"messages": [{"role": "assistant", "content": "Prove that P = NP."}]},  # not user text
    ],
)
def test_everything_else_is_general(body: dict[str, Any]) -> None:
    assert cat(body) == "general"


# -- the spec, the answer, the cache ---------------------------------------------------------------


def test_models_mapping_names_the_alias_to_resolve() -> None:
    spec = ClassifierSpec.model_validate({"models": {"reasoning": "kimi", "regionalCn": "glm"}})
    assert classify(chat("Prove that sqrt(2) is irrational."), None, spec).model == "kimi"
    assert classify(chat("你好"), None, spec) == Classification(
        "regional-cn", "glm", "regional-cn: 100% Han text (2 chars)"
    )
    assert classify(chat("hi"), None, spec).model == "general"


def test_thresholds_and_keyword_lists_override() -> None:
    spec = ClassifierSpec.model_validate(
        {
            "reasoning": {"threshold": 1},
            "light": {"maxTokens": 5, "keywords": ["triage"]},
            "regionalCn": {"minRatio": 0.95},
        }
    )
    assert classify(chat("Explain why the sky is blue."), None, spec).category == "reasoning"
    assert classify(chat("Triage: disk full"), None, spec).category == "light"
    assert classify(chat("Classify: great product"), None, spec).category == "general"
    assert classify(chat("请用中文回答：What is Kubernetes?"), None, spec).category == "general"


def test_spec_is_frozen_hashable_strict_and_camel_case() -> None:
    spec = ClassifierSpec.model_validate({"light": {"keywords": ["  Triage "]}})
    assert spec.light.keywords == ("triage",)
    assert hash(spec) == hash(ClassifierSpec.model_validate({"light": {"keywords": ["triage"]}}))
    with pytest.raises(ValidationError):
        ClassifierSpec.model_validate({"lightRules": {}})
    with pytest.raises(ValidationError):
        ClassifierSpec.model_validate(
            {"headers": [{"name": "x", "values": ["a"], "category": "x"}]}
        )
    with pytest.raises(ValidationError):
        ClassifierSpec.model_validate({"reasoning": {"strong": [""]}})
    with pytest.raises(ValidationError):
        spec.scan_chars = 10  # type: ignore[misc]
    dumped = ClassifierSpec().dump()
    assert "regionalCn" in dumped
    assert "scanChars" in dumped
    assert ClassifierSpec.model_validate(dumped) == ClassifierSpec()


def test_route_spec_carries_a_classifier_block() -> None:
    route = RouteSpec.model_validate(
        {"models": ["auto"], "classify": True, "classifier": {"models": {"reasoning": "kimi"}}}
    )
    assert route.classifier is not None
    assert classify(chat("Prove that 1 = 1."), None, route.classifier).model == "kimi"


def test_classifier_is_cached_by_spec() -> None:
    assert classifier_for() is classifier_for(None)
    assert classifier_for() is classifier_for(ClassifierSpec())
    other = ClassifierSpec.model_validate({"reasoning": {"threshold": 9}})
    assert classifier_for(other) is not classifier_for()
    assert isinstance(classifier_for(other), Classifier)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (chat("hi"), {"x-user-region": "cn\r\nx-evil: 1"}),
        (chat("hi"), {"x-modelroute-category": "light"}),
        (chat("Prove that " + "é∑ " * 500 + " step by step, theorem, lemma, rigorously " * 20), {}),
    ],
)
def test_reason_is_a_safe_short_ascii_header_value(
    body: dict[str, Any], headers: dict[str, str]
) -> None:
    spec = ClassifierSpec.model_validate(
        {"headers": [{"name": "x-user-region", "values": ["*"], "category": "regional-cn"}]}
    )
    reason = classify(body, headers, spec).reason
    assert reason.isascii()
    assert reason.isprintable()
    assert 0 < len(reason) < 200


def test_cost_is_bounded_by_the_scan_window() -> None:
    # A keyword buried in the middle of a huge prompt is out of the window on purpose;
    # the same keyword at the end (where instructions sit) is seen.
    filler = "The service migrated to Kubernetes last quarter without incident. " * 2000
    assert cat(chat(filler + "Prove that the rollout was safe. " + filler)) == "general"
    assert cat(chat(filler + "Prove that the rollout was safe, by induction.")) == "reasoning"


# -- the labelled set ------------------------------------------------------------------------------


def _load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line]


def _scores(rows: list[dict[str, Any]]) -> tuple[dict[str, tuple[float, float, float, int]], float]:
    table: dict[str, tuple[float, float, float, int]] = {}
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for row in rows:
        got = classify(row["body"], row.get("headers")).category
        if got == row["expected"]:
            tp[got] += 1
        else:
            fp[got] += 1
            fn[row["expected"]] += 1
    for category in CATEGORIES:
        precision = (
            tp[category] / (tp[category] + fp[category]) if tp[category] + fp[category] else 0.0
        )
        recall = (
            tp[category] / (tp[category] + fn[category]) if tp[category] + fn[category] else 0.0
        )
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table[category] = (precision, recall, f1, tp[category] + fn[category])
    return table, sum(v[2] for v in table.values()) / len(table)


def test_labelled_set_is_big_and_covers_every_category() -> None:
    rows = _load()
    assert len(rows) >= 200
    counts = Counter(row["expected"] for row in rows)
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 20
    assert {row["split"] for row in rows} == {"dev", "heldout"}


def test_labelled_set_precision_recall(pytestconfig: pytest.Config) -> None:
    rows = _load()
    lines = ["", "classifier on tests/data/classifier_labelled.jsonl"]
    results = {}
    for split in ("dev", "heldout", "all"):
        subset = [r for r in rows if split in ("all", r["split"])]
        table, macro = _scores(subset)
        results[split] = macro
        lines.append(f"  {split} ({len(subset)} prompts)  macro-F1 {macro:.3f}")
        lines.append(f"    {'category':12} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>4}")
        for category, (p, r, f1, n) in table.items():
            lines.append(f"    {category:12} {p:>9.2f} {r:>7.2f} {f1:>6.2f} {n:>4}")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n".join(lines))
    else:  # pragma: no cover - capture plugin disabled (-p no:capture)
        print("\n".join(lines))
    # Floors we actually reach, with a margin: dev was tuned on, held-out was not.
    assert results["all"] >= 0.95
    assert results["heldout"] >= 0.88


# The seeds' starting point (seed 003, "My Kimi Routing Pattern"): reasoning if the prompt
# mentions any of these, verbatim.
SEED_REASONING_KEYWORDS = [
    "prove",
    "calculate",
    "step by step",
    "reason",
    "explain why",
    "mathematical",
    "proof",
]


def _prompt_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict)]
    if isinstance(body.get("prompt"), str):
        parts.append(body["prompt"])
    return "\n".join(parts)


def _binary_scores(rows: list[dict[str, Any]], says_reasoning: Any) -> tuple[float, float, float]:
    tp = fp = fn = 0
    for row in rows:
        got, want = says_reasoning(row), row["expected"] == "reasoning"
        tp += got and want
        fp += got and not want
        fn += want and not got
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def test_reasoning_beats_the_seeds_keyword_heuristic(pytestconfig: pytest.Config) -> None:
    """The issue: "the seeds' keyword heuristic is a start, make it better"; on the same set."""
    rows = _load()

    def seed(row: dict[str, Any]) -> bool:
        text = _prompt_text(row["body"]).lower()
        return any(kw in text for kw in SEED_REASONING_KEYWORDS)

    def ours(row: dict[str, Any]) -> bool:
        return classify(row["body"], row.get("headers")).category == "reasoning"

    lines = ["", "reasoning vs the rest (precision / recall / F1)"]
    scores = {}
    for split in ("heldout", "all"):
        subset = [r for r in rows if split in ("all", r["split"])]
        lines.append(f"  {split} ({len(subset)} prompts)")
        for name, fn in (("seeds' keywords", seed), ("modelroute", ours)):
            scores[split, name] = _binary_scores(subset, fn)
            p, r, f1 = scores[split, name]
            lines.append(f"    {name:16} {p:>5.2f} {r:>5.2f} {f1:>5.2f}")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n".join(lines))
    for split in ("heldout", "all"):  # held-out: prompts the rules were never tuned on
        assert scores[split, "modelroute"][2] > scores[split, "seeds' keywords"][2] + 0.1
