"""The cost report: spend per route and model, and what routing saved, from ``/metrics``.

The seeds' claim is that tiered routing cuts spend 40-60 % against sending
everything to the premium model.  A sidecar already counts what it spent;
this module turns one scrape of its ``/metrics`` (or a saved one, or a
federated dump of many sidecars) into the figure an operator can check:

* ``modelroute_cost_usd_total{route,model,provider}`` – USD actually spent;
* ``modelroute_tokens_total{route,model,provider,type}`` – tokens by type
  (``input``/``output``);
* ``modelroute_unpriced_tokens_total{route,model,provider,type}`` – tokens of
  models with no known price: listed as unpriced, never as $0;
* ``modelroute_route_max_output_price_usd{route}`` – USD per output token of
  the route's most expensive priced target.

Counterfactual per route = the route's *priced* output tokens × that maximum
price: what the same traffic would have cost had every token gone to the
premium target.  "Routing saved X %" is ``1 - spent / counterfactual``.
Unpriced tokens are left out of both sides (their real cost is unknown).
The catalogue prices output only; when some input was priced too, ``spent``
includes input cost while the counterfactual does not, so the saving shown is
a lower bound – the report says so.

Series are summed over any extra labels (``instance``, ``pod`` of a federated
scrape); the maximum price is the largest any sidecar reports.  Pure: parsing
with ``prometheus_client``'s own parsers, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from .keys import target_key

COST = "modelroute_cost_usd_total"
TOKENS = "modelroute_tokens_total"
UNPRICED = "modelroute_unpriced_tokens_total"
MAX_PRICE = "modelroute_route_max_output_price_usd"

_OUTPUT_TYPES = frozenset({"output", "completion"})
_INPUT_TYPES = frozenset({"input", "prompt"})


class CostReportError(ValueError):
    """The text is not an exposition, or not one from a modelroute sidecar."""


@dataclass
class ModelSpend:
    route: str
    provider: str
    model: str
    cost_usd: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    unpriced_input_tokens: float = 0.0
    unpriced_output_tokens: float = 0.0

    @property
    def priced_output_tokens(self) -> float:
        return max(0.0, self.output_tokens - self.unpriced_output_tokens)

    @property
    def priced_input_tokens(self) -> float:
        return max(0.0, self.input_tokens - self.unpriced_input_tokens)

    @property
    def unpriced_only(self) -> bool:
        """Every token of it was unpriced: its spend is unknown, not $0."""
        return not self.cost_usd and not self.priced_output_tokens and not self.priced_input_tokens

    @property
    def usd_per_mtok(self) -> float | None:
        """Effective USD per million priced output tokens (what this model cost per output)."""
        if not self.priced_output_tokens:
            return None
        return self.cost_usd / self.priced_output_tokens * 1_000_000


@dataclass
class RouteSpend:
    route: str
    models: list[ModelSpend] = field(default_factory=list)
    max_output_price_usd: float | None = None  # per token, from the gauge

    @property
    def cost_usd(self) -> float:
        return sum(m.cost_usd for m in self.models)

    @property
    def output_tokens(self) -> float:
        return sum(m.output_tokens for m in self.models)

    @property
    def priced_output_tokens(self) -> float:
        return sum(m.priced_output_tokens for m in self.models)

    @property
    def unpriced_output_tokens(self) -> float:
        return sum(m.unpriced_output_tokens for m in self.models)

    @property
    def unpriced_input_tokens(self) -> float:
        return sum(m.unpriced_input_tokens for m in self.models)

    @property
    def counterfactual_usd(self) -> float | None:
        """The same priced output tokens, all on the route's most expensive target."""
        if self.max_output_price_usd is None:
            return None
        return self.priced_output_tokens * self.max_output_price_usd

    @property
    def saved_usd(self) -> float | None:
        cf = self.counterfactual_usd
        return None if cf is None else cf - self.cost_usd

    @property
    def saved_fraction(self) -> float | None:
        cf = self.counterfactual_usd
        return None if not cf else 1 - self.cost_usd / cf


