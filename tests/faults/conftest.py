"""Fixtures for the fault-injection suite: fake providers, a proxy in front, and a load driver.

The pattern is the one of ``tests/proxy/conftest.py`` (loopback only, port 0,
everything stopped by the fixture's teardown), with two differences the
faults need:

* fakes run with aiohttp's ``handler_cancellation`` on, so a request the proxy
  abandons (a hedge loser, a first-byte timeout) shows up in the fake's
  ``stats.cancelled`` – the default (off since aiohttp 3.9) would let the
  handler sleep on unnoticed;
* a fake can be *killed* (its server stopped: connections reset, new ones
  refused) and the driver records per-request timings to measure failover.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from modelroute.proxy.process import RunningProxy

from modelroute.devtools.fake_provider import FakeProvider, Knobs

# the proxy fixture, the dead port and the manifest builders are tests/proxy's; this suite
# keeps its own fakes (they can be killed mid-test like a region going away)
from ..proxy.conftest import (  # noqa: F401  (the fixture, and names this suite's tests import)
    ProxyFactory,
    dead_port,
    proxies,
    route_yaml,
)
from ..proxy.conftest import provider_yaml as _provider_yaml

MODELS = """  models:
    - {name: chat-a, upstreamModel: chat-a-up, outputUSDPerMTok: 1.0, inputUSDPerMTok: 0.5,
       contextTokens: 32000, capabilities: [text, tools]}
    - {name: chat-b, upstreamModel: chat-b-up, outputUSDPerMTok: 2.0, inputUSDPerMTok: 1.0,
       contextTokens: 32000, capabilities: [text, tools]}
"""


@dataclass
class Fake:
    fake: FakeProvider
    runner: web.AppRunner
    port: int
    killed: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def knobs(self) -> Knobs:
        return self.fake.knobs

    @property
    def stats(self) -> Any:
        return self.fake.stats

    async def kill(self) -> None:
        """Stop the server: open connections are cut and new ones refused (a region gone)."""
        if not self.killed:
            self.killed = True
            await self.runner.cleanup()


FakeFactory = Callable[..., Awaitable[Fake]]


@pytest.fixture
async def fakes() -> AsyncIterator[FakeFactory]:
    started: list[Fake] = []

    async def make(region: str = "us-east-1", seed: int = 1, **knobs: Any) -> Fake:
        fake = FakeProvider(Knobs(region=region, **knobs), seed)
        runner = web.AppRunner(
            fake.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=0.5,
            handler_cancellation=True,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        started.append(Fake(fake, runner, port))
        return started[-1]

    yield make
    for f in started:
        await f.kill()


# ---------------------------------------------------------------------------------------
# measured figures, in the terminal summary

HERE = Path(__file__).parent
_figures: list[str] = []  # this conftest is imported once per session
_rootpath: list[Path] = []


@pytest.fixture(scope="session")
def figures() -> list[str]:
    """Lines of measured figures (failover window, chaos counts) for the terminal summary.

    A test appends one line per figure instead of printing it: ``make test`` runs
    pytest with ``-q`` and captured output, so a print is only ever seen when the
    test fails, and the figures are what a reviewer wants from a green run too.
    """
    return _figures


def pytest_configure(config: pytest.Config) -> None:
    _rootpath.append(config.rootpath)  # test report paths are relative to it


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep the ``[tag] …`` lines this suite's tests print (those not using ``figures`` yet)."""
    if report.when != "call" or not report.capstdout or not _rootpath:
        return
    if HERE not in (_rootpath[-1] / report.fspath).parents:
        return
    _figures.extend(line for line in report.capstdout.splitlines() if line.startswith("["))


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    if _figures:
        terminalreporter.section("fault-injection figures")
        for line in _figures:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FAKE_PROVIDER_KEY", "sk-provider-secret")
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(var, raising=False)
    return "sk-provider-secret"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The client side: plain aiohttp, so thousands of requests stay cheap and raw bytes visible."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


# ---------------------------------------------------------------------------------------
# resources


def provider_yaml(
    name: str,
    endpoints: list[tuple[str, str]],
    models: str = MODELS,
    *,
    env: str = "FAKE_PROVIDER_KEY",
    spec: str = "",
) -> str:
    """tests/proxy's provider manifest, with this suite's two priced models by default."""
    return _provider_yaml(name, endpoints, models, env=env, spec=spec)


