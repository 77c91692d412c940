"""Hand-built request records and a small route table for the observer tests.

The records are filled the way the dispatcher fills them (``proxy/events.py``),
so these tests pin the observers' behaviour without needing the dispatcher.
Models and prices are the seeds' (deepseek-v4-flash $0.25/M output, kimi-k2.5
$3.00/M, qwen3.5-32b unpriced); input prices are unknown, as in the seeds.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from modelroute.proxy.events import AttemptRecord, RequestRecord
from modelroute.proxy.table import (
    CompiledEndpoint,
    CompiledProvider,
    CompiledRoute,
    CompiledTable,
    CompiledTarget,
)

from modelroute.resources import Budget

FLASH = ("deepseek", "deepseek-v4-flash", "us-east")
KIMI = ("kimi", "kimi-k2.5", "cn-north")
QWEN_UNPRICED = ("qwen", "qwen3.5-32b", "cn-hangzhou")


def attempt(
    number: int,
    target: tuple[str, str, str],
    result: str = "ok",
    *,
    fallback_reason: str | None = None,
    status: int | None = 200,
    upstream_model: str | None = None,
) -> AttemptRecord:
    provider, model, region = target
    return AttemptRecord(
        number=number,
        provider=provider,
        model=model,
        upstream_model=upstream_model or model,
        region=region,
        server_address=f"https://{region}.{provider}.example:8443/v1",
        started=time.perf_counter(),
        fallback_reason=fallback_reason,
        result=result,
        status=status,
        duration=0.2,
    )


def request(
    attempts: list[AttemptRecord],
    *,
    route: str | None = "general",
    outcome: str = "ok",
    input_tokens: int | None = 100,
    output_tokens: int | None = 20,
    price_per_mtok: float | None = 0.25,
    duration: float = 0.5,
    upstream_wait: float = 0.4998,
    ttft: float | None = 0.12,
    **fields: Any,
) -> RequestRecord:
    """A finished request served by its last ``ok`` attempt, priced like the dispatcher prices it."""
    served = next((a for a in reversed(attempts) if a.result == "ok"), None)
    record = RequestRecord(
        endpoint="chat",
        operation="chat",
        requested_model="general",
        stream=False,
        started=time.perf_counter(),
        wall_started=time.time(),
        route=route,
        attempts=attempts,
        served=served,
        outcome=outcome,
        status=200 if outcome == "ok" else 502,
        duration=duration,
        upstream_wait=upstream_wait,
        ttft=ttft,
        input_tokens=input_tokens if served else None,
        output_tokens=output_tokens if served else None,
        response_model=served.upstream_model if served else None,
        finish_reasons=("stop",) if served else (),
    )
    if served is not None and output_tokens:
        if price_per_mtok is None:
            record.unpriced_output_tokens = output_tokens
        else:
            record.cost_usd = output_tokens * price_per_mtok / 1_000_000
        # the seeds give no input prices: input tokens are unpriced, cost covers output only
        record.unpriced_input_tokens = input_tokens or 0
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def target(t: tuple[str, str, str], price: float | None, tier: int = 0) -> CompiledTarget:
    provider, model, region = t
    return CompiledTarget(
        provider=provider,
        model=model,
        upstream_model=model,
        tier=tier,
        regions=(region,),
        output_usd_per_mtok=price,
    )


def provider(t: tuple[str, str, str]) -> CompiledProvider:
    name, _, region = t
    return CompiledProvider(
        name=name,
        endpoints=(
            CompiledEndpoint(region=region, base_url=f"https://{region}.{name}.example/v1"),
        ),
    )


@pytest.fixture
def table() -> CompiledTable:
    return CompiledTable(
        namespace="llm-apps",
        providers=(provider(FLASH), provider(KIMI), provider(QWEN_UNPRICED)),
        routes=(
            CompiledRoute(
                name="general",
                aliases=("general",),
                targets=(
                    target(FLASH, 0.25),
                    target(QWEN_UNPRICED, None, tier=1),
                    target(KIMI, 3.00, tier=2),
                ),
                latency_budget_ms=1800,
                budget=Budget(usd_per_day=50),
            ),
            CompiledRoute(
                name="unpriced", aliases=("cheap",), targets=(target(QWEN_UNPRICED, None),)
            ),
        ),
    ).sealed()


TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"


def require_tool(name: str, where: str) -> str:
    """The path of a real tool from scripts/install-test-tools.sh (.tools/bin, else PATH).

    Missing, the test skips locally with the reason, but FAILS under CI=true so a
    broken installer can't turn a proof green.
    """
    local = TOOLS_BIN / name
    path = str(local) if os.access(local, os.X_OK) else shutil.which(name)
    if path is None:
        message = f"{name} not found in .tools/bin or on PATH; run scripts/install-test-tools.sh ({where})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's prometheus package (scripts/install-test-tools.sh)."""
    return require_tool("promtool", "apt: prometheus")


def free_port() -> int:
    """A loopback port free right now, for a server that can't report the one it bound to.

    Jaeger and Prometheus take their listen addresses from a config file and don't say
    which port ``:0`` became; the tiny race with another suite is handled by the callers
    retrying on a failed start.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def rec() -> SimpleNamespace:
    """The record builders and the seeds' targets, for the test modules."""
    return SimpleNamespace(
        attempt=attempt, request=request, FLASH=FLASH, KIMI=KIMI, QWEN_UNPRICED=QWEN_UNPRICED
    )
