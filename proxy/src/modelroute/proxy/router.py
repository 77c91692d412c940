"""Which route serves a request, and in which order its candidates are tried.

Pure and synchronous – no HTTP, no clock of its own – so ``modelroute explain``
shows exactly what the live proxy would do, and every rule is a unit test.

Order of a plan (the brief's request path):

1. drop targets that can't serve this request – capability (image parts need
   vision, audio needs audio, ``tools`` needs tools, embeddings need an
   embeddings model), context window (estimated prompt + ``max_tokens``),
   residency (no allowed region) – these are never bypassed;
2. tiers ascending; inside a tier, weighted order (or the sticky arm first),
   standby targets (weight 0) last, and targets whose live p99 is over the
   route's latency budget moved behind the healthy ones;
3. each target expands into its regions in failover order, so a failure in
   one region tries the same model in the next region before the next tier;
4. candidates that are unhealthy right now (circuit open, Retry-After hold,
   region ejected) are dropped – unless that would leave nothing, in which
   case they are tried anyway ("panic" mode, as Envoy does): a sick upstream
   is a better bet than a certain error.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import ContextLengthExceeded, NoEligibleTarget, ResidencyViolation, UnknownModel
from .health import CircuitState, HealthBook
from .keys import at_region, candidate_key, endpoint_key
from .request import RequestFeatures
from .table import CompiledProvider, CompiledRoute, CompiledTable, CompiledTarget

LATENCY_MIN_SAMPLES = 20


class DropReason(StrEnum):
    CAPABILITY = "capability"
    CONTEXT_WINDOW = "context_window"
    RESIDENCY = "residency"
    CIRCUIT_OPEN = "circuit_open"
    RATE_LIMITED = "rate_limited"
    REGION_EJECTED = "region_ejected"
    ENDPOINT_EJECTED = "endpoint_ejected"

    @property
    def is_health(self) -> bool:
        return self in (
            DropReason.CIRCUIT_OPEN,
            DropReason.RATE_LIMITED,
            DropReason.REGION_EJECTED,
            DropReason.ENDPOINT_EJECTED,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One place to send the request: a target in one region."""

    target: CompiledTarget
    provider: CompiledProvider
    region: str
    base_url: str
    key: str
    note: str = ""  # why it sits where it does (latency demotion, panic, sticky arm …)
    target_key: str = ""  # ``provider/model``; filled in from ``target`` when not given
    endpoint: str = ""  # ``provider@region``: the base URL, shared by every model there

    def __post_init__(self) -> None:
        if not self.target_key:  # computed once: plans reuse their candidates
            object.__setattr__(self, "target_key", self.target.key)
        if not self.endpoint:
            object.__setattr__(self, "endpoint", endpoint_key(self.target.provider, self.region))


@dataclass(frozen=True, slots=True)
class Dropped:
    target: str
    region: str | None
    reason: DropReason
    detail: str

    def __str__(self) -> str:
        where = at_region(self.target, self.region) if self.region else self.target
        return f"{where}: {self.reason.value} ({self.detail})"


@dataclass
class Plan:
    route: CompiledRoute
    candidates: list[Candidate] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    panic: bool = False
    # outside panic: the candidates dropped for their health, in plan order – what a
    # request may still try when every candidate left shares a network path that just
    # failed it (dispatch/attempts.py, ``_elsewhere``)
    reserve: list[Candidate] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# route resolution