@dataclass
class CostReport:
    source: str
    routes: list[RouteSpend] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.routes)

    def _comparable(self) -> list[RouteSpend]:
        return [r for r in self.routes if r.counterfactual_usd is not None]

    @property
    def counterfactual_usd(self) -> float | None:
        comparable = self._comparable()
        if not comparable:
            return None
        return sum(r.counterfactual_usd or 0.0 for r in comparable)

    @property
    def saved_fraction(self) -> float | None:
        """Over the routes with a known maximum price only (the others can't be compared)."""
        cf = self.counterfactual_usd
        if not cf:
            return None
        return 1 - sum(r.cost_usd for r in self._comparable()) / cf

    @property
    def input_priced(self) -> bool:
        return any(m.priced_input_tokens > 0 for r in self.routes for m in r.models)

    # -- renderings ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "costUSD": _r(self.cost_usd),
            "counterfactualUSD": _r(self.counterfactual_usd),
            "savedFraction": _r(self.saved_fraction),
            "inputPriced": self.input_priced,
            "routes": [
                {
                    "route": r.route,
                    "costUSD": _r(r.cost_usd),
                    "outputTokens": r.output_tokens,
                    "pricedOutputTokens": r.priced_output_tokens,
                    "unpricedOutputTokens": r.unpriced_output_tokens,
                    "unpricedInputTokens": r.unpriced_input_tokens,
                    "maxOutputUSDPerMTok": _r(
                        None
                        if r.max_output_price_usd is None
                        else r.max_output_price_usd * 1_000_000
                    ),
                    "counterfactualUSD": _r(r.counterfactual_usd),
                    "savedUSD": _r(r.saved_usd),
                    "savedFraction": _r(r.saved_fraction),
                    "models": [
                        {
                            "provider": m.provider,
                            "model": m.model,
                            "costUSD": _r(m.cost_usd),
                            "inputTokens": m.input_tokens,
                            "outputTokens": m.output_tokens,
                            "unpricedInputTokens": m.unpriced_input_tokens,
                            "unpricedOutputTokens": m.unpriced_output_tokens,
                            "effectiveOutputUSDPerMTok": _r(m.usd_per_mtok),
                        }
                        for m in r.models
                    ],
                }
                for r in self.routes
            ],
        }

    def to_text(self) -> str:
        if not self.routes:
            return f"no traffic recorded yet in {self.source}\n"
        header = (
            "ROUTE",
            "PROVIDER/MODEL",
            "SPENT $",
            "OUTPUT TOK",
            "UNPRICED OUT",
            "UNPRICED IN",
            "ALL-PREMIUM $",
            "SAVED",
        )
        rows: list[tuple[str, ...]] = []
        for r in self.routes:
            for m in r.models:
                rows.append(
                    (
                        r.route,
                        target_key(m.provider, m.model),
                        "unpriced" if m.unpriced_only else _money(m.cost_usd),
                        _count(m.output_tokens),
                        _count(m.unpriced_output_tokens),
                        _count(m.unpriced_input_tokens),
                        "",
                        "",
                    )
                )
            rows.append(
                (
                    r.route,
                    "= route total",
                    _money(r.cost_usd),
                    _count(r.output_tokens),
                    _count(r.unpriced_output_tokens),
                    _count(r.unpriced_input_tokens),
                    _money(r.counterfactual_usd),
                    _percent(r.saved_fraction),
                )
            )
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        lines = [f"cost report from {self.source}", ""]
        for row in (header, *rows):
            cells = [
                cell.rjust(w) if i >= 2 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        lines.append("")
        lines.append(f"spent: {_money(self.cost_usd)}")
        cf = self.counterfactual_usd
        saved = self.saved_fraction
        if cf is None or saved is None:
            lines.append(
                "all on each route's premium target: unknown (no route reports "
                f"{MAX_PRICE}; is the sidecar older than this report?)"
            )
        else:
            lines.append(f"all on each route's premium target: {_money(cf)}")
            lines.append(f"routing saved you {_percent(saved)}")
        missing = [r.route for r in self.routes if r.max_output_price_usd is None]
        if missing and cf is not None:
            lines.append(
                f"not compared (no priced target, so no premium price): {', '.join(missing)}"
            )
        unpriced_out = sum(r.unpriced_output_tokens for r in self.routes)
        unpriced_in = sum(r.unpriced_input_tokens for r in self.routes)
        if unpriced_out or unpriced_in:
            lines.append(
                f"unpriced: {_count(unpriced_out)} output and {_count(unpriced_in)} input tokens "
                "had no known price; they are left out of both sides, not counted as $0"
            )
        if self.input_priced:
            lines.append(
                "some input tokens were priced: spend includes their cost but the premium "
                "figure prices output only, so the saving shown is a lower bound"
            )
        return "\n".join(lines) + "\n"


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 10)


