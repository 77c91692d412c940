"""Why a request would go where it goes: ``modelroute explain`` and the admin ``/explain``.

An operator debugging "why did this prompt land on the $3.00/M model?" needs
the router's own answer, not a re-implementation that drifts from it.  So
:func:`explain` calls exactly the functions the live proxy calls –
:func:`~.request.extract_features`, :func:`~.router.resolve_request`,
:func:`~.router.plan` – and only *describes* their results: the route and
category (with the classifier's reason), every candidate in the order it
would be tried with the note the router gave it, every dropped target with
its :class:`~.router.DropReason` and detail, the budget's effect, and an
estimated cost at catalogue prices.  Nothing is sent.

Errors the proxy would answer with (unknown model, malformed request, no
eligible target, budget reject) become part of the explanation – they are
the answer to "what would happen" – never exceptions.

Determinism: inside a tier the live proxy draws a weighted random order per
request.  :func:`explain` draws it from ``random.Random(seed)`` (the CLI
uses seed 0 and says so), so the same files and request print the same
explanation every time – which is what makes golden tests possible.

Cost estimate: output tokens are the request's ``max_completion_tokens`` /
``max_tokens`` when set, else :data:`DEFAULT_OUTPUT_TOKENS`, times the
target's output price per million tokens.  The catalogue quotes no input
prices, so input is reported as *unpriced* (never as $0) unless a provider's
``spec.models`` gives an input price; a target with no output price shows
"unknown".

:func:`describe_live` renders a finished live request (its
:class:`~.events.RequestRecord` and the :class:`~.router.Plan` it used) in
the same vocabulary, for the admin port's ring of recent requests.

The words both share (rows, dollars, the budget view, a refusal) are
:mod:`.explain_rows`.

Pure: no aiohttp, no clock of its own, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from modelroute.resources import BudgetAction

from .errors import (
    BudgetExhausted,
    MalformedJSON,
    ModelRouteError,
)
from .events import RequestRecord
from .explain_rows import (
    BudgetStateFn,
    BudgetView,
    Refusal,
    budget_view,
    candidate_row,
    cost_text,
    dropped_row,
    output_cost,
    price_text,
    text_table,
    usd,
)
from .health import HealthBook
from .request import Endpoint, RequestFeatures, extract_features
from .router import (
    Candidate,
    Plan,
    RouteIndex,
    no_candidates_error,
    plan,
    resolve_request,
)
from .table import CompiledRoute, CompiledTable, CompiledTarget

DEFAULT_OUTPUT_TOKENS = 1000
"""Output tokens assumed for the estimate when the request sets no ``max_tokens``."""

DEFAULT_SEED = 0
"""Seed of the weighted order ``modelroute explain`` draws (fixed: the output repeats)."""


class TokensFrom(StrEnum):
    """Where the estimate's output tokens come from (``cost.outputTokensFrom``)."""

    MAX_COMPLETION_TOKENS = "max_completion_tokens"
    MAX_TOKENS = "max_tokens"
    DEFAULT = "default"  # the request sets neither: DEFAULT_OUTPUT_TOKENS
    EMBEDDINGS = "embeddings"  # no output tokens at all


# ---------------------------------------------------------------------------------------
# explain