class RouteIndex:
    """Alias → routes, most specific header match first; built once per table."""

    def __init__(self, table: CompiledTable) -> None:
        self.table = table
        by_alias: dict[str, list[CompiledRoute]] = {}
        for route in table.routes:
            for alias in route.aliases:
                by_alias.setdefault(alias, []).append(route)
        for routes in by_alias.values():
            routes.sort(key=lambda r: -len(r.match_headers))
        self.by_alias = by_alias
        self.by_name = {r.name: r for r in table.routes}

    def resolve(self, model: str, headers: Mapping[str, str]) -> CompiledRoute | None:
        for route in self.by_alias.get(model, ()):
            if all(headers.get(name) == value for name, value in route.match_headers):
                return route
        return None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The route a request lands on, and – when it was classified – the category and why."""

    route: CompiledRoute
    requested_model: str
    classified_by: str | None = None  # the classify route that sent it here
    category: str | None = None
    reason: str | None = None


def resolve_request(
    index: RouteIndex, model: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> Resolution:
    """Route for ``model``; a ``classify`` route hands the request to its category's route.

    Raises :class:`UnknownModel` naming what is served when nothing captures
    the model (or the category the classifier chose).
    """
    route = index.resolve(model, headers)
    if route is None:
        known = ", ".join(sorted(index.by_alias)) or "none (no route table loaded)"
        raise UnknownModel(
            f"no ModelRoute captures model {model!r} (with these headers); served models: {known}"
        )
    if not route.classify:
        return Resolution(route=route, requested_model=model)
    # imported on the first classify route, not at start-up: its rule tables are ~1 MB of
    # resident memory that sidecars without an ``auto`` route never need
    from .classifier import classifier_for

    answer = classifier_for(route.classifier).classify(body, headers)
    target = index.resolve(answer.model, headers)
    if target is None or target.classify:
        raise UnknownModel(
            f"route {route.name!r} classified the request as {answer.category!r} ({answer.reason}) "
            f"but no ModelRoute with targets captures model {answer.model!r}; add it to the "
            f"`models` of the route that should serve {answer.category} traffic",
            route=route.name,
        )
    return Resolution(
        route=target,
        requested_model=model,
        classified_by=route.name,
        category=answer.category,
        reason=answer.reason,
    )


# ---------------------------------------------------------------------------------------
# ordering


def _sticky_point(value: str) -> float:
    digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def weighted_order(
    targets: Sequence[CompiledTarget], rng: random.Random, sticky: str | None = None
) -> list[CompiledTarget]:
    """Weighted order without replacement (Efraimidis–Spirakis); weight 0 last.

    With a sticky key the first pick is a deterministic function of the key
    (the same user always lands on the same arm while the arms are unchanged),
    and the share of keys per arm follows the weights.
    """
    live = [t for t in targets if t.weight > 0]
    standby = [t for t in targets if t.weight == 0]
    if len(live) <= 1:
        return live + standby
    if sticky is not None:
        point = _sticky_point(sticky) * sum(t.weight for t in live)
        first = live[-1]
        acc = 0.0
        for t in live:
            acc += t.weight
            if point < acc:
                first = t
                break
        rest = [t for t in live if t is not first]
        return [first, *sorted(rest, key=lambda t: -t.weight), *standby]
    keyed = sorted(live, key=lambda t: rng.random() ** (1.0 / t.weight), reverse=True)
    return keyed + standby


def _eligibility(
    target: CompiledTarget, route: CompiledRoute, features: RequestFeatures
) -> Dropped | None:
    missing = features.needs.difference(target.capabilities)
    if missing:
        return Dropped(
            target.key,
            None,
            DropReason.CAPABILITY,
            f"request needs {', '.join(sorted(m.value for m in missing))}; "
            f"{target.model} has {', '.join(c.value for c in target.capabilities)}",
        )
    wanted = features.prompt_tokens + features.max_output_tokens
    if wanted > target.context_tokens:
        return Dropped(
            target.key,
            None,
            DropReason.CONTEXT_WINDOW,
            f"~{features.prompt_tokens} prompt + {features.max_output_tokens} output tokens "
            f"exceed the {target.context_tokens}-token context window",
        )
    if not target.regions:
        allowed = list(route.residency_regions or ())
        return Dropped(
            target.key, None, DropReason.RESIDENCY, f"no endpoint in the allowed regions {allowed}"
        )
    return None


def price_key(target: CompiledTarget) -> float:
    """Cheapest first; a model without a known price sorts last (unknown is not cheap)."""
    return target.output_usd_per_mtok if target.output_usd_per_mtok is not None else float("inf")


class _TargetShape:
    """What the router needs of one target, computed once per table (not per request)."""

    __slots__ = ("caps", "provider", "slots", "target", "tkey")

    def __init__(self, target: CompiledTarget, table: CompiledTable) -> None:
        self.target = target
        self.tkey = target.key
        self.caps = frozenset(target.capabilities)
        self.provider = table.provider(target.provider)
        # (region, candidate key, base URL, endpoint key) in failover order
        self.slots = tuple(
            (
                region,
                candidate_key(target.provider, target.model, region),
                self.provider.endpoint(region).base_url,
                endpoint_key(target.provider, region),
            )
            for region in target.regions
        )


class _RouteShape:
    """A route's targets as the router reads them, plus the candidates it has handed out.

    Built on a route's first request under a table and reused while that table
    serves: the capability sets, provider lookups, candidate keys and notes are
    the same for every request, and a :class:`Candidate` with a fixed note is
    immutable, so the same object serves every plan.  Only what changes per
    request – eligibility for *this* body, weights, latency and health – is
    decided in :func:`plan` each time.
    """

    __slots__ = ("by_target", "candidates", "route", "table", "targets", "tier_notes", "tiers")

    def __init__(self, route: CompiledRoute, table: CompiledTable) -> None:
        self.route = route
        self.table = table
        self.targets = tuple(_TargetShape(t, table) for t in route.targets)
        self.by_target = {id(s.target): s for s in self.targets}
        self.tier_notes = {t.tier: f"tier {t.tier}" for t in route.targets}
        self.tiers = _by_tier(list(route.targets))  # when every target is eligible (most requests)
        self.candidates: dict[tuple[int, str, str], Candidate] = {}

    def candidate(
        self, shape: _TargetShape, slot: tuple[str, str, str, str], note: str
    ) -> Candidate:
        region, key, base_url, endpoint = slot
        memo = (id(shape), region, note)
        found = self.candidates.get(memo)
        if found is None:
            found = Candidate(
                shape.target, shape.provider, region, base_url, key, note, shape.tkey, endpoint
            )
            if len(self.candidates) < _MEMO_LIMIT:  # notes with live figures vary: stay bounded
                self.candidates[memo] = found
        return found


_MEMO_LIMIT = 256


def _by_tier(targets: list[CompiledTarget]) -> list[tuple[int, list[CompiledTarget]]]:
    """Targets grouped by tier, lowest first, each group in route order."""
    return [
        (tier, [t for t in targets if t.tier == tier]) for tier in sorted({t.tier for t in targets})
    ]


def _shape(route: CompiledRoute, table: CompiledTable) -> _RouteShape:
    """The route's shape, kept with the table it belongs to (and gone with it on a reload)."""
    shapes: dict[int, _RouteShape] = table.derived.setdefault("route_shapes", {})
    found = shapes.get(id(route))
    if found is None or found.route is not route:
        found = shapes[id(route)] = _RouteShape(route, table)
    return found


