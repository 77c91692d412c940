"""The ``model: "auto"`` pre-classifier: which workload category a request belongs to.

Why it exists: the seeds' tiered routing sends the simple majority of traffic
to $0.01-$0.25/M models and keeps the $3.00/M reasoning models for the few
requests that need them, but an app should not have to know its own
category.  A route marked ``classify: true`` (and the ``auto`` alias) asks
this module for a category; the answer is a *model name* (``light``,
``general``, ``reasoning``, ``multimodal``, ``regional-cn`` by default) that
the router then resolves like any other alias.

Rules, first match wins (see ``docs/classifier.md``):

1. ``multimodal`` - any image or audio part: only vision/audio models can serve it.
2. header-forced - e.g. ``x-user-region: cn``, or the app naming its
   category in ``x-modelroute-category``.
3. ``regional-cn`` - the user/system text is mostly Han characters.
4. ``reasoning`` - a score over strong phrases, weak cues, maths notation
   density and numbered-constraint puzzles, minus how-to/creative cues and a
   code penalty, reaches the threshold.
5. ``light`` - a short prompt asking for classification/extraction-style output.
6. ``general`` - everything else.

It runs on every classified request, in front of a network call that costs
hundreds of milliseconds, so it must stay far below that: patterns are
compiled once per :class:`ClassifierSpec` (cached), text is scanned through
a bounded head/tail window so the cost does not grow with the prompt, and
counting is left to C (``re``, ``str`` methods).  Pure: no aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, NamedTuple

from modelroute.resources import ClassifierSpec
from modelroute.resources.classifier import CATEGORIES, Category

__all__ = ["Classification", "Classifier", "classifier_for", "classify"]

_IMAGE_PARTS: Final = frozenset({"image_url", "image", "input_image"})
_AUDIO_PARTS: Final = frozenset({"input_audio", "audio"})
_TEXT_PARTS: Final = frozenset({"text", "input_text"})
_PROMPT_ROLES: Final = frozenset({"user", "system", "developer"})
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})

# Script counting on UTF-8 bytes: every Han ideograph of the CJK Unified
# block (U+4E00-U+9FFF, plus the U+4000-U+4DBF tail of extension A) starts
# with a lead byte E4-E9; E3 leads kana (E3 81-83) and CJK punctuation
# (E3 80); EF leads full-width punctuation.  A lead byte never occurs as a
# continuation byte, so byte counts are exact, and a few C-speed passes
# (``bytes.translate`` deleting every other byte counts a whole set of lead
# bytes at once) beat a regex character class over non-ASCII text by 5x.
# Hangul (EA-ED) is not Han: Korean and Japanese are not China-facing.
_NOT_HAN_LEADS: Final = bytes(b for b in range(256) if not 0xE4 <= b <= 0xE9)
_KANA_SHARE_JAPANESE: Final = 0.1  # kana per Han character above which the text is Japanese

# Maths notation, counted in the raw window: `=` and `^` (prose rarely uses
# them, code is excluded separately), LaTeX commands (a backslash), and the
# Unicode maths symbols.  `+ - * / < >` are left out: prose, HTML and code
# are full of them.
_ASCII_MATH: Final = (b"=", b"^", b"\\")
_UNICODE_MATH_RE: Final = re.compile(
    "[\u221a\u2211\u222b\u2264\u2265\u2260\u00b1\u00d7\u00f7\u2200\u2203\u2208\u2209"
    "\u2282\u2286\u221e\u03c0\u2202\u2207\u2261\u21d2\u21d4\u2192\u2234\u2124\u211d\u2115]"
)

# A numbered or bulleted clue at the start of a line.
_ITEM_RE: Final = re.compile(rb"(?m)^[ \t]*(?:\(?\d{1,2}[.):]|[-*])[ \t]+")

# Code is general work even when it says "compute" or carries `=` signs: a
# fence, or two of these keywords as words ("function", "class" and "let"
# are left out: maths prose uses them).  Word-set lookups, not substring
# scans, because this runs on every unfenced prompt.
_CODE_WORDS: Final = frozenset(
    {
        b"def",
        b"return",
        b"import",
        b"const",
        b"public",
        b"void",
        b"elif",
        b"println",
        b"printf",
        b"struct",
        b"func",
        b"fn",
        b"nullptr",
        b"async",
        b"await",
        b"lambda",
        b"self",
        b"var",
        b"include",
        b"impl",
        b"namespace",
        b"std",
        b"null",
        b"none",
        b"true",
        b"false",
    }
)
_CODE_MIN_WORDS: Final = 2

# Header values and keywords could carry anything; the reason goes into an
# HTTP header, so it is forced to printable ASCII.
_UNPRINTABLE: Final = {i: "?" for i in (*range(0, 32), 127)}
_REASON_MAX: Final = 199
_EVIDENCE_MAX: Final = 3


@dataclass(frozen=True, slots=True)
class Classification:
    """The classifier's answer.

    ``model`` is what the request is re-resolved as; ``reason`` is a short
    printable-ASCII sentence naming the rule and its evidence, sent back in
    ``x-modelroute-reason`` and recorded in the span.
    """

    category: str
    model: str
    reason: str


def _norm_table() -> bytes:
    """bytes.translate table: ASCII letters lower-cased, digits kept, ASCII punctuation and
    whitespace to a space, non-ASCII bytes unchanged (a UTF-8 keyword still matches)."""
    table = bytearray(range(256))
    for i in range(128):
        char = chr(i)
        if "A" <= char <= "Z":
            table[i] = ord(char.lower())
        elif not char.isalnum():
            table[i] = 32
    return bytes(table)


_NORM: Final = _norm_table()


@dataclass(frozen=True, slots=True)
class _Scan:
    """One text prepared for keyword matching: done once, shared by every rule.

    Why bytes: ``bytes.translate`` lower-cases and strips punctuation in one
    C pass, and a set of words turns a hundred keyword checks into one set
    intersection.  A per-keyword ``in``/regex scan of a 2k-token prompt
    costs hundreds of microseconds; this costs about ten.
    """

    raw: bytes  # the window as UTF-8, case and punctuation intact (maths, code markers)
    padded: bytes  # " " + normalised text + " ", for phrase lookups
    words: frozenset[bytes]

    @classmethod
    def of(cls, text: str) -> _Scan:
        raw = text.encode("utf-8", "replace")
        norm = raw.translate(_NORM)
        return cls(raw, b" " + norm + b" ", frozenset(norm.split()))


class _Scans(NamedTuple):
    """The prepared last user turn and system text (reasoning and light share them)."""

    user: _Scan
    system: _Scan | None


class _Keywords:
    """A keyword list compiled for :class:`_Scan`: single words by set, phrases by first word.

    Matching is on whole words (``lemma`` never matches ``dilemma``), with
    punctuation treated as a space (``step-by-step`` == ``step by step``);
    with ``plurals`` a trailing ``s``/``es`` is accepted too.
    """

    def __init__(self, keywords: Iterable[str], *, plurals: bool) -> None:
        singles: dict[bytes, str] = {}
        phrases: dict[bytes, list[tuple[frozenset[bytes], bytes, str]]] = {}
        self.order: dict[str, int] = {}
        for index, keyword in enumerate(keywords):
            words = keyword.encode("utf-8").translate(_NORM).split()
            if not words:
                continue
            self.order.setdefault(keyword, index)
            if len(words) == 1:
                singles.setdefault(words[0], keyword)
                if plurals:
                    singles.setdefault(words[0] + b"s", keyword)
                    singles.setdefault(words[0] + b"es", keyword)
            else:
                bucket = phrases.setdefault(words[0], [])
                forms = [words]
                if plurals:  # "fix the typo" also matches "fix the typos"
                    forms += [[*words[:-1], words[-1] + end] for end in (b"s", b"es")]
                for form in forms:
                    phrase = b" " + b" ".join(form) + b" "
                    # "step-by-step" and "step by step" are one phrase once normalised.
                    if all(phrase != known for _, known, _ in bucket):
                        bucket.append((frozenset(form), phrase, keyword))
        self._singles = singles
        self._single_set = frozenset(singles)
        self._phrases = phrases
        self._first_words = frozenset(phrases)

    def find(self, scan: _Scan) -> list[str]:
        """The keywords present, each once, in list order (deterministic evidence)."""
        found = {self._singles[w] for w in scan.words & self._single_set}
        for first in scan.words & self._first_words:
            for needed, phrase, keyword in self._phrases[first]:
                # All its words present (a cheap set test) before the substring scan.
                if needed <= scan.words and phrase in scan.padded:
                    found.add(keyword)
        return sorted(found, key=self.order.__getitem__)

    def any(self, scan: _Scan) -> str | None:
        found = self.find(scan)
        return found[0] if found else None


def _window(text: str, limit: int) -> str:
    """Head two thirds + tail third of a long text: instructions sit at the ends."""
    if len(text) <= limit:
        return text
    head = (limit * 2) // 3
    return text[:head] + "\n" + text[len(text) - (limit - head) :]


def _content_text(content: Any) -> tuple[str, bool, bool]:
    """(text, has_image, has_audio) of one message content (string or list of parts)."""
    if isinstance(content, str):
        return content, False, False
    if not isinstance(content, list):
        return "", False, False
    texts: list[str] = []
    image = audio = False
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
        elif kind in _IMAGE_PARTS:
            image = True
        elif kind in _AUDIO_PARTS:
            audio = True
    return "\n".join(texts), image, audio


def _estimate_tokens(text: str) -> int:
    """Same estimate as the router's (``proxy/request.py``): ASCII at 4 chars, others 1 each."""
    if text.isascii():
        return (len(text) + 3) // 4
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii").translate(_UNPRINTABLE)


