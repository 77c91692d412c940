"""Shared budgets in a cluster reach a Redis that wants a password (issue 13, item 9).

The chart's ``sidecar.redis`` values make the injector give every sidecar
``MODELROUTE_REDIS_URL`` and, from a Secret through ``secretKeyRef``,
``MODELROUTE_REDIS_PASSWORD`` (``tests/injection/test_injection_security.py``).
Here the sidecar side: a real ``redis-server --requirepass`` refuses a sidecar
without the password and syncs with one that has it, and the password is never
part of the URL or the arguments.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from modelroute.proxy.process import start_proxy
from modelroute.proxy.server import ProxyConfig

from .conftest import free_port, redis_server_binary

PASSWORD = "correct horse/battery:staple@"  # URL-hostile on purpose: it never goes in the URL

ROUTES = """
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: api, namespace: team-a}
spec:
  endpoints: [{region: us-east-1, baseURL: "http://127.0.0.1:9/v1"}]
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: general, namespace: team-a}
spec:
  models: [general]
  targets: [{provider: api, model: kimi-k2.5}]
  budget: {usdPerDay: 1.0, action: reject}
"""


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[int]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/install-test-tools.sh installs it)")
    port = free_port()
    proc = subprocess.Popen(
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
            str(tmp_path),
            "--requirepass",
            PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=1)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        client.close()
        proc.terminate()
        proc.wait(5)


async def _connected(tmp_path: Path, port: int, password: str | None) -> tuple[bool, str | None]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    proxy = await start_proxy(
        ProxyConfig(
            listen=("127.0.0.1", 0),
            admin=("127.0.0.1", 0),
            route_files=[routes],
            redis_url=f"redis://127.0.0.1:{port}/0",
            redis_password=password,
            namespace="team-a",
        )
    )
    try:
        book = proxy.proxy.budgets
        for _ in range(100):
            if book.redis_connected or book.redis_error:
                break
            await asyncio.sleep(0.03)
        return book.redis_connected, book.redis_error
    finally:
        await proxy.stop()


async def test_sidecar_with_the_password_syncs(locked_redis: int, tmp_path: Path) -> None:
    connected, error = await _connected(tmp_path, locked_redis, PASSWORD)
    assert connected, error


async def test_sidecar_without_it_is_refused_and_says_so(locked_redis: int, tmp_path: Path) -> None:
    connected, error = await _connected(tmp_path, locked_redis, None)
    assert not connected
    assert error is not None and "auth" in error.lower()
    assert PASSWORD not in error