def _money(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _families(text: str) -> Iterable[Metric]:
    if text.rstrip().endswith("# EOF"):
        return list(openmetrics_families(text))  # type: ignore[no-untyped-call]
    return list(text_string_to_metric_families(text))


def parse_exposition(text: str, source: str = "<metrics>") -> CostReport:
    """Aggregate one Prometheus text exposition (or OpenMetrics) into a :class:`CostReport`."""
    try:
        families = _families(text)
    except (ValueError, KeyError, IndexError) as exc:
        raise CostReportError(f"{source} is not a Prometheus text exposition: {exc}") from exc
    names = {f.name for f in families} | {s.name for f in families for s in f.samples}
    wanted = {COST, COST.removesuffix("_total"), TOKENS, TOKENS.removesuffix("_total")}
    if not names & wanted:
        raise CostReportError(
            f"{source} has no {COST} or {TOKENS}: is it a modelroute sidecar's /metrics?"
        )
    spends: dict[tuple[str, str, str], ModelSpend] = {}
    max_price: dict[str, float] = {}

    def spend(labels: dict[str, str]) -> ModelSpend:
        key = (labels.get("route", ""), labels.get("provider", ""), labels.get("model", ""))
        found = spends.get(key)
        if found is None:
            found = spends[key] = ModelSpend(*key)
        return found

    for family in families:
        for s in family.samples:
            if s.name == COST:
                spend(s.labels).cost_usd += s.value
            elif s.name in (TOKENS, UNPRICED):
                kind = s.labels.get("type", "")
                m = spend(s.labels)
                if s.name == TOKENS:
                    if kind in _OUTPUT_TYPES:
                        m.output_tokens += s.value
                    elif kind in _INPUT_TYPES:
                        m.input_tokens += s.value
                elif kind in _OUTPUT_TYPES:
                    m.unpriced_output_tokens += s.value
                elif kind in _INPUT_TYPES:
                    m.unpriced_input_tokens += s.value
            elif s.name == MAX_PRICE and s.value == s.value:  # NaN: no priced target
                name = s.labels.get("route", "")
                max_price[name] = max(max_price.get(name, 0.0), s.value)

    routes: dict[str, RouteSpend] = {}
    for key in sorted(spends):
        m = spends[key]
        if not (m.cost_usd or m.output_tokens or m.input_tokens or m.unpriced_output_tokens):
            continue
        route = routes.get(m.route)
        if route is None:
            route = routes[m.route] = RouteSpend(
                m.route, max_output_price_usd=max_price.get(m.route)
            )
        route.models.append(m)
    for route in routes.values():
        route.models.sort(key=lambda m: (-m.cost_usd, m.provider, m.model))
    return CostReport(source=source, routes=[routes[name] for name in sorted(routes)])
