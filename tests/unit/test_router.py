"""The router: which route a request lands on, which targets may serve it, in which order.

Plans are built from real compiled tables (the same YAML users write), real
request features and a real HealthBook on an injected clock, so each rule
is checked end to end through the pure core.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from modelroute.proxy.compiler import CompileResult
from modelroute.proxy.endpoints import EndpointHealth, EndpointSettings, ErrorKind
from modelroute.proxy.errors import UnknownModel
from modelroute.proxy.health import HealthBook
from modelroute.proxy.keys import candidate_key
from modelroute.proxy.request import Endpoint, RequestFeatures, extract_features
from modelroute.proxy.router import (
    LATENCY_MIN_SAMPLES,
    DropReason,
    Plan,
    RouteIndex,
    plan,
    resolve_request,
    weighted_order,
)
from modelroute.proxy.table import CompiledTable, CompiledTarget

from modelroute.resources import Ejection, HealthCheck, OutlierDetection

Compile = Callable[[str], CompileResult]
NOW = 1_000.0

PROVIDER = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: gw}
spec:
  endpoints:
    - {region: us-east, baseURL: "http://127.0.0.1:1/v1"}
    - {region: eu-west, baseURL: "http://127.0.0.1:2/v1"}
  models:
    - {name: tiny, outputUSDPerMTok: 0.05, contextTokens: 1000}
---
"""


def route_yaml(name: str, spec: str) -> str:
    return (
        "apiVersion: modelroute.io/v1alpha1\nkind: ModelRoute\n"
        f"metadata: {{name: {name}}}\nspec:\n{spec}---\n"
    )


def chat(text: str = "hello", **extra: Any) -> RequestFeatures:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    return extract_features(body, Endpoint.CHAT)


IMAGE_CHAT = extract_features(
    {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    },
    Endpoint.CHAT,
)


class Planner:
    """One compiled table, a health book and a fixed RNG: ``planner(features) -> Plan``."""

    def __init__(self, table: CompiledTable, route: str) -> None:
        self.table = table
        self.route = next(r for r in table.routes if r.name == route)
        self.health = HealthBook()
        self.rng = random.Random(7)

    def __call__(
        self, features: RequestFeatures | None = None, now: float = NOW, **kw: Any
    ) -> Plan:
        return plan(self.route, self.table, features or chat(), self.health, now, self.rng, **kw)


@pytest.fixture
def planner(compile_text: Compile) -> Callable[[str], Planner]:
    def _make(spec: str) -> Planner:
        result = compile_text(PROVIDER + route_yaml("r", spec))
        assert result.ok, [str(p) for p in result.errors]
        return Planner(result.table, "r")

    return _make


def keys(p: Plan) -> list[str]:
    return [c.key for c in p.candidates]


def targets(p: Plan) -> list[str]:
    seen: dict[str, None] = {}
    for c in p.candidates:
        seen.setdefault(c.target.model, None)
    return list(seen)


# -- route resolution --------------------------------------------------------------------------


def test_route_index_prefers_the_most_specific_header_match(compile_text: Compile) -> None:
    t = "  targets: [{provider: gw, model: glm-5}]\n"
    text = (
        PROVIDER
        + route_yaml("plain", "  models: [general]\n" + t)
        + route_yaml(
            "cn", "  models: [general]\n  matchHeaders: [{name: X-Region, value: cn}]\n" + t
        )
        + route_yaml(
            "cn-gold",
            "  models: [general]\n  matchHeaders: [{name: x-region, value: cn},"
            " {name: x-tier, value: gold}]\n" + t,
        )
    )
    result = compile_text(text)
    assert result.ok
    index = RouteIndex(result.table)

    def name(headers: dict[str, str]) -> str | None:
        found = index.resolve("general", headers)
        return found.name if found else None

    assert name({}) == "plain"
    assert name({"x-region": "cn"}) == "cn"
    assert name({"x-region": "cn", "x-tier": "gold"}) == "cn-gold"
    assert name({"x-region": "us", "x-tier": "gold"}) == "plain"
    assert index.resolve("gpt-4o", {}) is None


def test_unknown_model_lists_the_served_aliases(compile_text: Compile, example_text: str) -> None:
    index = RouteIndex(compile_text(example_text).table)
    resolved = resolve_request(index, "gpt-4o", {}, {})
    assert resolved.route.name == "general" and resolved.classified_by is None
    with pytest.raises(UnknownModel, match="'gpt-5'") as info:
        resolve_request(index, "gpt-5", {}, {})
    assert "general, gpt-4o" in info.value.message