def primary_backup_yaml(primary_url: str, backup_url: str, extra: str) -> str:
    """The suite's usual shape: ``chat`` on a primary (tier 0) with a backup provider (tier 1)."""
    return (
        provider_yaml("primary", [("us-east-1", primary_url)])
        + provider_yaml("backup", [("eu-west-1", backup_url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-b, tier: 1}"],
            extra,
        )
    )


def policy_yaml(
    preference: list[str], ejection: str, failback_seconds: float, name: str = "regions"
) -> str:
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {{name: {name}}}
spec:
  regionPreference: [{", ".join(preference)}]
  ejection: {ejection}
  failbackDelaySeconds: {failback_seconds}
---
"""


# ---------------------------------------------------------------------------------------
# the client side


@dataclass
class Answer:
    """What one client request saw, and whether it is a complete answer or a well-formed error."""

    status: int
    body: bytes
    headers: dict[str, str]
    started: float
    elapsed: float
    stream: bool

    @property
    def attempts(self) -> int:
        return int(self.headers.get("x-modelroute-attempts", "0") or 0)

    @property
    def target(self) -> str:
        return self.headers.get("x-modelroute-target", "")

    def error(self) -> dict[str, Any] | None:
        """The OpenAI-shaped error (an error status's body or an SSE error event), if any."""
        if self.status >= 400:
            doc = orjson.loads(self.body)
            assert isinstance(doc, dict)
            err = doc["error"]
            assert isinstance(err, dict)
            return err
        if self.stream:
            for event in sse_events(self.body):
                if isinstance(event, dict) and "error" in event:
                    err = event["error"]
                    assert isinstance(err, dict)
                    return err
        return None

    def complete(self) -> bool:
        """A whole answer: JSON with a finished choice, or an SSE stream with a finish and [DONE]."""
        if self.status != 200:
            return False
        if not self.stream:
            doc = orjson.loads(self.body)
            choices = doc.get("choices") or []
            return bool(choices) and choices[0].get("finish_reason") == "stop"
        events = sse_events(self.body)
        if not events or events[-1] != "[DONE]":
            return False
        finished = any(
            isinstance(e, dict)
            and any(c.get("finish_reason") == "stop" for c in e.get("choices") or ())
            for e in events
        )
        return finished and not any(isinstance(e, dict) and "error" in e for e in events)

    def well_formed_error(self) -> bool:
        err = self.error()
        return (
            err is not None
            and isinstance(err.get("message"), str)
            and bool(err["message"])
            and "type" in err
            and "code" in err
        )

    def content_chunks(self) -> int:
        return sum(
            1
            for e in sse_events(self.body)
            if isinstance(e, dict)
            and any((c.get("delta") or {}).get("content") for c in e.get("choices") or ())
        )


def sse_events(body: bytes) -> list[Any]:
    events: list[Any] = []
    for block in body.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[5:].strip()
                events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


async def ask(
    http: aiohttp.ClientSession,
    base_url: str,
    model: str = "chat",
    *,
    stream: bool = False,
    limit: float = 10.0,
    **extra: Any,
) -> Answer:
    """One chat completion through the proxy; the whole body is read (streams to their end)."""
    payload = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    if stream:
        payload["stream"] = True
    started = time.perf_counter()
    async with http.post(
        base_url.rstrip("/") + "/chat/completions",
        data=orjson.dumps(payload),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-client"},
        timeout=aiohttp.ClientTimeout(total=limit),
    ) as resp:
        body = await resp.read()
        return Answer(
            status=resp.status,
            body=body,
            headers={k.lower(): v for k, v in resp.headers.items()},
            started=started,
            elapsed=time.perf_counter() - started,
            stream=stream,
        )


@dataclass
class Load:
    """Open-loop load at a fixed rate with bounded concurrency; keeps every answer."""

    answers: list[Answer] = field(default_factory=list)
    exceptions: list[BaseException] = field(default_factory=list)


async def steady_load(
    http: aiohttp.ClientSession,
    base_url: str,
    rate: float,
    seconds: float,
    concurrency: int = 32,
    **ask_kwargs: Any,
) -> Load:
    """Start ``rate`` requests per second for ``seconds`` (at most ``concurrency`` at once)."""
    load = Load()
    gate = asyncio.Semaphore(concurrency)
    total = int(rate * seconds)

    async def one() -> None:
        try:
            load.answers.append(await ask(http, base_url, **ask_kwargs))
        except Exception as exc:  # a hang or a reset is a finding, not a crash of the driver
            load.exceptions.append(exc)
        finally:
            gate.release()

    tasks = []
    t0 = time.perf_counter()
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    return load


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (no interpolation: with few samples it is the honest answer)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


async def status(http: aiohttp.ClientSession, proxy: RunningProxy) -> dict[str, Any]:
    async with http.get(proxy.admin_url.rstrip("/") + "/status") as resp:
        doc = await resp.json()
        assert isinstance(doc, dict)
        return doc
