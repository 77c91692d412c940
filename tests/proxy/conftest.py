"""Fixtures: fake providers on free loopback ports and a proxy in front of them.

Everything binds 127.0.0.1, uses port 0, and is stopped by the fixture's
teardown; tests that need a dead region use a port nothing listens on.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from modelroute.proxy.process import RunningProxy, start_proxy
from modelroute.proxy.server import ProxyConfig

from modelroute.devtools.fake_provider import FakeProvider, Knobs, start_fake_provider


@dataclass
class Fake:
    fake: FakeProvider
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def knobs(self) -> Knobs:
        return self.fake.knobs


def dead_port() -> int:
    """A port nothing listens on (bound, then closed: connect is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FakeFactory = Callable[..., Awaitable[Fake]]
ProxyFactory = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def fakes() -> AsyncIterator[FakeFactory]:
    started: list[Fake] = []

    async def make(region: str = "us-east-1", seed: int = 1, **knobs: Any) -> Fake:
        fake, runner, port = await start_fake_provider(
            "127.0.0.1", 0, Knobs(region=region, **knobs), seed
        )
        started.append(Fake(fake, runner, port))
        return started[-1]

    yield make
    for f in started:
        await f.runner.cleanup()


@pytest.fixture
async def proxies(tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    started: list[RunningProxy] = []

    async def make(routes_yaml: str, **config: Any) -> RunningProxy:
        path = tmp_path / f"routes-{len(started)}.yaml"
        path.write_text(routes_yaml)
        cfg = ProxyConfig(
            listen=("127.0.0.1", 0), admin=("127.0.0.1", 0), route_files=[path], **config
        )
        started.append(await start_proxy(cfg))
        return started[-1]

    yield make
    for p in started:
        await p.stop()


def provider_yaml(
    name: str,
    endpoints: list[tuple[str, str]],
    models: str = "",
    *,
    env: str = "FAKE_PROVIDER_KEY",
    spec: str = "",
) -> str:
    """A ModelProvider manifest; ``spec`` adds lines to its spec (each indented two spaces)."""
    eps = "\n".join(f'    - {{region: {r}, baseURL: "{u}"}}' for r, u in endpoints)
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {{name: {name}, namespace: default}}
spec:
  api: openai
  endpoints:
{eps}
  credentials: {{env: {env}}}
{spec}{models}
---
"""


def route_yaml(name: str, models: list[str], targets: list[str], extra: str = "") -> str:
    tgts = "\n".join(f"    - {t}" for t in targets)
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: {name}, namespace: default}}
spec:
  models: [{", ".join(models)}]
  targets:
{tgts}
{extra}
---
"""


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FAKE_PROVIDER_KEY", "sk-provider-secret")
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(var, raising=False)
    return "sk-provider-secret"