def test_example_plans_tier_zero_first_in_both_regions(
    compile_text: Compile, example_text: str
) -> None:
    table = compile_text(example_text).table
    p = Planner(table, "general")()
    assert keys(p) == [
        "global-api/deepseek-v4-flash@us-east-1",
        "global-api/deepseek-v4-flash@eu-west-1",
        "global-api/qwen3-32b@us-east-1",
        "global-api/qwen3-32b@eu-west-1",
    ]
    assert p.candidates[0].base_url == "http://127.0.0.1:18101/v1"
    assert p.dropped == [] and not p.panic


# -- eligibility: never bypassed --------------------------------------------------------------


def test_image_request_drops_targets_without_vision(planner: Callable[[str], Planner]) -> None:
    pl = planner(
        "  models: [m]\n  targets:\n"
        "    - {provider: gw, model: deepseek-v4-flash}\n"
        "    - {provider: gw, model: qwen3-vl-32b, tier: 1}\n"
        "    - {provider: gw, model: kimi-k2.5, tier: 2}\n"
    )
    p = pl(IMAGE_CHAT)
    assert targets(p) == ["qwen3-vl-32b"]
    dropped = {d.target: d for d in p.dropped}
    assert set(dropped) == {"gw/deepseek-v4-flash", "gw/kimi-k2.5"}
    assert all(d.reason is DropReason.CAPABILITY for d in dropped.values())
    assert "vision" in dropped["gw/kimi-k2.5"].detail
    assert targets(pl(chat())) == ["deepseek-v4-flash", "qwen3-vl-32b", "kimi-k2.5"]


def test_prompt_over_the_context_window_drops_the_target(
    planner: Callable[[str], Planner],
) -> None:
    pl = planner(
        "  models: [m]\n  targets:\n"
        "    - {provider: gw, model: tiny}\n"
        "    - {provider: gw, model: glm-5, tier: 1}\n"
    )
    assert targets(pl(chat("short"))) == ["tiny", "glm-5"]
    long = pl(chat("word " * 1000))  # ~1250 tokens > 1000
    assert targets(long) == ["glm-5"]
    (drop,) = long.dropped
    assert drop.reason is DropReason.CONTEXT_WINDOW and "1000-token" in drop.detail
    # max_tokens counts too: a short prompt asking for a long answer doesn't fit either
    assert targets(pl(chat("short", max_tokens=2000))) == ["glm-5"]


def test_residency_drops_targets_with_no_allowed_region(compile_text: Compile) -> None:
    text = PROVIDER.replace(
        '    - {region: eu-west, baseURL: "http://127.0.0.1:2/v1"}\n',
        '    - {region: eu-west, baseURL: "http://127.0.0.1:2/v1"}\n'
        '    - {region: cn-east, baseURL: "http://127.0.0.1:3/v1"}\n',
    ) + route_yaml(
        "r",
        "  models: [m]\n  residency: {regions: [cn-east]}\n  targets:\n"
        "    - {provider: gw, model: glm-5}\n"
        "    - {provider: gw, model: qwen3-32b, tier: 1, regions: [us-east]}\n",
    )
    result = compile_text(text)
    assert result.ok, [str(p) for p in result.errors]
    p = Planner(result.table, "r")()
    assert keys(p) == ["gw/glm-5@cn-east"]
    (drop,) = p.dropped
    assert drop.reason is DropReason.RESIDENCY and "cn-east" in drop.detail
    # residency is never bypassed, not even in panic mode
    pl = Planner(result.table, "r")
    pl.health.hold("gw/glm-5@cn-east", NOW + 30)
    panic = pl()
    assert panic.panic and keys(panic) == ["gw/glm-5@cn-east"]


# -- health ----------------------------------------------------------------------------------


TWO_TIERS = (
    "  models: [m]\n  targets:\n"
    "    - {provider: gw, model: deepseek-v4-flash}\n"
    "    - {provider: gw, model: qwen3-32b, tier: 1}\n"
)


