"""Fixtures for the budget tests: routes with budgets, and a real ``redis-server`` on loopback.

The Redis tests need the real server (``scripts/install-test-tools.sh`` installs it
for ``make test``); they are skipped, saying why, only when it is genuinely missing.
Each server runs in a temp dir on a free 127.0.0.1 port with persistence off and
is stopped by its own process handle when the test ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from modelroute.proxy.table import CompiledRoute, CompiledTarget

from modelroute.resources import Budget

ROOT = Path(__file__).resolve().parents[2]


def make_route(name: str = "general", action: str = "reject", **window: float) -> CompiledRoute:
    """A compiled route with one target and ``budget: {<window>: N, action}`` (default $50/day)."""
    budget: dict[str, Any] = dict(window or {"usdPerDay": 50.0})
    budget["action"] = action
    return CompiledRoute(
        name=name,
        aliases=(name,),
        targets=(
            CompiledTarget(
                provider="deepseek",
                model="deepseek-chat",
                upstream_model="deepseek-chat",
                regions=("global",),
            ),
        ),
        budget=Budget.model_validate(budget),
    )


@pytest.fixture
def route() -> Callable[..., CompiledRoute]:
    return make_route


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    local = ROOT / ".tools" / "bin" / "redis-server"
    return str(local) if local.exists() else None


class RedisServer:
    """One ``redis-server`` process this test started (and stops by its handle)."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client.ping():
                    return
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[[int | None], RedisServer]]:
    """Start a real redis-server (optionally on a given port); all are stopped at the end."""
    binary = redis_server_binary()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                "redis-server is missing in CI: scripts/install-test-tools.sh must install it"
            )
        pytest.skip(
            "redis-server is not installed (make test installs it via "
            "scripts/install-test-tools.sh); skipping the shared-budget tests"
        )
    started: list[RedisServer] = []

    def start(port: int | None = None) -> RedisServer:
        server = RedisServer(binary, port or free_port(), tmp_path / f"redis-{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(start_redis: Callable[[int | None], RedisServer]) -> RedisServer:
    return start_redis(None)
