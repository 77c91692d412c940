"""Golden tests of ``explain``: each request file against ``routes.yaml``, text and JSON.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/explain`` and
review the diff: the goldens are what an operator reads, so a change in them is a change
in the product.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from modelroute.proxy.budget import BudgetBook
from modelroute.proxy.explain import BudgetStateFn, explain_json
from modelroute.proxy.health import HealthBook
from modelroute.proxy.keys import candidate_key
from modelroute.proxy.request import Endpoint
from modelroute.proxy.table import CompiledRoute, CompiledTable

from .helpers import GOLDEN, REQUESTS

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NOW = 1000.0


def _route(table: CompiledTable, name: str) -> CompiledRoute:
    return next(r for r in table.routes if r.name == name)


def _sick_general(table: CompiledTable) -> HealthBook:
    """Every health reason at once on route `general`: an open circuit, a Retry-After hold,
    an ejected region."""
    book = HealthBook()
    assert table.failover is not None
    book.configure(table.failover.ejection, table.failover.failback_delay_seconds)
    route = _route(table, "general")
    breaker = book.breaker(
        "general",
        candidate_key("gateway", "deepseek-v4-flash", "us-east"),
        route.circuit_breaker,
    )
    for i in range(route.circuit_breaker.failure_threshold):
        breaker.record_failure(NOW - 10 + i)
    book.hold(candidate_key("gateway", "qwen3-32b", "us-east"), NOW + 12.5)
    region = book.region("gateway", "eu-west")
    assert region is not None
    for _ in range(table.failover.ejection.min_requests):
        region.record(False, None, NOW - 1)
    return book


def _all_open(table: CompiledTable) -> HealthBook:
    """Every candidate of `regional-cn` has an open circuit: panic mode tries them anyway."""
    book = HealthBook()
    route = _route(table, "regional-cn")
    for target in route.targets:
        for region in target.regions:
            breaker = book.breaker(
                route.name,
                candidate_key(target.provider, target.model, region),
                route.circuit_breaker,
            )
            for _ in range(route.circuit_breaker.failure_threshold):
                breaker.record_failure(NOW - 1)
    return book


def _slow_flash(table: CompiledTable) -> HealthBook:
    """deepseek-v4-flash answers in 3 s against route `ab`'s 2 s budget: moved back."""
    book = HealthBook()
    latency = book.target_latency("gateway/deepseek-v4-flash")
    for i in range(40):
        latency.add(3.0, NOW - 5 + i * 0.1)
    fast = book.target_latency("gateway/qwen3-32b")
    for i in range(40):
        fast.add(0.8, NOW - 5 + i * 0.1)
    return book


CLOCK = 1_764_000_000.0  # 2025-11-24 16:00 UTC: a fixed window, so the goldens repeat


def _spent(route_name: str, usd: float) -> Callable[[CompiledTable], BudgetStateFn]:
    """The live proxy's own budget book, with ``usd`` already spent on one route."""

    def make(table: CompiledTable) -> BudgetStateFn:
        book = BudgetBook(clock=lambda: CLOCK)
        book.spend(_route(table, route_name), usd)
        return book.state

    return make


@dataclass(frozen=True)
class Case:
    name: str
    request: str
    headers: dict[str, str] = field(default_factory=dict)
    endpoint: Endpoint = Endpoint.CHAT
    health: Callable[[CompiledTable], HealthBook] | None = None
    budget: Callable[[CompiledTable], BudgetStateFn] | None = None
    serves: bool = True


CASES = [
    Case("plain_chat", "plain_chat.json"),
    Case("vision_parts", "vision_parts.json"),
    Case("long_prompt", "long_prompt.json"),
    Case("residency", "residency.json"),
    Case("auto_reasoning", "auto_reasoning.json"),
    Case("auto_light", "auto_light.json"),
    Case("auto_regional_cn", "auto_regional_cn.json"),
    Case("auto_header_cn", "auto_light.json", headers={"X-User-Region": "cn"}),
    Case("auto_vision", "auto_vision.json"),
    Case("unknown_model", "unknown_model.json", serves=False),
    Case("audio_no_target", "audio_no_target.json", serves=False),
    Case("too_long_for_all", "too_long_for_all.json", serves=False),
    Case("missing_messages", "missing_messages.json", serves=False),
    Case("embeddings_no_target", "embeddings.json", endpoint=Endpoint.EMBEDDINGS, serves=False),
    Case("unhealthy", "plain_chat.json", health=_sick_general),
    Case("sticky_arm", "ab.json", headers={"X-User-Id": "user-42"}),
    Case("latency_demoted", "ab.json", health=_slow_flash),
    Case("panic", "residency.json", health=_all_open),
    Case("budget_downgrade", "auto_reasoning.json", budget=_spent("reasoning", 51.2)),
    Case("budget_within", "auto_reasoning.json", budget=_spent("reasoning", 12.5)),
    Case("budget_reject", "capped.json", budget=_spent("capped", 2.31), serves=False),
]


def _check(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path} is missing; run with UPDATE_GOLDEN=1 to create it, then review it")
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path.name} differs; UPDATE_GOLDEN=1 regenerates it"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Case, table: CompiledTable) -> None:
    raw = (REQUESTS / case.request).read_bytes()
    answer = explain_json(
        table,
        raw,
        case.headers,
        case.endpoint,
        health=case.health(table) if case.health else None,
        budget_state=case.budget(table) if case.budget else None,
        now=NOW,
        seed=0,
    )
    assert answer.would_serve is case.serves
    _check(GOLDEN / f"{case.name}.txt", answer.to_text())
    _check(GOLDEN / f"{case.name}.json", answer.to_json() + "\n")


def test_every_request_file_has_a_case() -> None:
    used = {c.request for c in CASES}
    files = {p.name for p in REQUESTS.glob("*.json")}
    assert files == used


def test_no_stale_goldens() -> None:
    expected = {f"{c.name}.{ext}" for c in CASES for ext in ("txt", "json")}
    assert {p.name for p in GOLDEN.iterdir()} == expected