def plan(
    route: CompiledRoute,
    table: CompiledTable,
    features: RequestFeatures,
    health: HealthBook,
    now: float,
    rng: random.Random,
    sticky: str | None = None,
    cheapest_first: bool = False,
) -> Plan:
    """Ordered candidates for one request, and every dropped one with its reason."""
    shape = _shape(route, table)
    result = Plan(route=route)
    eligible: list[CompiledTarget] = []
    needs = features.needs
    wanted = features.prompt_tokens + features.max_output_tokens
    for ts in shape.targets:
        target = ts.target
        if needs <= ts.caps and wanted <= target.context_tokens and ts.slots:
            eligible.append(target)
        else:
            dropped = _eligibility(target, route, features)
            assert dropped is not None
            result.dropped.append(dropped)

    ordered: list[tuple[CompiledTarget, str]] = []
    if cheapest_first:
        for t in sorted(eligible, key=lambda t: (price_key(t), t.tier)):
            ordered.append((t, _DOWNGRADE_NOTE))
    else:
        budget = route.latency_budget_ms
        tiers = shape.tiers if len(eligible) == len(shape.targets) else _by_tier(eligible)
        for tier, in_tier in tiers:
            if len(in_tier) > 1:
                in_tier = weighted_order(in_tier, rng, sticky)
            fast: list[tuple[CompiledTarget, str]] = []
            slow: list[tuple[CompiledTarget, str]] = []
            note = shape.tier_notes[tier]
            for t in in_tier:
                p99 = None
                if budget is not None:
                    p99 = health.target_latency(shape.by_target[id(t)].tkey).quantile(
                        0.99, now, LATENCY_MIN_SAMPLES
                    )
                if p99 is not None and budget is not None and p99 * 1000 > budget:
                    slow.append(
                        (t, f"p99 {p99 * 1000:.0f} ms over the {budget} ms budget: moved back")
                    )
                else:
                    fast.append((t, note + " (sticky arm)" if sticky and not fast else note))
            ordered.extend(fast + slow)

    reserve: list[Candidate] = []
    for target, note in ordered:
        ts = shape.by_target[id(target)]
        for slot in ts.slots:
            cand = shape.candidate(ts, slot, note)
            reason = _health_drop(route, target, slot, health, now)
            if reason is None:
                result.candidates.append(cand)
            else:
                result.dropped.append(reason)
                reserve.append(cand)
    if result.candidates:
        result.reserve = reserve
    elif reserve:
        result.panic = True
        ranked = sorted(reserve, key=lambda c: panic_rank(c, route, health, now))
        result.candidates = [
            Candidate(
                c.target,
                c.provider,
                c.region,
                c.base_url,
                c.key,
                "panic: every candidate unhealthy",
                c.target_key,
                c.endpoint,
            )
            for c in ranked
        ]
    return result


