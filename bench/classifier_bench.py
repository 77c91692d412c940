"""Micro-benchmark of the ``model: auto`` pre-classifier: µs per ``classify()`` call.

Why: the classifier runs in front of every classified request, and the
budget is 50 µs for a 2k-token prompt (issue 7).  This prints the median
over repeats for a ~2k-token prompt per category, so a regression in the
rules (a per-request regex compile, an unbounded scan) shows up as a
number, not a feeling.  It is a benchmark, not a test: nothing here asserts
timings (shared CI machines are too noisy for that).

    .venv/bin/python bench/classifier_bench.py [--number 2000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from typing import Any

from modelroute.proxy.classifier import classifier_for
from modelroute.proxy.request import estimate_text_tokens

TARGET_TOKENS = 2000


def _fill(unit: str, tokens: int = TARGET_TOKENS) -> str:
    """Repeat a realistic paragraph until the router's token estimate reaches ``tokens``."""
    out = unit
    while estimate_text_tokens(out) < tokens:
        out += unit
    return out


_ENGLISH = (
    "Our platform team migrated the billing service to Kubernetes last quarter. The rollout "
    "went smoothly in two regions, but the third saw elevated error rates during peak hours. "
)
_MATHS = (
    "Let a_n be defined by a_1 = 1 and a_(n+1) = 2a_n + 3 for n >= 1. Consider the sum "
    "S_n = a_1 + a_2 + ... + a_n and its relation to 2^n. "
)
_CHINESE = (
    "我们的平台团队上个季度把计费服务迁移到了 Kubernetes，"
    "两个区域的发布都很顺利，但第三个区域在高峰期错误率升高。"
)


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


CASES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "general": (_chat("Summarize this incident report:\n" + _fill(_ENGLISH)), {}),
    "reasoning": (
        _chat(_fill(_MATHS) + "\nProve that S_n = 2^(n+2) - 3n - 4, step by step."),
        {},
    ),
    "light": (
        {
            "messages": [
                {
                    "role": "system",
                    "content": "Classify the sentiment: positive, negative, neutral.",
                },
                {"role": "user", "content": "The checkout page keeps timing out."},
            ]
        },
        {},
    ),
    "multimodal": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": _fill(_ENGLISH)},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                }
            ]
        },
        {},
    ),
    "regional-cn": (_chat(_fill(_CHINESE)), {}),
    "header-forced": (_chat(_fill(_ENGLISH)), {"x-user-region": "cn"}),
    "general (8k tokens)": (_chat("Summarize:\n" + _fill(_ENGLISH, 8000)), {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings; the median is reported")
    args = parser.parse_args()
    classifier = classifier_for()
    headers_base = {
        "content-type": "application/json",
        "authorization": "Bearer x",
        "user-agent": "OpenAI/Python 1.50.0",
        "accept": "application/json",
    }
    print(f"{'case':22} {'tokens':>6} {'category':12} {'median us':>9} {'min us':>7}")
    for name, (body, extra_headers) in CASES.items():
        headers = {**headers_base, **extra_headers}
        tokens = sum(
            estimate_text_tokens(p["text"] if isinstance(p, dict) else p)
            for m in body["messages"]
            for p in (m["content"] if isinstance(m["content"], list) else [m["content"]])
            if isinstance(p, str) or p.get("type") == "text"
        )
        category = classifier.classify(body, headers).category

        def call(b: dict[str, Any] = body, h: dict[str, str] = headers) -> None:
            classifier.classify(b, h)

        timer = timeit.Timer(call)
        runs = [t / args.number * 1e6 for t in timer.repeat(repeat=args.repeat, number=args.number)]
        print(
            f"{name:22} {tokens:>6} {category:12} {statistics.median(runs):>9.1f} {min(runs):>7.1f}"
        )


if __name__ == "__main__":
    main()
