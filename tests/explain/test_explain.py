"""Behaviour of ``explain`` beyond the goldens: it agrees with the router, is deterministic,
prices honestly, and renders live requests in the same words."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from modelroute.proxy.compiler import compile_local
from modelroute.proxy.errors import ModelRouteError
from modelroute.proxy.events import AttemptRecord, RequestRecord
from modelroute.proxy.explain import (
    DEFAULT_OUTPUT_TOKENS,
    describe_live,
    explain,
    explain_json,
    no_candidates_error,
)
from modelroute.proxy.health import HealthBook
from modelroute.proxy.request import Endpoint, extract_features
from modelroute.proxy.router import Dropped, DropReason, Plan, RouteIndex, plan, resolve_request
from modelroute.proxy.table import CompiledTable

from modelroute.resources import load_text

from .helpers import REQUESTS


def _body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads((REQUESTS / name).read_bytes())
    return body


def _chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _compile(yaml_text: str) -> CompiledTable:
    result = compile_local(load_text(yaml_text, "inline"))
    assert result.ok, [str(p) for p in result.errors]
    return result.table


PROVIDER = """
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: p}
spec:
  endpoints: [{region: r1, baseURL: "http://127.0.0.1:9/v1"}]
  builtinCatalogue: false
  models:
    - {name: cheap, outputUSDPerMTok: 0.5, inputUSDPerMTok: 0.1}
    - {name: dear, outputUSDPerMTok: 4.0}
"""


def test_candidates_are_the_routers_own_plan(table: CompiledTable) -> None:
    body = _body("plain_chat.json")
    answer = explain(table, body, {}, seed=7)
    features = extract_features(body, Endpoint.CHAT)
    route = resolve_request(RouteIndex(table), "general", body, {}).route
    direct = plan(route, table, features, HealthBook(), 0.0, random.Random(7))
    assert answer.plan is not None
    assert [(c.key, c.note) for c in answer.plan.candidates] == [
        (c.key, c.note) for c in direct.candidates
    ]


def test_same_seed_same_answer_and_the_seed_is_what_varies(table: CompiledTable) -> None:
    body = _body("plain_chat.json")
    assert explain(table, body, {}, seed=3).to_dict() == explain(table, body, {}, seed=3).to_dict()
    firsts = []
    for seed in range(200):
        p = explain(table, body, {}, seed=seed).plan
        assert p is not None
        firsts.append(p.candidates[0].target.model)
    # general splits tier 0 3:1 between deepseek-v4-flash and qwen3-32b
    share = firsts.count("deepseek-v4-flash") / len(firsts)
    assert 0.6 < share < 0.9
    assert "qwen3-32b" in firsts


def test_sticky_arm_follows_the_user_not_the_seed(table: CompiledTable) -> None:
    body = _body("ab.json")

    def first(user: str, seed: int) -> str:
        p = explain(table, body, {"x-user-id": user}, seed=seed).plan
        assert p is not None
        return p.candidates[0].target.model

    for user in ("user-1", "user-2", "user-3"):
        assert len({first(user, seed) for seed in range(10)}) == 1
    arms = {first(f"user-{i}", 0) for i in range(40)}
    assert arms == {"deepseek-v4-flash", "qwen3-32b"}


def test_output_tokens_come_from_the_request_or_the_default(table: CompiledTable) -> None:
    unset = explain(table, _chat("light"), {})
    assert unset.output_tokens == DEFAULT_OUTPUT_TOKENS
    assert unset.output_tokens_from == "default"
    both = explain(table, _chat("light", max_completion_tokens=100, max_tokens=900), {})
    assert (both.output_tokens, both.output_tokens_from) == (100, "max_completion_tokens")
    only = explain(table, _chat("reasoning", max_tokens=2000), {})
    cost = only.to_dict()["cost"]
    assert cost["firstCandidate"] == "gateway/kimi-k2.5"
    assert cost["firstCandidateOutputUSD"] == pytest.approx(2000 * 3.00 / 1e6)
    assert "2,000 x $3.00/M = $0.006000" in only.to_text()


def test_unpriced_is_unknown_never_zero(table: CompiledTable) -> None:
    answer = explain(table, _body("plain_chat.json"), {})
    rows = [r for r in answer.to_dict()["candidates"] if r["model"] == "qwen3.5-32b"]
    assert rows
    assert all(r["estimatedOutputUSD"] is None for r in rows)
    assert all(r["outputUSDPerMTok"] is None for r in rows)
    text = answer.to_text()
    line = next(ln for ln in text.splitlines() if "qwen3.5-32b" in ln)
    assert "unknown" in line
    assert "$0.00" not in line
    assert "unpriced in the catalogue" in text


def test_a_priced_input_is_counted() -> None:
    table = _compile(
        PROVIDER
        + """---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: r}
spec:
  models: [r]
  targets: [{provider: p, model: cheap}, {provider: p, model: dear, tier: 1}]
"""
    )
    answer = explain(table, _chat("r", "x" * 4000, max_tokens=1000), {})
    cost = answer.to_dict()["cost"]
    assert answer.features is not None
    prompt = answer.features.prompt_tokens
    assert cost["input"] == "priced"
    assert cost["inputUSD"] == pytest.approx(prompt * 0.1 / 1e6)
    assert cost["worstCaseCandidate"] == "p/dear"
    assert cost["worstCaseOutputUSD"] == pytest.approx(1000 * 4.0 / 1e6)
    assert f"~{prompt:,} prompt tokens x $0.10/M" in answer.to_text()


def test_header_matches_pick_the_more_specific_route() -> None:
    table = _compile(
        PROVIDER
        + """---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: plain}