@dataclass
class Explanation:
    """What the proxy would do with one request; ``refusal`` set when it would not send it."""

    endpoint: Endpoint
    seed: int
    requested_model: str | None = None
    features: RequestFeatures | None = None
    output_tokens: int = 0
    output_tokens_from: TokensFrom = TokensFrom.DEFAULT
    route: CompiledRoute | None = None
    classified_by: str | None = None
    category: str | None = None
    classify_reason: str | None = None
    sticky_header: str | None = None  # the route's sticky header, when the request carries it
    budget: BudgetView | None = None
    plan: Plan | None = None
    refusal: Refusal | None = None

    @property
    def would_serve(self) -> bool:
        return self.refusal is None

    # -- cost ---------------------------------------------------------------------------

    def _budget_rejects(self) -> bool:
        b = self.budget
        return bool(b and b.exhausted and b.action is BudgetAction.REJECT)

    def _first(self) -> Candidate | None:
        if self.plan is None or not self.plan.candidates:
            return None
        return self.plan.candidates[0]

    def _worst(self) -> tuple[CompiledTarget, float] | None:
        """The most expensive priced candidate: the estimate if every cheaper one failed."""
        if self.plan is None:
            return None
        priced = [
            (c.target, cost)
            for c in self.plan.candidates
            if (cost := output_cost(c.target, self.output_tokens)) is not None
        ]
        return max(priced, key=lambda p: p[1]) if priced else None

    def cost_dict(self) -> dict[str, Any]:
        first = self._first()
        worst = self._worst()
        prompt = self.features.prompt_tokens if self.features else None
        out: dict[str, Any] = {
            "outputTokens": self.output_tokens,
            "outputTokensFrom": self.output_tokens_from,
            "promptTokensEstimate": prompt,
            "firstCandidate": first.target.key if first else None,
            "firstCandidateOutputUSD": (
                usd(output_cost(first.target, self.output_tokens)) if first else None
            ),
            "worstCaseCandidate": worst[0].key if worst else None,
            "worstCaseOutputUSD": usd(worst[1]) if worst else None,
            "inputUSD": None,
            "input": "unpriced",
        }
        if first is not None and first.target.input_usd_per_mtok is not None and prompt is not None:
            out["inputUSD"] = usd(prompt * first.target.input_usd_per_mtok / 1_000_000)
            out["input"] = "priced"
        return out

    # -- renderings ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON: the same request and files always give the same document."""
        f = self.features
        doc: dict[str, Any] = {
            "wouldServe": self.would_serve,
            "endpoint": self.endpoint.value,
            "requestedModel": self.requested_model,
            "request": (
                {
                    "stream": f.stream,
                    "needs": sorted(c.value for c in f.needs),
                    "promptTokensEstimate": f.prompt_tokens,
                    "maxOutputTokens": f.max_output_tokens or None,
                }
                if f
                else None
            ),
            "route": self.route.name if self.route else None,
            "namespace": self.route.namespace if self.route else None,
            "classifiedBy": self.classified_by,
            "category": self.category,
            "categoryReason": self.classify_reason,
            "stickyHeader": self.sticky_header,
            "seed": self.seed,
            "budget": self.budget.to_dict() if self.budget else None,
            "candidates": [],
            "dropped": [],
            "panic": False,
            "cost": self.cost_dict(),
            "refusal": self.refusal.to_dict() if self.refusal else None,
        }
        if self.plan is not None:
            doc["candidates"] = [
                candidate_row(i, c, self.output_tokens)
                for i, c in enumerate(self.plan.candidates, 1)
            ]
            doc["dropped"] = [dropped_row(d) for d in self.plan.dropped]
            doc["panic"] = self.plan.panic
        return doc

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()

    def to_text(self) -> str:
        """The human table ``modelroute explain`` prints."""
        lines: list[str] = []
        f = self.features
        model = repr(self.requested_model) if self.requested_model is not None else "(none)"
        lines.append(f"request:  {self.endpoint.value}, model {model}")
        if f is not None:
            max_out = (
                ""
                if f.endpoint is Endpoint.EMBEDDINGS
                else f"; max output {f.max_output_tokens:,} tokens"
                if f.max_output_tokens
                else "; max output not set"
            )
            stream = ", stream" if f.stream else ""
            lines.append(
                f"          needs {f.describe_needs()}; ~{f.prompt_tokens:,} prompt tokens "
                f"(estimated){max_out}{stream}"
            )
        if self.route is not None:
            where = f" (namespace {self.route.namespace})" if self.route.namespace else ""
            if self.classified_by is not None:
                lines.append(
                    f"route:    {self.route.name}{where}, chosen by classify route "
                    f"{self.classified_by!r}"
                )
                reason = (self.classify_reason or "").removeprefix(f"{self.category}: ")
                lines.append(f"category: {self.category} ({reason})")
            else:
                lines.append(f"route:    {self.route.name}{where}, which captures {model}")
                lines.append("category: none (not classified: the model names a route directly)")
        if self.sticky_header is not None:
            lines.append(
                f"sticky:   header {self.sticky_header} is set: its value fixes the first arm"
            )
        if self.budget is not None:
            b = self.budget
            lines.append(f"budget:   {b.window}, action {b.action.value}: {b.state}")
            if b.detail:
                lines.append(f"          {b.detail}")
            if b.effect != "none":
                lines.append(f"          effect: {b.effect}")
        if self.route is not None:
            lines.append(
                f"order:    weighted draws use seed {self.seed} (fixed, so this output repeats; "
                "live traffic draws its own order per request)"
            )
        if self.plan is not None:
            lines.append("")
            lines.extend(self._candidates_text())
            lines.extend(self._dropped_text())
            lines.append("")
            lines.extend(self._cost_text())
        lines.append("")
        if self.refusal is not None:
            r = self.refusal
            lines.append(f"result:   REFUSED, {r.status} {r.code}: {r.message}")
        else:
            first = self._first()
            assert first is not None  # a plan with candidates is what "would serve" means
            lines.append(
                f"result:   would send to {first.key} first "
                f"({len(self.plan.candidates) if self.plan else 0} candidate(s) in order)"
            )
        return "\n".join(lines) + "\n"

    def _candidates_text(self) -> list[str]:
        assert self.plan is not None
        if not self.plan.candidates:
            return ["candidates: none"]
        head = "candidates, in the order they would be tried"
        if self._budget_rejects():
            head = "candidates the route would try, but none is (the budget rejects the request)"
        elif self.plan.panic:
            head += " (panic: every candidate is unhealthy, so all are tried anyway)"
        header = (
            "#",
            "PROVIDER",
            "MODEL",
            "REGION",
            "TIER",
            "WEIGHT",
            "OUTPUT $/M",
            "EST. OUTPUT $",
            "NOTE",
        )
        rows = [
            (
                str(i),
                c.target.provider,
                c.target.model,
                c.region,
                str(c.target.tier),
                str(c.target.weight),
                price_text(c.target.output_usd_per_mtok),
                cost_text(output_cost(c.target, self.output_tokens)),
                c.note,
            )
            for i, c in enumerate(self.plan.candidates, 1)
        ]
        return [f"{head}:", *text_table(header, rows)]

    def _dropped_text(self) -> list[str]:
        assert self.plan is not None
        if not self.plan.dropped:
            return ["dropped: none"]
        header = ("TARGET", "REGION", "REASON", "DETAIL")
        rows = [(d.target, d.region or "-", d.reason.value, d.detail) for d in self.plan.dropped]
        return ["dropped:", *text_table(header, rows)]

    def _cost_text(self) -> list[str]:
        source = {
            TokensFrom.MAX_COMPLETION_TOKENS: "max_completion_tokens",
            TokensFrom.MAX_TOKENS: "max_tokens",
            TokensFrom.DEFAULT: f"max_tokens not set: the default {DEFAULT_OUTPUT_TOKENS:,}",
            TokensFrom.EMBEDDINGS: "embeddings produce no output tokens",
        }[self.output_tokens_from]
        lines = [f"estimate: {self.output_tokens:,} output tokens ({source}), at catalogue prices"]
        first = self._first()
        if first is not None:
            price = first.target.output_usd_per_mtok
            cost = output_cost(first.target, self.output_tokens)
            if price is None:
                lines.append(
                    f"          first candidate {first.target.key}: unknown (no output price in "
                    "the catalogue; its tokens are counted as unpriced, not as $0)"
                )
            else:
                lines.append(
                    f"          first candidate {first.target.key}: {self.output_tokens:,} x "
                    f"${price:.2f}/M = {cost_text(cost)}"
                )
            worst = self._worst()
            if worst is not None and worst[0].key != first.target.key:
                lines.append(
                    f"          up to {cost_text(worst[1])} if it falls back to {worst[0].key}"
                )
        prompt = self.features.prompt_tokens if self.features else 0
        if first is not None and first.target.input_usd_per_mtok is not None:
            input_usd = prompt * first.target.input_usd_per_mtok / 1_000_000
            lines.append(
                f"          input: ~{prompt:,} prompt tokens x "
                f"${first.target.input_usd_per_mtok:.2f}/M = {cost_text(input_usd)}"
            )
        else:
            lines.append(
                f"          input: ~{prompt:,} prompt tokens, unpriced in the catalogue "
                "(not counted, and not $0)"
            )
        return lines


