"""explain and report against a real proxy: offline answers match what the sidecar does.

A fake provider and the proxy run in-process on free loopback ports and are
stopped by the fixture; requests go through the proxy's real HTTP API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from modelroute.proxy.compiler import compile_local
from modelroute.proxy.explain import explain
from modelroute.proxy.process import RunningProxy, start_proxy
from modelroute.proxy.server import ProxyConfig

from modelroute.cli import main
from modelroute.devtools.fake_provider import Knobs, start_fake_provider
from modelroute.resources import load_files

OUTPUT_TOKENS = 1000

ROUTES = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {{name: fake}}
spec:
  endpoints: [{{region: local, baseURL: "{url}"}}]
  credentials: {{env: FAKE_PROVIDER_KEY}}
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: general}}
spec:
  models: [general]
  targets:
    - {{provider: fake, model: deepseek-v4-flash, tier: 0, weight: 1}}
    - {{provider: fake, model: qwen3-32b, tier: 0, weight: 1}}
    - {{provider: fake, model: qwen3-vl-32b, tier: 1}}
    - {{provider: fake, model: glm-5, tier: 2}}
  sticky: {{header: x-user-id}}
"""


@pytest.fixture
async def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningProxy]:
    monkeypatch.setenv("FAKE_PROVIDER_KEY", "sk-fake")
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(var, raising=False)
    _, fake_runner, port = await start_fake_provider(
        "127.0.0.1", 0, Knobs(output_tokens=OUTPUT_TOKENS), 1
    )
    runner: web.AppRunner = fake_runner
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url=f"http://127.0.0.1:{port}/v1"), encoding="utf-8")
    proxy = await start_proxy(
        ProxyConfig(listen=("127.0.0.1", 0), admin=("127.0.0.1", 0), route_files=[routes])
    )
    try:
        yield proxy
    finally:
        await proxy.stop()
        await runner.cleanup()


def _chat(text: str, image: bool = False) -> dict[str, Any]:
    content: Any = text
    if image:
        content = [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]
    return {"model": "general", "messages": [{"role": "user", "content": content}]}


async def test_offline_explain_predicts_the_live_target(
    live: RunningProxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = compile_local(load_files([tmp_path / "routes.yaml"])).table
    cases = [(_chat("hello"), {"x-user-id": f"user-{i}"}) for i in range(8)]
    cases.append((_chat("what is on this picture?", image=True), {"x-user-id": "user-1"}))
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for body, headers in cases:
            predicted = explain(table, body, headers)
            assert predicted.plan is not None
            first = predicted.plan.candidates[0]
            async with http.post(
                f"{live.base_url}/chat/completions", json=body, headers=headers
            ) as resp:
                assert resp.status == 200
                served = resp.headers["x-modelroute-target"]
            assert served == f"{first.target.key}@{first.region}", predicted.to_text()

            # the admin /explain ring shows the same plan in the same words
            assert live.admin_url is not None
            async with http.get(f"{live.admin_url}/explain?n=1") as resp:
                [recent] = (await resp.json())["requests"]
            offline = [
                {k: v for k, v in c.items() if k != "estimatedOutputUSD"}
                for c in predicted.to_dict()["candidates"]
            ]
            assert recent["candidates"] == offline
            assert recent["servedBy"] == served
            assert recent["usage"]["outputTokens"] == OUTPUT_TOKENS

    # the cost report from the live /metrics: 9 x 1000 output tokens, the premium is glm-5
    assert live.admin_url is not None
    code = await asyncio.to_thread(
        main, ["report", "--metrics", f"{live.admin_url}/metrics", "--json"]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    [route] = doc["routes"]
    assert route["route"] == "general"
    assert route["outputTokens"] == 9 * OUTPUT_TOKENS
    assert route["maxOutputUSDPerMTok"] == pytest.approx(1.92)
    prices = {"deepseek-v4-flash": 0.25, "qwen3-32b": 0.28, "qwen3-vl-32b": 0.52}
    spent = sum(
        m["outputTokens"] * prices[m["model"]] / 1e6 for m in route["models"] if m["outputTokens"]
    )
    assert route["costUSD"] == pytest.approx(spent)
    assert doc["savedFraction"] == pytest.approx(1 - spent / (9 * OUTPUT_TOKENS * 1.92 / 1e6))