spec:
  models: [m]
  targets: [{provider: p, model: cheap}]
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: premium-tenant}
spec:
  models: [m]
  matchHeaders: [{name: X-Tenant, value: gold}]
  targets: [{provider: p, model: dear}]
"""
    )
    assert explain(table, _chat("m"), {}).to_dict()["route"] == "plain"
    assert explain(table, _chat("m"), {"X-Tenant": "gold"}).to_dict()["route"] == "premium-tenant"


def test_a_category_without_a_route_is_refused_naming_the_classifier() -> None:
    table = _compile(
        PROVIDER
        + """---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: auto}
spec: {models: [auto], classify: true}
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: general}
spec:
  models: [general]
  targets: [{provider: p, model: cheap}]
"""
    )
    ok = explain(table, _chat("auto", "Write a haiku about autumn."), {})
    assert ok.would_serve and ok.category == "general"
    answer = explain(table, _body("auto_reasoning.json"), {})
    assert not answer.would_serve
    doc = answer.to_dict()
    assert doc["refusal"]["code"] == "model_not_found"
    assert doc["refusal"]["status"] == 404
    assert "'reasoning'" in doc["refusal"]["message"]
    assert doc["classifiedBy"] == "auto"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"model": "general",', "invalid_json"),
        (b"[1, 2]", "invalid_request"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "missing_model"),
        (b'{"model": "general", "messages": [], "max_tokens": 5}', "invalid_request"),
        (
            b'{"model": "general", "max_tokens": -1, "messages": [{"content": "x"}]}',
            "invalid_request",
        ),
    ],
)
def test_malformed_requests_are_refused_not_raised(
    table: CompiledTable, raw: bytes, code: str
) -> None:
    answer = explain_json(table, raw, {})
    assert not answer.would_serve
    assert answer.refusal is not None
    assert answer.refusal.code == code
    assert answer.refusal.status == 400
    assert "REFUSED, 400 " + code in answer.to_text()
    orjson.dumps(answer.to_dict())  # still a complete, serialisable document


def test_describe_live_uses_the_same_vocabulary(table: CompiledTable) -> None:
    body = _body("plain_chat.json")
    used = explain(table, body, {}, seed=0).plan
    assert used is not None
    first, second = used.candidates[0], used.candidates[1]
    record = RequestRecord(
        endpoint="chat",
        operation="chat",
        requested_model="general",
        stream=False,
        started=0.0,
        wall_started=1_764_000_000.0,
        route="general",
    )
    a1 = AttemptRecord(
        1,
        first.target.provider,
        first.target.model,
        first.target.upstream_model,
        first.region,
        "127.0.0.1",
        0.0,
        result="5xx",
        status=503,
        duration=0.12,
    )
    a2 = AttemptRecord(
        2,
        second.target.provider,
        second.target.model,
        second.target.upstream_model,
        second.region,
        "127.0.0.1",
        0.2,
        fallback_reason="5xx",
        result="ok",
        status=200,
        duration=0.4,
    )
    record.attempts = [a1, a2]
    record.served = a2
    record.outcome, record.status, record.duration, record.upstream_wait = "ok", 200, 0.61, 0.52
    record.input_tokens, record.output_tokens, record.cost_usd = 30, 1000, 0.00025
    doc = describe_live(record, used)
    orjson.dumps(doc)
    offline = explain(table, body, {}, seed=0).to_dict()
    assert [
        {k: v for k, v in c.items() if k != "estimatedOutputUSD"} for c in offline["candidates"]
    ] == doc["candidates"]
    assert doc["servedBy"] == f"{second.target.key}@{second.region}"
    assert doc["fallback"] is True
    assert [a["result"] for a in doc["attempts"]] == ["5xx", "ok"]
    assert doc["attempts"][1]["fallbackReason"] == "5xx"
    assert doc["overheadSeconds"] == pytest.approx(0.09)
    assert doc["cost"]["usd"] == pytest.approx(0.00025)
    refused = describe_live(record, None)
    assert refused["candidates"] == [] and refused["dropped"] == []


@pytest.mark.parametrize(
    "reasons",
    [
        [DropReason.CAPABILITY],
        [DropReason.CONTEXT_WINDOW],
        [DropReason.CONTEXT_WINDOW, DropReason.CAPABILITY],
        [DropReason.RESIDENCY, DropReason.CONTEXT_WINDOW],
        [],
    ],
)
def test_refusal_words_are_the_dispatchers(table: CompiledTable, reasons: list[DropReason]) -> None:
    """explain and the live proxy raise the very same error (router.no_candidates_error):
    the code and status follow the mix of drop reasons."""
    route = next(r for r in table.routes if r.name == "regional-cn")
    features = extract_features(_chat("regional-cn", max_tokens=10), Endpoint.CHAT)
    empty = Plan(
        route=route,
        dropped=[Dropped(f"p/m{i}", None, reason, "why") for i, reason in enumerate(reasons)],
    )
    error = no_candidates_error(route, features, empty)
    assert isinstance(error, ModelRouteError)
    expected = {
        frozenset({DropReason.CONTEXT_WINDOW}): ("context_length_exceeded", 400),
        frozenset({DropReason.RESIDENCY, DropReason.CONTEXT_WINDOW}): ("residency_violation", 422),
    }.get(frozenset(reasons), ("no_eligible_target", 400))
    assert (error.code, error.status) == expected
    assert "regional-cn" in error.message