def test_retry_after_hold_drops_one_region_until_it_expires(
    planner: Callable[[str], Planner],
) -> None:
    pl = planner(TWO_TIERS)
    held = candidate_key("gw", "deepseek-v4-flash", "us-east")
    pl.health.hold(held, NOW + 5)
    p = pl()
    assert keys(p)[0] == "gw/deepseek-v4-flash@eu-west"
    (drop,) = p.dropped
    assert drop.reason is DropReason.RATE_LIMITED and drop.region == "us-east"
    assert keys(pl(now=NOW + 5.01))[0] == held


def test_open_breaker_drops_the_candidate(planner: Callable[[str], Planner]) -> None:
    pl = planner(TWO_TIERS + "  circuitBreaker: {failureThreshold: 2, openSeconds: 10}\n")
    key = candidate_key("gw", "deepseek-v4-flash", "eu-west")
    breaker = pl.health.breaker("r", key, pl.route.circuit_breaker)
    breaker.record_failure(NOW - 1)
    breaker.record_failure(NOW - 0.5)
    p = pl()
    assert key not in keys(p)
    (drop,) = p.dropped
    assert drop.reason is DropReason.CIRCUIT_OPEN and "2 failures" in drop.detail
    assert key in keys(pl(now=NOW + 10))  # half-open: one probe may go


def test_ejected_region_is_dropped_for_every_target(planner: Callable[[str], Planner]) -> None:
    pl = planner(TWO_TIERS)
    pl.health.configure(Ejection(error_rate=0.5, min_requests=4), failback_delay=30)
    region = pl.health.region("gw", "us-east")
    assert region is not None
    for i in range(4):
        region.record(False, None, NOW - 1 + i * 0.1)
    p = pl()
    assert keys(p) == ["gw/deepseek-v4-flash@eu-west", "gw/qwen3-32b@eu-west"]
    assert {d.reason for d in p.dropped} == {DropReason.REGION_EJECTED}
    assert "error rate" in p.dropped[0].detail


def test_panic_mode_when_everything_is_unhealthy(planner: Callable[[str], Planner]) -> None:
    pl = planner(TWO_TIERS)
    for model in ("deepseek-v4-flash", "qwen3-32b"):
        for region in ("us-east", "eu-west"):
            pl.health.hold(candidate_key("gw", model, region), NOW + 60)
    p = pl()
    assert p.panic
    assert keys(p) == [
        "gw/deepseek-v4-flash@us-east",
        "gw/deepseek-v4-flash@eu-west",
        "gw/qwen3-32b@us-east",
        "gw/qwen3-32b@eu-west",
    ]
    assert all("panic" in c.note for c in p.candidates)
    assert len(p.dropped) == 4 and all(d.reason.is_health for d in p.dropped)


def test_panic_tries_fast_failures_first_then_the_least_recently_failed(
    planner: Callable[[str], Planner],
) -> None:
    """A refusal costs a millisecond to retry, a black hole a whole firstByteMs."""
    pl = planner(TWO_TIERS + "  circuitBreaker: {failureThreshold: 1, openSeconds: 60}\n")
    a_us, a_eu, b_us, b_eu = (
        candidate_key("gw", m, r)
        for m in ("deepseek-v4-flash", "qwen3-32b")
        for r in ("us-east", "eu-west")
    )
    # (when it failed, whether it was a timeout)
    for key, at, slow in (
        (a_us, 5.0, True),
        (a_eu, 9.0, False),
        (b_us, 2.0, False),
        (b_eu, 1.0, True),
    ):
        pl.health.breaker("r", key, pl.route.circuit_breaker).record_failure(NOW - 10 + at)
        pl.health.failed(key, NOW - 10 + at, slow=slow)
    p = pl()
    assert p.panic
    assert keys(p) == [b_us, a_eu, b_eu, a_us]


def test_no_panic_while_one_candidate_is_healthy(planner: Callable[[str], Planner]) -> None:
    pl = planner(TWO_TIERS)
    for key in ("gw/deepseek-v4-flash@us-east", "gw/deepseek-v4-flash@eu-west"):
        pl.health.hold(key, NOW + 60)
    pl.health.hold("gw/qwen3-32b@us-east", NOW + 60)
    p = pl()
    assert not p.panic and keys(p) == ["gw/qwen3-32b@eu-west"]
    # the ones dropped for their health are kept aside, in plan order, for a request whose
    # candidates' one network path fails it (dispatch/attempts.py)
    assert [c.key for c in p.reserve] == [
        "gw/deepseek-v4-flash@us-east",
        "gw/deepseek-v4-flash@eu-west",
        "gw/qwen3-32b@us-east",
    ]


