"""The scripted workload: which requests the demo sends, and when.

Why deterministic: two runs send the same requests at the same offsets, so
a difference between two reports is the proxy's doing, not the script's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# The five categories of the seeds, in the order the report lists them.
CATEGORIES: Final = ("light", "general", "reasoning", "multimodal", "regional-cn")


# A 1x1 PNG: the classifier and the router look at the part's type, never decode it.
_PIXEL: Final = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

PROMPTS: Final[Mapping[str, tuple[Any, ...]]] = {
    "light": (
        "Classify the sentiment of this review as positive, negative or neutral: "
        "'Arrived on time, works great.'",
        "Extract the invoice number and the total from: "
        "'Invoice INV-20931, total due $1,284.00 by 30 May.'",
        "Is this email spam? Answer yes or no. 'You won a free cruise, click here to claim.'",
        "Label the intent of this support ticket (billing, bug, feature request): "
        "'I was charged twice this month.'",
    ),
    "general": (
        "Write a friendly two-paragraph reply to a customer asking when their order will ship.",
        "Summarize the trade-offs between running a service in one region versus three regions.",
        "Draft a short release note for a version that adds multi-region failover to our gateway.",
        "What are good practices for naming Kubernetes namespaces in a large organisation?",
    ),
    "reasoning": (
        "Prove that the sum of the first n odd numbers is n^2, step by step.",
        "A train leaves at 3pm at 60 km/h and another at 4pm at 90 km/h on the same track. "
        "Step by step, find when the second catches up, and show your work.",
        "Prove that there are infinitely many primes, then explain why the argument fails "
        "for primes of the form n^2 + 1.",
    ),
    "multimodal": (
        [
            {"type": "text", "text": "What does this receipt say? Give the vendor and the total."},
            {"type": "image_url", "image_url": {"url": _PIXEL}},
        ],
        [
            {"type": "text", "text": "Describe this architecture diagram in three bullet points."},
            {"type": "image_url", "image_url": {"url": _PIXEL}},
        ],
    ),
    "regional-cn": (
        "请用三句话总结多区域部署对服务可用性的好处。",
        "帮我写一封邮件，通知客户下周二凌晨进行系统维护。",
        "解释一下什么是熔断器，以及它在微服务中的作用。",
    ),
}

# Ten requests in the seeds' proportions: light work is the majority, reasoning is rare.
MIX: Final = (
    "light",
    "general",
    "light",
    "reasoning",
    "general",
    "multimodal",
    "light",
    "regional-cn",
    "general",
    "light",
)
NAMED_EVERY: Final = 7  # every 7th request names its category instead of "auto"


@dataclass(frozen=True)
class Step:
    """One scripted request."""

    index: int
    at: float  # seconds after the workload starts
    category: str  # what the script meant it to be
    model: str  # what it sends: "auto" or the category itself
    stream: bool
    body: dict[str, Any]

    @property
    def request_id(self) -> str:
        return f"demo-{self.index:04d}"


def script(seconds: float, rate: float) -> list[Step]:
    """The workload: ``seconds * rate`` requests, one every ``1/rate`` s, deterministic.

    Reasoning always streams (nobody waits for a proof in silence), light and
    image requests never do, general and Chinese chat alternate.
    """
    steps: list[Step] = []
    seen: Counter[str] = Counter()
    for i in range(max(1, int(seconds * rate))):
        category = MIX[i % len(MIX)]
        n = seen[category]
        seen[category] += 1
        prompts = PROMPTS[category]
        stream = category == "reasoning" or (category in ("general", "regional-cn") and n % 2 == 1)
        model = category if i % NAMED_EVERY == NAMED_EVERY - 1 else "auto"
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompts[n % len(prompts)]}],
            "max_tokens": 512 if category == "reasoning" else 256,
        }
        if stream:
            body["stream"] = True
        steps.append(Step(i, i / rate, category, model, stream, body))
    return steps
