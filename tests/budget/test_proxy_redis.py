"""Two sidecars of one namespace share a route budget through a real Redis."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from modelroute.proxy.server import ProxyConfig, start_proxy

from modelroute.devtools.fake_provider import Knobs, start_fake_provider

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
