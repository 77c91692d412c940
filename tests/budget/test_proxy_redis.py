"""Two sidecars of one namespace share a route budget through a real Redis."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from modelroute.proxy.process import start_proxy
from modelroute.proxy.server import ProxyConfig

from modelroute.devtools.fake_provider import Knobs, start_fake_provider

from ..bench.conftest import free_port, server, wait_ready
from .conftest import RedisServer

ROUTES = """
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {{name: api, namespace: team-a}}
spec:
  endpoints: [{{region: us-east-1, baseURL: "{url}"}}]
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: general, namespace: team-a}}
spec:
  models: [general]
  targets: [{{provider: api, model: kimi-k2.5}}]
  budget: {{usdPerDay: 0.0001, action: reject}}
"""

BODY = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}


async def test_spend_in_one_sidecar_exhausts_the_budget_in_the_other(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, fake_runner, port = await start_fake_provider(knobs=Knobs(output_tokens=20))
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url=f"http://127.0.0.1:{port}/v1"))
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    sidecars = []
    try:
        for _ in range(2):
            config = ProxyConfig(
                listen=("127.0.0.1", 0),
                admin=("127.0.0.1", 0),
                route_files=[routes],
                redis_url=url,
                namespace="team-a",
            )
            sidecars.append(await start_proxy(config))
        a, b = sidecars
        async with aiohttp.ClientSession() as http:
            # 20 tokens x $3/M = $0.00006 per answer: two answers in A spend the $0.0001
            for _ in range(2):
                async with http.post(a.base_url + "/chat/completions", json=BODY) as resp:
                    assert resp.status == 200
            assert await a.proxy.budgets.sync()
            assert await b.proxy.budgets.sync()
            async with http.post(b.base_url + "/chat/completions", json=BODY) as resp:
                assert resp.status == 429
                error = (await resp.json())["error"]
            assert error["code"] == "budget_exceeded"
            assert "$0.0001/day budget" in error["message"]
            async with http.get(b.admin_url + "/status") as resp:
                budgets = (await resp.json())["budgets"]
            assert budgets["shared"] is True
            assert budgets["routes"][0]["exhausted"] is True
        assert fake.stats.requests == 2
    finally:
        for sidecar in sidecars:
            await sidecar.stop()
        await fake_runner.cleanup()


MODELROUTE = Path(sys.executable).parent / "modelroute"
NO_TRACING = {"OTEL_SDK_DISABLED": "true"}
WARM_ROUTE = """
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: warm, namespace: team-a}}
spec:
  models: [warm]
  targets: [{{provider: api, model: kimi-k2.5}}]
"""
PROPAGATION_BOUND_S = 10.0  # two sync intervals (1 s each) with a lot of slack for a busy CI box


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST JSON; (status, JSON body) for answers and errors alike (urllib raises on 4xx/5xx)."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return exc.code, json.loads(exc.read())


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc = json.loads(resp.read())
    assert isinstance(doc, dict)
    return doc


def wait_shared(admin: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Until the sidecar says its budgets are shared through Redis; fail if it exits."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"
        doc = get_json(admin + "/status")
        if doc["budgets"]["shared"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{admin} never connected to Redis: {doc.get('budgets')}")


def exhausted(admin: str) -> bool:
    """Does the sidecar's /status say route ``general``'s budget is spent (and shared)?"""
    budgets = get_json(admin + "/status")["budgets"]
    assert budgets["shared"] is True, budgets
    [general] = [r for r in budgets["routes"] if r["route"] == "general"]
    return bool(general["exhausted"])


def test_two_sidecar_processes_share_one_budget_through_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two real ``modelroute proxy --redis`` processes: A spends the budget, B refuses after."""
    up, api_a, admin_a, api_b, admin_b = (free_port() for _ in range(5))
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url=f"http://127.0.0.1:{up}/v1") + WARM_ROUTE.format())
    redis_url = f"redis://127.0.0.1:{redis_server.port}/0"

    def sidecar(api: int, admin: int) -> list[str]:
        return [
            str(MODELROUTE), "proxy", "--routes", str(routes), "--namespace", "team-a",
            "--redis", redis_url, "--listen", f"127.0.0.1:{api}",
            "--admin", f"127.0.0.1:{admin}", "--drain-seconds", "1",
        ]  # fmt: skip

    admin_b_url = f"http://127.0.0.1:{admin_b}"
    chat_a = f"http://127.0.0.1:{api_a}/v1/chat/completions"
    chat_b = f"http://127.0.0.1:{api_b}/v1/chat/completions"
    warm = json.dumps({**BODY, "model": "warm"}).encode()  # a route without a budget
    with (
        server([str(MODELROUTE), "fake-provider", "--listen", f"127.0.0.1:{up}",
                "--output-tokens", "20"], NO_TRACING) as fake,
        server(sidecar(api_a, admin_a), NO_TRACING) as a,
        server(sidecar(api_b, admin_b), NO_TRACING) as b,
    ):  # fmt: skip
        wait_ready(f"http://127.0.0.1:{up}/v1/chat/completions", fake, warm)
        for proc, chat, admin in ((a, chat_a, admin_a), (b, chat_b, admin_b)):
            wait_ready(chat, proc, warm)
            wait_shared(f"http://127.0.0.1:{admin}", proc)
        warmups = get_json(f"http://127.0.0.1:{up}/_stats")["requests"]
        assert not exhausted(admin_b_url)

        # A spends: 20 tokens x $3/M = $0.00006 an answer, so the third is refused
        spent_in_a = 0
        for _ in range(10):
            code, doc = post(chat_a, BODY)
            if code == 429:
                break
            assert code == 200, doc
            spent_in_a += 1
        assert (spent_in_a, code) == (2, 429), doc
        assert doc["error"]["code"] == "budget_exceeded"
        exhausted_at = time.monotonic()

        # B learns it through Redis within a sync interval or two, having spent nothing itself:
        # poll its /status (free), not its API (each answer there would spend B's own money)
        deadline = exhausted_at + PROPAGATION_BOUND_S
        while True:
            assert b.poll() is None, f"sidecar B exited with {b.returncode}"
            if exhausted(admin_b_url):
                break
            assert time.monotonic() < deadline, f"B not told in {PROPAGATION_BOUND_S} s"
            time.sleep(0.05)
        lag = time.monotonic() - exhausted_at
        code, doc = post(chat_b, BODY)
        assert code == 429, doc
        assert doc["error"]["code"] == "budget_exceeded", doc
        assert "$0.0001/day budget" in doc["error"]["message"]
        # the upstream saw the warm-ups and A's two answers: B sent nothing on the route
        upstream = get_json(f"http://127.0.0.1:{up}/_stats")["requests"] - warmups
        assert upstream == spent_in_a
        print(
            f"\n[redis budget] A exhausted after {spent_in_a} answers; B knew "
            f"{lag * 1000:.0f} ms later and refused with budget_exceeded, having spent nothing"
        )
