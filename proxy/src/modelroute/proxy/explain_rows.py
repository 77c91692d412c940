"""The vocabulary ``modelroute explain`` and the admin ``/explain`` ring share.

Both describe routing decisions in the same words – a candidate row, a
dropped row, dollars, the budget's effect, a refusal – so an operator can
compare a prediction with what a live request did.  :mod:`.explain` builds
explanations from these; :func:`.explain.describe_live` renders finished
requests with them.  Pure: no aiohttp, no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modelroute.resources import BudgetAction

from .errors import ModelRouteError
from .router import Candidate, Dropped
from .table import CompiledRoute, CompiledTarget

BudgetStateFn = Callable[[CompiledRoute], object | None]
"""``budget_state(route)`` – the live proxy's ``BudgetBook.state`` fits: ``None`` while no
budget is tracked, else a state whose ``exhausted`` says whether it is spent (an object
without that attribute counts as exhausted) and whose ``message()`` (or ``str()``) says how."""


def usd(value: float | None) -> float | None:
    """JSON-stable dollars: rounded well below a cent's millionth, no float noise."""
    return None if value is None else round(value, 10)


def price_text(per_mtok: float | None) -> str:
    return "unknown" if per_mtok is None else f"${per_mtok:.2f}"


def cost_text(amount: float | None) -> str:
    """Dollars with six decimals, or as many as a tiny amount needs to show its digits."""
    if amount is None:
        return "unknown"
    if amount == 0 or amount >= 0.000001:
        return f"${amount:.6f}"
    decimals = 1 - math.floor(math.log10(amount))  # two significant digits
    return f"${amount:.{decimals}f}".rstrip("0")


def output_cost(target: CompiledTarget, output_tokens: int) -> float | None:
    """USD for ``output_tokens`` on ``target`` at its catalogue price; ``None`` when unpriced."""
    if target.output_usd_per_mtok is None:
        return None
    return output_tokens * target.output_usd_per_mtok / 1_000_000


def candidate_row(
    position: int, cand: Candidate, output_tokens: int | None = None
) -> dict[str, Any]:
    """One candidate as both ``explain`` and ``/explain`` print it."""
    t = cand.target
    row: dict[str, Any] = {
        "position": position,
        "target": t.key,
        "provider": t.provider,
        "model": t.model,
        "upstreamModel": t.upstream_model,
        "region": cand.region,
        "baseURL": cand.base_url,
        "tier": t.tier,
        "weight": t.weight,
        "outputUSDPerMTok": t.output_usd_per_mtok,
        "inputUSDPerMTok": t.input_usd_per_mtok,
        "note": cand.note,
    }
    if output_tokens is not None:
        row["estimatedOutputUSD"] = usd(output_cost(t, output_tokens))
    return row


def dropped_row(drop: Dropped) -> dict[str, Any]:
    return {
        "target": drop.target,
        "region": drop.region,
        "reason": drop.reason.value,
        "detail": drop.detail,
    }


def _budget_window(route: CompiledRoute) -> str:
    b = route.budget
    if b is None:
        return ""
    for value, unit in (
        (b.usd_per_hour, "hour"),
        (b.usd_per_day, "day"),
        (b.usd_per_month, "month"),
    ):
        if value is not None:
            return f"${value:.2f} per {unit}"
    return ""  # pragma: no cover - the resource model requires one window


ACTION_EFFECT = {
    BudgetAction.ALERT: "alert only: served in the normal order, the overspend is reported",
    BudgetAction.DOWNGRADE: "downgrade: candidates reordered cheapest first",
    BudgetAction.REJECT: "reject: nothing would be sent (429 budget_exceeded)",
}


@dataclass(frozen=True, slots=True)
class BudgetView:
    """The route's budget and what it does to this request."""

    window: str  # "$50.00 per day"
    action: BudgetAction
    exhausted: bool | None  # None: no live spend known (offline explain)
    state: str  # exhausted | within budget | unknown
    detail: str  # the budget book's own words, when it has some
    effect: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "action": self.action.value,
            "exhausted": self.exhausted,
            "state": self.state,
            "detail": self.detail,
            "effect": self.effect,
        }


def budget_view(route: CompiledRoute, budget_state: BudgetStateFn | None) -> BudgetView | None:
    if route.budget is None:
        return None
    action = route.budget.action
    window = _budget_window(route)
    if budget_state is None:
        return BudgetView(
            window,
            action,
            None,
            "unknown",
            "live spend is not known here; explained as within budget",
            f"when exhausted, {ACTION_EFFECT[action]}",
        )
    state = budget_state(route)
    if state is None:
        return BudgetView(window, action, False, "within budget", "", "none")
    if not getattr(state, "exhausted", True):
        spent, limit = getattr(state, "spent_usd", None), getattr(state, "limit_usd", None)
        detail = (
            f"${spent:.4f} of ${limit:.2f} spent in this window"
            if isinstance(spent, float | int) and isinstance(limit, float | int)
            else ""
        )
        return BudgetView(window, action, False, "within budget", detail, "none")
    return BudgetView(window, action, True, "exhausted", _describe(state), ACTION_EFFECT[action])


def _describe(state: object) -> str:
    """A budget state in words: its ``message()`` (``budget.BudgetState`` has one), else ``str``."""
    message = getattr(state, "message", None)
    return str(message()) if callable(message) else str(state)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The error the proxy would answer with, in its own code and status."""

    code: str
    status: int
    message: str

    @classmethod
    def of(cls, error: ModelRouteError) -> Refusal:
        return cls(error.code, error.status, error.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "status": self.status, "message": self.message}


def text_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