def _quote(items: Iterable[str]) -> str:
    return ", ".join(f'"{i}"' for i in items)


@dataclass(frozen=True, slots=True)
class _Prompt:
    """The text the rules look at, extracted once per request."""

    system: str  # system/developer messages, windowed
    user: str  # the last user turn (or the completions prompt), windowed
    language: str  # recent user/system messages, windowed, for the Han share
    tokens: int  # estimated tokens of the full system text + last user turn
    image: bool
    audio: bool


class Classifier:
    """Rules of one :class:`ClassifierSpec`, compiled once; :meth:`classify` per request.

    Build through :func:`classifier_for`, which caches by spec, so a table
    reload that keeps the same ``classifier:`` block costs nothing.
    """

    def __init__(self, spec: ClassifierSpec) -> None:
        self.spec = spec
        r = spec.reasoning
        self._strong = _Keywords(r.strong, plurals=True)
        self._weak = _Keywords(r.weak, plurals=True)
        self._negative = _Keywords(r.negative, plurals=False)
        self._puzzle = _Keywords(r.puzzle_cues, plurals=False)
        self._light = _Keywords(spec.light.keywords, plurals=True)
        self._light_exclude = _Keywords(spec.light.exclude, plurals=True)
        self._scan = spec.scan_chars
        self._system_scan = max(200, spec.scan_chars // 3)
        self._models: dict[str, str] = {c: spec.models.for_category(c) for c in CATEGORIES}
        self._header_rules = tuple((h.name, frozenset(h.values), h.category) for h in spec.headers)
        self._category_header = spec.category_header

    # -- the request ---------------------------------------------------------------------------

    def _prompt(self, body: Mapping[str, Any]) -> _Prompt:
        messages = body.get("messages")
        if isinstance(messages, list):
            return self._chat_prompt(messages)
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = "\n".join(p for p in prompt if isinstance(p, str))
        if not isinstance(prompt, str):
            prompt = ""
        user = _window(prompt, self._scan)
        return _Prompt("", user, user, _estimate_tokens(prompt), False, False)

    def _chat_prompt(self, messages: list[Any]) -> _Prompt:
        system_parts: list[str] = []
        recent: list[str] = []
        last_user = ""
        image = audio = False
        tokens_system = 0
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            text, has_image, has_audio = _content_text(message.get("content"))
            image = image or has_image
            audio = audio or has_audio
            role = message.get("role")
            if role not in _PROMPT_ROLES or not text:
                continue
            if role in _SYSTEM_ROLES:
                tokens_system += _estimate_tokens(text)
                system_parts.append(_window(text, self._system_scan))
            else:
                last_user = text
            recent.append(_window(text, self._scan))
        return _Prompt(
            system="\n".join(system_parts),
            user=_window(last_user, self._scan),
            language="\n".join(recent[-self.spec.max_messages :]),
            tokens=tokens_system + _estimate_tokens(last_user),
            image=image,
            audio=audio,
        )

    # -- the rules ----------------------------------------------------------------------------

    def _forced(self, headers: Mapping[str, str]) -> tuple[Category, str] | None:
        if not self._header_rules and self._category_header is None:
            return None
        # Plain dicts are case-sensitive, aiohttp's CIMultiDict is not: normalise once.
        lowered = {str(k).lower(): str(v).strip().lower() for k, v in headers.items()}
        if self._category_header is not None:
            value = lowered.get(self._category_header)
            if value in self._models:
                category: Category = value  # type: ignore[assignment]  # a category, checked above
                return category, f"{self._category_header}: {value}"
        for name, values, forced in self._header_rules:
            value = lowered.get(name)
            if value is not None and (value in values or "*" in values):
                return forced, f"{name}: {value}"
        return None

    @staticmethod
    def _han_share(text: str) -> tuple[float, int]:
        """Share of Han characters among the text's estimated tokens, and their count.

        ASCII counts at 4 characters a token (an English word weighs about
        what a Han character does), CJK punctuation not at all; text with
        kana is Japanese and has share 0.
        """
        if text.isascii():
            return 0.0, 0
        raw = text.encode("utf-8", "replace")
        han = len(raw.translate(None, _NOT_HAN_LEADS))
        if not han:
            return 0.0, 0
        cjk_punct = raw.count(b"\xe3\x80")
        kana = raw.count(b"\xe3") - cjk_punct
        if kana > han * _KANA_SHARE_JAPANESE:
            return 0.0, han
        punct = cjk_punct + raw.count(b"\xef")
        ascii_chars = len(text.encode("ascii", "ignore"))
        other = max(0, len(text) - ascii_chars - han - punct)
        return han / (han + ascii_chars / 4 + other), han

    def _reasoning(self, p: _Prompt, scans: _Scans) -> tuple[int, list[str]]:
        """Reasoning score and its evidence; the system prompt counts at half weight.

        Why half: a system prompt such as "think step by step" is boilerplate
        that applies to every request of the app, not evidence about this one.
        """
        score, evidence = self._reasoning_score(p.user, scans.user)
        if scans.system is not None:
            sys_score, sys_evidence = self._reasoning_score(p.system, scans.system)
            if sys_score > 0:
                score += sys_score // 2
                evidence += [f"system {e}" for e in sys_evidence]
        return score, evidence

    def _reasoning_score(self, text: str, scan: _Scan) -> tuple[int, list[str]]:
        r = self.spec.reasoning
        score = 0
        evidence: list[str] = []
        strong = self._strong.find(scan)
        if strong:
            score += r.strong_weight * len(strong)
            evidence.append(_quote(strong[:_EVIDENCE_MAX]))
        weak = [w for w in self._weak.find(scan) if not any(w in s for s in strong)]
        weak = weak[: r.max_weak_hits]
        if weak:
            score += r.weak_weight * len(weak)
            evidence.append(_quote(weak))
        raw = scan.raw
        is_code = len(scan.words & _CODE_WORDS) >= _CODE_MIN_WORDS or b"```" in raw
        if is_code:
            if score:
                score -= r.code_penalty
                evidence.append("code")
        else:
            symbols = sum(raw.count(sym) for sym in _ASCII_MATH)
            if not raw.isascii():
                symbols += len(_UNICODE_MATH_RE.findall(text))
            if symbols >= r.math_min_symbols and symbols >= r.math_density * _estimate_tokens(text):
                score += r.math_weight
                evidence.append(f"{symbols} math symbols")
        if score < r.threshold and raw.count(b"\n") + 1 >= r.puzzle_min_items:
            cues = self._puzzle.find(scan)
            if len(cues) >= r.puzzle_min_constraints:
                items = len(_ITEM_RE.findall(raw))
                if items >= r.puzzle_min_items:
                    score += r.puzzle_weight
                    evidence.append(f"puzzle: {items} clues, {len(cues)} constraints")
        if score > 0:
            negative = self._negative.find(scan)[:2]
            if negative:
                score -= r.negative_weight * len(negative)
                evidence.append("not " + _quote(negative))
        return score, evidence

    def _light_match(self, p: _Prompt, scans: _Scans) -> str | None:
        """The light keyword found, if the prompt is short and asks for nothing generative."""
        if p.tokens > self.spec.light.max_tokens:
            return None
        both = (scans.user,) if scans.system is None else (scans.system, scans.user)
        found = [k for scan in both for k in self._light.find(scan)]
        if not found or any(self._light_exclude.find(scan) for scan in both):
            return None
        return found[0]

    # -- the answer ---------------------------------------------------------------------------

    def _answer(self, category: Category, reason: str) -> Classification:
        reason = _ascii(f"{category}: {reason}")
        if len(reason) > _REASON_MAX:
            reason = reason[: _REASON_MAX - 3] + "..."
        return Classification(category, self._models[category], reason)

    def classify(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> Classification:
        """The category of one parsed OpenAI request (chat ``messages`` or ``prompt``)."""
        p = self._prompt(body)
        if p.image or p.audio:
            parts = " and ".join(n for n, has in (("image", p.image), ("audio", p.audio)) if has)
            return self._answer("multimodal", f"request carries {parts} parts")
        forced = self._forced(headers)
        if forced is not None:
            return self._answer(forced[0], f"header {forced[1]}")
        share, han = self._han_share(p.language)
        rules = self.spec.regional_cn
        if han >= rules.min_han and share >= rules.min_ratio:
            return self._answer("regional-cn", f"{share:.0%} Han text ({han} chars)")
        scans = _Scans(_Scan.of(p.user), _Scan.of(p.system) if p.system else None)
        score, evidence = self._reasoning(p, scans)
        threshold = self.spec.reasoning.threshold
        if score >= threshold:
            return self._answer(
                "reasoning", f"score {score} >= {threshold}: " + "; ".join(evidence)
            )
        light = self._light_match(p, scans)
        if light is not None:
            limit = self.spec.light.max_tokens
            return self._answer("light", f'{p.tokens} tokens <= {limit}, matched "{light}"')
        detail = f"reasoning score {score} < {threshold}"
        if evidence:
            detail += " (" + "; ".join(evidence) + ")"
        return self._answer("general", f"{p.tokens} tokens, {detail}")


@lru_cache(maxsize=64)
def _cached(spec: ClassifierSpec) -> Classifier:
    return Classifier(spec)


_DEFAULT_SPEC: Final = ClassifierSpec()


def classifier_for(spec: ClassifierSpec | None = None) -> Classifier:
    """The compiled classifier of a spec (``None``: the product defaults), cached by spec."""
    return _cached(spec if spec is not None else _DEFAULT_SPEC)


def classify(
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    spec: ClassifierSpec | None = None,
) -> Classification:
    """Convenience: classify with the cached classifier of ``spec`` (default rules when None)."""
    return classifier_for(spec).classify(body, headers or {})
