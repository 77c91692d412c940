"""What was observed, one fact at a time: attempts, requests, health changes.

Why separate from the summaries: these are the raw per-request records the
tests check claims against; the summaries are derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelroute.proxy.keys import candidate_key, split_candidate

from .stats import ms, rounded


@dataclass(frozen=True)
class Attempt:
    """One upstream attempt as the proxy recorded it."""

    provider: str
    model: str
    region: str
    result: str  # ok | connect | timeout | 429 | 5xx | ...
    at: float  # seconds after the workload started

    @property
    def candidate(self) -> str:
        return candidate_key(self.provider, self.model, self.region)


@dataclass
class RequestResult:
    """One request: what the client saw, joined with what the proxy recorded for it."""

    index: int
    at: float  # when it was sent, seconds after the workload started
    category: str  # the script's intent
    model: str  # "auto" or a category name
    stream: bool
    outcome: str = "lost"  # ok | error (a well-formed OpenAI error) | lost (neither)
    status: int | None = None
    route: str | None = None  # x-modelroute-route: for "auto", the category the proxy chose
    target: str | None = None  # x-modelroute-target: provider/model@region that served
    attempts_header: int | None = None
    reason: str | None = None  # x-modelroute-reason: the classifier's evidence
    latency: float | None = None  # until the last byte (or the error)
    ttft: float | None = None  # streams: until the first content chunk
    error: str = ""  # the proxy's error message, or what went wrong on the wire
    error_code: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def served(self) -> Attempt | None:
        ok = [a for a in self.attempts if a.result == "ok"]
        return ok[-1] if ok else None

    @property
    def region(self) -> str | None:
        if self.target and "@" in self.target:
            return split_candidate(self.target)[2]
        served = self.served
        return served.region if served else None

    @property
    def served_model(self) -> str | None:
        if self.target and "/" in self.target:
            return split_candidate(self.target)[1]
        served = self.served
        return served.model if served else None

    @property
    def fell_back(self) -> bool:
        """Served, but not by the first candidate tried."""
        return self.outcome == "ok" and (len(self.attempts) > 1 or (self.attempts_header or 1) > 1)

    @property
    def served_as(self) -> str:
        """The category that served it: the route the proxy chose, else the script's intent."""
        return self.route or self.category

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "at": rounded(self.at),
            "category": self.category,
            "model": self.model,
            "stream": self.stream,
            "outcome": self.outcome,
            "status": self.status,
            "route": self.route,
            "target": self.target,
            "reason": self.reason,
            "latencyMs": ms(self.latency),
            "ttftMs": ms(self.ttft),
            "error": self.error or None,
            "errorCode": self.error_code,
            "attempts": [
                {"candidate": a.candidate, "result": a.result, "at": rounded(a.at)}
                for a in self.attempts
            ],
            "costUSD": self.cost_usd,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
        }


@dataclass(frozen=True)
class HealthEvent:
    """A change seen on ``/metrics``: a region ejected or back, a circuit opened or closed."""

    at: float
    kind: str  # ejected | readmitted | circuit_open | circuit_closed
    provider: str
    region: str
    route: str | None = None
    model: str | None = None

    @property
    def out(self) -> bool:
        return self.kind in ("ejected", "circuit_open")

    def describe(self) -> str:
        what = {
            "ejected": "region ejected",
            "readmitted": "region back in rotation",
            "circuit_open": "circuit opened",
            "circuit_closed": "circuit closed",
        }[self.kind]
        where = f"{self.provider}@{self.region}"
        if self.route is not None:
            where = f"{self.route}: {self.provider}/{self.model}@{self.region}"
        return f"{what} ({where})"