def test_panic_puts_a_candidate_answered_since_its_failure_first(
    planner: Callable[[str], Planner],
) -> None:
    """A healed region answering panic's requests beats one whose last word was a failure.

    Even when its endpoint's last probe failed later: the answer came after it.
    """
    pl = planner(TWO_TIERS + "  circuitBreaker: {failureThreshold: 1, openSeconds: 60}\n")
    a_us, a_eu, b_us, b_eu = (
        candidate_key("gw", m, r)
        for m in ("deepseek-v4-flash", "qwen3-32b")
        for r in ("us-east", "eu-west")
    )
    for key, at in ((a_us, 1.0), (a_eu, 2.0), (b_us, 3.0), (b_eu, 4.0)):
        pl.health.breaker("r", key, pl.route.circuit_breaker).record_failure(NOW - 10 + at)
        pl.health.failed(key, NOW - 10 + at, slow=True)
    east = pl.health.endpoints.endpoints["gw@us-east"] = EndpointHealth(
        EndpointSettings(OutlierDetection(), HealthCheck())
    )
    # a failed probe there, lately (not ejecting: the breakers keep it out here)
    east.last_error_at, east.last_error = NOW - 1, ErrorKind.PROBE_TIMEOUT
    pl.health.answered(b_eu)
    p = pl()
    assert p.panic and not p.reserve
    assert keys(p) == [b_eu, a_eu, a_us, b_us]  # us-east's probe failure is the freshest news
    east.answered(NOW - 0.5)  # and a request answered at us-east since that probe
    assert keys(pl()) == [b_eu, a_us, a_eu, b_us]  # each by its own last failure again


# -- ordering --------------------------------------------------------------------------------


def test_tiers_come_in_order_whatever_the_weights(planner: Callable[[str], Planner]) -> None:
    pl = planner(
        "  models: [m]\n  targets:\n"
        "    - {provider: gw, model: glm-5, tier: 2, weight: 1000}\n"
        "    - {provider: gw, model: qwen3-32b, tier: 1, weight: 1000}\n"
        "    - {provider: gw, model: deepseek-v4-flash, tier: 0, weight: 1}\n"
    )
    for _ in range(50):
        assert targets(pl()) == ["deepseek-v4-flash", "qwen3-32b", "glm-5"]


def test_standby_weight_zero_is_last_in_its_tier(planner: Callable[[str], Planner]) -> None:
    pl = planner(
        "  models: [m]\n  targets:\n"
        "    - {provider: gw, model: glm-5, weight: 0}\n"
        "    - {provider: gw, model: qwen3-32b, weight: 1}\n"
        "    - {provider: gw, model: deepseek-v4-flash, weight: 1}\n"
        "    - {provider: gw, model: kimi-k2.5, tier: 1}\n"
    )
    firsts = Counter()
    for _ in range(200):
        order = targets(pl())
        assert order[2:] == ["glm-5", "kimi-k2.5"]
        firsts[order[0]] += 1
    assert set(firsts) == {"qwen3-32b", "deepseek-v4-flash"}  # both live arms get traffic


def test_cheapest_first_for_a_budget_downgrade(planner: Callable[[str], Planner]) -> None:
    pl = planner(
        "  models: [m]\n  targets:\n"
        "    - {provider: gw, model: kimi-k2.5}\n"
        "    - {provider: gw, model: qwen3.5-32b, tier: 1}\n"
        "    - {provider: gw, model: glm-5, tier: 1}\n"
        "    - {provider: gw, model: qwen3-8b, tier: 2}\n"
    )
    assert targets(pl())[0] == "kimi-k2.5"  # normally: tier 0 first, however dear
    # unpriced qwen3.5-32b is not "free": it goes last
    assert targets(pl(cheapest_first=True)) == ["qwen3-8b", "glm-5", "kimi-k2.5", "qwen3.5-32b"]


def _slow(pl: Planner, model: str, seconds: float, samples: int) -> None:
    tracker = pl.health.target_latency(f"gw/{model}")
    for i in range(samples):
        tracker.add(seconds, NOW - 5 + i * 0.01)