def _output_tokens(body: Mapping[str, Any], features: RequestFeatures) -> tuple[int, TokensFrom]:
    if features.endpoint is Endpoint.EMBEDDINGS:
        return 0, TokensFrom.EMBEDDINGS
    if features.max_output_tokens:
        # extract_features reads max_completion_tokens first, as the proxy does.
        source = (
            TokensFrom.MAX_COMPLETION_TOKENS
            if body.get("max_completion_tokens")
            else TokensFrom.MAX_TOKENS
        )
        return features.max_output_tokens, source
    return DEFAULT_OUTPUT_TOKENS, TokensFrom.DEFAULT


def explain(
    table: CompiledTable,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    endpoint: Endpoint = Endpoint.CHAT,
    *,
    health: HealthBook | None = None,
    budget_state: BudgetStateFn | None = None,
    now: float = 0.0,
    seed: int = DEFAULT_SEED,
) -> Explanation:
    """What the proxy would do with ``body`` on ``endpoint``, without sending anything.

    ``health`` is the live health (``None``: everything healthy, as offline);
    ``budget_state`` reports whether a route's budget is exhausted (see
    :data:`BudgetStateFn`); ``now`` is the clock ``health`` is read at.
    """
    out = Explanation(endpoint=endpoint, seed=seed)
    lowered = {k.lower(): v for k, v in headers.items()}
    model = body.get("model") if isinstance(body, Mapping) else None
    out.requested_model = model if isinstance(model, str) else None
    try:
        features = extract_features(body, endpoint)
    except ModelRouteError as exc:
        out.refusal = Refusal.of(exc)
        return out
    out.features = features
    out.output_tokens, out.output_tokens_from = _output_tokens(body, features)
    try:
        resolution = resolve_request(RouteIndex(table), features.model, body, lowered)
    except ModelRouteError as exc:
        out.refusal = Refusal.of(exc)
        if exc.route is not None:
            out.classified_by = exc.route
        return out
    route = resolution.route
    out.route = route
    out.classified_by = resolution.classified_by
    out.category = resolution.category
    out.classify_reason = resolution.reason

    sticky = None
    if route.sticky is not None:
        name = route.sticky.header.lower()
        sticky = lowered.get(name)
        if sticky is not None:
            out.sticky_header = name
    out.budget = budget_view(route, budget_state)
    downgrade = bool(
        out.budget and out.budget.exhausted and out.budget.action is BudgetAction.DOWNGRADE
    )
    result = plan(
        route,
        table,
        features,
        health if health is not None else HealthBook(),
        now,
        random.Random(seed),
        sticky=sticky,
        cheapest_first=downgrade,
    )
    out.plan = result
    if out.budget is not None and out._budget_rejects():
        # the dispatcher refuses before planning, with the budget's own message
        out.refusal = Refusal.of(BudgetExhausted(out.budget.detail, route=route.name))
    elif not result.candidates:
        out.refusal = Refusal.of(no_candidates_error(route, features, result))
    return out