def panic_rank(
    cand: Candidate, route: CompiledRoute, health: HealthBook, now: float
) -> tuple[float, bool, bool, float]:
    """Sort key for unhealthy candidates in panic mode: the best bet first.

    1. not held by a Retry-After (the upstream asked us to wait: honour it
       while another is free), then the hold ending soonest;
    2. not under another request's half-open probe (the probe is one
       request; the others go elsewhere while it is out);
    3. a candidate whose last failure was fast (refused, a 5xx) before one
       whose last failure was a timeout: a refusal costs a millisecond to
       retry, a black hole the whole ``firstByteMs``;
    4. the least recently failed: it has had the longest to recover; one
       answered since its last failure counts as never failed (a healed
       region that answers panic's requests is the best bet there is).

    Plan order breaks ties (the sort is stable).
    """
    hold = max(0.0, health.held_until(cand.key) - now)
    breaker = health.breaker(route.name, cand.key, route.circuit_breaker)
    probing = breaker.state_at(now) is CircuitState.HALF_OPEN and breaker.probe_in_flight
    failed_at, slow = health.last_failure(cand.key)
    endpoint = health.endpoints.get(cand.endpoint)
    # a later probe failure, or another model's failed connect, there: the fresher evidence,
    # unless a request was answered there since (then the failure is the older news)
    if endpoint is not None:
        error_at = endpoint.last_error_at or -math.inf
        if error_at > failed_at and error_at > (endpoint.last_answered_at or -math.inf):
            failed_at, slow = error_at, endpoint.last_error_slow
    return hold, probing, slow, failed_at


_DOWNGRADE_NOTE = "budget downgrade: cheapest capable target first"


def _health_drop(
    route: CompiledRoute,
    target: CompiledTarget,
    slot: tuple[str, str, str, str],
    health: HealthBook,
    now: float,
) -> Dropped | None:
    region, key, _, endpoint_key = slot
    endpoint = health.endpoints.get(endpoint_key)
    if endpoint is not None and not endpoint.available(now):
        return Dropped(
            target.key,
            region,
            DropReason.ENDPOINT_EJECTED,
            f"endpoint {endpoint_key}: {endpoint.reason or 'ejected'}; "
            f"back after {max(0.0, endpoint.ejected_until - now):.1f}s at the earliest",
        )
    until = health.held_until(key)
    if until > now:
        return Dropped(
            target.key, region, DropReason.RATE_LIMITED, f"Retry-After: {until - now:.1f}s left"
        )
    region_health = health.region(target.provider, region)
    if region_health is not None and not region_health.available(now):
        return Dropped(
            target.key, region, DropReason.REGION_EJECTED, region_health.ejected_reason or "ejected"
        )
    breaker = health.breaker(route.name, key, route.circuit_breaker)
    if not breaker.available(now):
        return Dropped(
            target.key,
            region,
            DropReason.CIRCUIT_OPEN,
            f"{breaker.config.failure_threshold} failures in {breaker.config.window_seconds:g}s; "
            f"half-open in {max(0.0, breaker.reopens_at() - now):.1f}s",
        )
    return None


def no_candidates_error(
    route: CompiledRoute, features: RequestFeatures, result: Plan
) -> NoEligibleTarget:
    """The error for a plan with no candidate; the live proxy and ``explain`` both raise this."""
    reasons = {d.reason for d in result.dropped}
    listing = "; ".join(str(d) for d in result.dropped)
    if reasons == {DropReason.CONTEXT_WINDOW}:
        return ContextLengthExceeded(
            f"route {route.name!r}: the request (~{features.prompt_tokens} prompt tokens + "
            f"{features.max_output_tokens} max output) fits no target's context window: {listing}",
            route=route.name,
        )
    if DropReason.RESIDENCY in reasons:
        return ResidencyViolation(
            f"route {route.name!r}: no target may serve from the allowed regions "
            f"{list(route.residency_regions or ())}: {listing}",
            route=route.name,
        )
    return NoEligibleTarget(
        f"route {route.name!r} has no target that can serve this request "
        f"(it needs {features.describe_needs()}): {listing}",
        route=route.name,
    )