def test_target_over_the_latency_budget_is_moved_back(planner: Callable[[str], Planner]) -> None:
    pl = planner(
        "  models: [m]\n  latencyBudgetMs: 900\n  targets:\n"
        "    - {provider: gw, model: deepseek-v4-flash, weight: 1000}\n"
        "    - {provider: gw, model: qwen3-32b, weight: 1}\n"
        "    - {provider: gw, model: glm-5, tier: 1}\n"
    )
    _slow(pl, "deepseek-v4-flash", 2.0, LATENCY_MIN_SAMPLES)
    _slow(pl, "qwen3-32b", 0.3, LATENCY_MIN_SAMPLES)
    p = pl()
    assert targets(p) == ["qwen3-32b", "deepseek-v4-flash", "glm-5"]  # demoted within its tier
    slow = next(c for c in p.candidates if c.target.model == "deepseek-v4-flash")
    assert "over the 900 ms budget" in slow.note


def test_too_few_latency_samples_do_not_demote(planner: Callable[[str], Planner]) -> None:
    pl = planner(
        "  models: [m]\n  latencyBudgetMs: 900\n  targets:\n"
        "    - {provider: gw, model: deepseek-v4-flash, weight: 10000}\n"
        "    - {provider: gw, model: qwen3-32b, weight: 1}\n"
    )
    _slow(pl, "deepseek-v4-flash", 2.0, LATENCY_MIN_SAMPLES - 1)
    firsts = Counter(targets(pl())[0] for _ in range(50))
    assert firsts["deepseek-v4-flash"] >= 45


def test_no_latency_budget_means_no_demotion(planner: Callable[[str], Planner]) -> None:
    pl = planner(
        "  models: [m]\n  targets:\n"
        "    - {provider: gw, model: deepseek-v4-flash}\n"
        "    - {provider: gw, model: qwen3-32b, tier: 1}\n"
    )
    _slow(pl, "deepseek-v4-flash", 20.0, 100)
    assert targets(pl())[0] == "deepseek-v4-flash"


# -- weighted_order and sticky arms ----------------------------------------------------------


def arm(name: str, weight: int, tier: int = 0) -> CompiledTarget:
    return CompiledTarget(
        provider="gw", model=name, upstream_model=name, tier=tier, weight=weight, regions=("r",)
    )


@pytest.mark.parametrize("weights", [(1, 1), (1, 3), (5, 3, 2), (90, 10)])
def test_weighted_first_pick_follows_the_weights(weights: tuple[int, ...]) -> None:
    arms = [arm(f"a{i}", w) for i, w in enumerate(weights)]
    rng = random.Random(20260101)
    draws = 20_000
    firsts = Counter(weighted_order(arms, rng)[0].model for _ in range(draws))
    total = sum(weights)
    for i, w in enumerate(weights):
        share = firsts[f"a{i}"] / draws
        assert share == pytest.approx(w / total, abs=0.015), (weights, dict(firsts))


def test_weighted_order_returns_every_live_arm_then_standby() -> None:
    arms = [arm("standby", 0), arm("a", 2), arm("b", 1)]
    rng = random.Random(1)
    for _ in range(100):
        order = [t.model for t in weighted_order(arms, rng)]
        assert sorted(order[:2]) == ["a", "b"] and order[2] == "standby"
    assert [t.model for t in weighted_order([arm("x", 0)], rng)] == ["x"]


def test_sticky_key_is_deterministic_and_splits_by_weight() -> None:
    arms = [arm("a", 3), arm("b", 1)]
    first = [t.model for t in weighted_order(arms, random.Random(1), sticky="user-42")]
    for seed in range(20):
        again = [t.model for t in weighted_order(arms, random.Random(seed), sticky="user-42")]
        assert again == first
    shares = Counter(
        weighted_order(arms, random.Random(0), sticky=f"user-{i}")[0].model for i in range(8000)
    )
    assert shares["a"] / 8000 == pytest.approx(0.75, abs=0.03)


def test_sticky_plan_keeps_a_user_on_one_arm(planner: Callable[[str], Planner]) -> None:
    pl = planner(
        "  models: [m]\n  sticky: {header: x-user}\n  targets:\n"
        "    - {provider: gw, model: deepseek-v4-flash}\n"
        "    - {provider: gw, model: qwen3-32b}\n"
    )
    firsts = {targets(pl(sticky="alice"))[0] for _ in range(30)}
    assert len(firsts) == 1
    spread = {targets(pl(sticky=f"user-{i}"))[0] for i in range(200)}
    assert spread == {"deepseek-v4-flash", "qwen3-32b"}