def explain_json(
    table: CompiledTable,
    raw: bytes | str,
    headers: Mapping[str, str],
    endpoint: Endpoint = Endpoint.CHAT,
    *,
    health: HealthBook | None = None,
    budget_state: BudgetStateFn | None = None,
    now: float = 0.0,
    seed: int = DEFAULT_SEED,
) -> Explanation:
    """:func:`explain` on a raw request body; JSON that doesn't parse is refused as the proxy does."""
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        out = Explanation(endpoint=endpoint, seed=seed)
        out.refusal = Refusal.of(MalformedJSON(f"request body is not valid JSON: {exc}"))
        return out
    # A body that is not an object is refused by extract_features, in the proxy's words.
    return explain(
        table,
        body,
        headers,
        endpoint,
        health=health,
        budget_state=budget_state,
        now=now,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------
# live


def describe_live(record: RequestRecord, used: Plan | None) -> dict[str, Any]:
    """A finished live request in ``explain``'s vocabulary, for the admin ``/explain`` ring.

    ``used`` is the plan the dispatcher tried (``None`` when the request was
    refused before planning: malformed, unknown model, budget reject).
    Carries no prompt text, no headers and no keys: only what metrics and
    spans already carry, plus the routing decision.
    """
    served = record.served
    doc: dict[str, Any] = {
        "startedAt": record.wall_started,
        "endpoint": record.endpoint,
        "requestedModel": record.requested_model,
        "stream": record.stream,
        "route": record.route,
        "namespace": record.namespace,
        "category": record.category,
        "categoryReason": record.classify_reason,
        "stickyArm": record.sticky_arm,
        "budgetAction": record.budget_action,
        "candidates": [],
        "dropped": [],
        "panic": False,
        "attempts": [
            {
                "number": a.number,
                "target": a.target,
                "region": a.region,
                "hedge": a.hedge,
                "fallbackReason": a.fallback_reason,
                "result": a.result,
                "status": a.status,
                "durationSeconds": round(a.duration, 6),
                "detail": a.detail,
            }
            for a in record.attempts
        ],
        "servedBy": served.candidate if served else None,
        "fallback": record.fallback,
        "outcome": record.outcome,
        "status": record.status,
        "errorCode": record.error_code,
        "durationSeconds": round(record.duration, 6),
        "overheadSeconds": round(record.overhead, 6),
        "ttftSeconds": None if record.ttft is None else round(record.ttft, 6),
        "usage": {"inputTokens": record.input_tokens, "outputTokens": record.output_tokens},
        "cost": {
            "usd": usd(record.cost_usd),
            "unpricedInputTokens": record.unpriced_input_tokens,
            "unpricedOutputTokens": record.unpriced_output_tokens,
        },
    }
    if used is not None:
        doc["candidates"] = [candidate_row(i, c) for i, c in enumerate(used.candidates, 1)]
        doc["dropped"] = [dropped_row(d) for d in used.dropped]
        doc["panic"] = used.panic
    return doc
