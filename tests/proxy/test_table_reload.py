"""A route table reloaded from files takes effect, and the sidecar's own figures follow it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml

BODY = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}


async def post(url: str) -> tuple[int, dict[str, str], dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/chat/completions", json=BODY) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json()


async def test_error_rate_on_status_describes_the_table_now_served(
    fakes: FakeFactory, proxies: ProxyFactory, tmp_path: Path
) -> None:
    fake = await fakes(error_rate=1.0, error_status=500)
    routes = provider_yaml("api", [("us-east-1", fake.url)]) + route_yaml(
        "general", ["general"], ["{provider: api, model: deepseek-v4-flash}"]
    )
    proxy = await proxies(routes, reload_seconds=0.05)
    for _ in range(3):
        assert (await post(proxy.base_url))[0] == 503
    fake.knobs.update({"error_rate": 0.0})
    (tmp_path / "routes-0.yaml").write_text(routes.replace("deepseek-v4-flash", "qwen3-32b"))
    old = proxy.proxy.store.current.hash
    for _ in range(100):
        if proxy.proxy.store.current.hash != old:
            break
        await asyncio.sleep(0.05)
    assert (await post(proxy.base_url))[0] == 200
    async with aiohttp.ClientSession() as http, http.get(proxy.admin_url + "/status") as resp:
        health = (await resp.json())["health"]
    assert health["errorRate"] == 0.0
    assert health["errors"] == 3  # the lifetime count still tells the story


async def test_a_routes_directory_reloads_when_a_file_inside_is_edited(
    fakes: FakeFactory, tmp_path: Path
) -> None:
    from modelroute.proxy.process import start_proxy
    from modelroute.proxy.server import ProxyConfig

    fake = await fakes()
    folder = tmp_path / "routes"
    folder.mkdir()
    routes = provider_yaml("api", [("us-east-1", fake.url)]) + route_yaml(
        "general", ["general"], ["{provider: api, model: deepseek-v4-flash}"]
    )
    (folder / "routes.yaml").write_text(routes)
    running = await start_proxy(
        ProxyConfig(listen=("127.0.0.1", 0), admin=None, route_files=[folder], reload_seconds=0.05)
    )
    try:
        old = running.proxy.store.current.hash
        (folder / "routes.yaml").write_text(routes.replace("deepseek-v4-flash", "qwen3-32b"))
        for _ in range(100):
            if running.proxy.store.current.hash != old:
                break
            await asyncio.sleep(0.05)
        assert running.proxy.store.current.hash != old
    finally:
        await running.stop()
