"""Shared budgets over TLS to a Redis whose certificate a private CA signed (issue 13, item 9).

A real ``redis-server`` serves TLS only (``--port 0 --tls-port``) on 127.0.0.1 with a
certificate made at test start by a CA of the test's own, as a cluster's cert-manager
would issue it.  The sidecar trusts it only through ``--redis-ca-file`` /
``MODELROUTE_REDIS_CA_FILE`` (what the injector sets from the chart's
``sidecar.redis.caBundle``, ``tests/injection/test_injection_security.py``): with the
right CA it syncs its counters; with another CA, none (the system's trust store) or an
unreadable file it is refused, keeps enforcing per pod, and ``/status`` says why in
words a person can act on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from modelroute.proxy.process import start_proxy
from modelroute.proxy.server import ProxyConfig
from modelroute.proxy.sources import ConfigError

from ..bench.conftest import server
from ..certs import private_ca, signed_by
from .conftest import free_port, make_route, redis_server_binary
from .test_proxy_redis import MODELROUTE, NO_TRACING, get_json, wait_shared
from .test_redis_auth import ROUTES

NOT_TRUSTED = "TLS: the Redis server's certificate is not trusted by"


@dataclass
class TlsRedis:
    port: int
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # a CA that signed nothing the server has
    client: redis.Redis

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    binary = redis_server_binary()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is missing in CI: scripts/install-test-tools.sh installs it")
        pytest.skip("redis-server is not installed (scripts/install-test-tools.sh installs it)")
    pki = tmp_path / "pki"
    ca = private_ca(pki, "redis-ca")
    other, _ = private_ca(pki, "other-ca")
    cert, key = signed_by(ca, pki, "redis")
    port = free_port()
    argv = [
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca[0]), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca[0]), socket_timeout=1
    )
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
        yield TlsRedis(port, ca[0], other, client)
    finally:
        client.close()
        proc.terminate()
        proc.wait(5)


async def _sidecar_budgets(
    tmp_path: Path, url: str, ca_file: Path | None
) -> tuple[bool, str | None]:
    """Start a sidecar with this Redis URL and CA; (connected, redisError) once it knows."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    proxy = await start_proxy(
        ProxyConfig(
            listen=("127.0.0.1", 0),
            admin=("127.0.0.1", 0),
            route_files=[routes],
            redis_url=url,
            redis_ca_file=ca_file,
            namespace="team-a",
        )
    )
    try:
        book = proxy.proxy.budgets
        for _ in range(200):
            if book.redis_connected or book.redis_error:
                break
            await asyncio.sleep(0.03)
        return book.redis_connected, book.redis_error
    finally:
        await proxy.stop()


async def test_the_private_ca_makes_tls_work_and_counters_arrive(
    tls_redis: TlsRedis, tmp_path: Path
) -> None:
    from modelroute.proxy.budget import BudgetBook

    connected, error = await _sidecar_budgets(tmp_path, tls_redis.url, tls_redis.ca)
    assert connected, error
    # and the spend travels: the book's push lands in the TLS-only server
    book = BudgetBook(tls_redis.url, namespace="team-tls", redis_ca_file=str(tls_redis.ca))
    route = make_route()
    book.spend(route, 0.25)
    await book.start()
    try:
        assert await book.sync(), book.redis_error
    finally:
        await book.close()
    keys = [k.decode() for k in tls_redis.client.keys("modelroute:budget:team-tls:*")]
    assert keys, "no counter reached Redis over TLS"
    assert {float(tls_redis.client.get(k) or 0) for k in keys} == {0.25}


async def test_a_wrong_ca_is_refused_and_says_which_ca(tls_redis: TlsRedis, tmp_path: Path) -> None:
    connected, error = await _sidecar_budgets(tmp_path, tls_redis.url, tls_redis.other_ca)
    assert not connected
    assert error is not None, "no reason given"
    assert error.startswith(f"{NOT_TRUSTED} the CA bundle {tls_redis.other_ca} ("), error
    assert "certificate" in error.rsplit("(", 1)[1], error  # OpenSSL's own verify reason


async def test_without_the_ca_the_system_trust_store_refuses(
    tls_redis: TlsRedis, tmp_path: Path
) -> None:
    """What a private CA needed before the option existed: TLS could not be verified at all."""
    connected, error = await _sidecar_budgets(tmp_path, tls_redis.url, None)
    assert not connected
    assert error is not None and error.startswith(f"{NOT_TRUSTED} the system's trusted CAs"), error


async def test_an_unreadable_ca_file_is_named(tls_redis: TlsRedis, tmp_path: Path) -> None:
    missing = tmp_path / "mounted" / "ca.crt"  # a ConfigMap that isn't there: the file isn't
    connected, error = await _sidecar_budgets(tmp_path, tls_redis.url, missing)
    assert not connected
    assert error == f"TLS: the CA bundle {missing} can't be read (No such file or directory)"
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    connected, error = await _sidecar_budgets(tmp_path, tls_redis.url, garbage)
    assert not connected
    assert error is not None and error.startswith(
        f"TLS: the CA bundle {garbage} holds no usable certificate"
    ), error


def test_a_ca_file_with_a_plain_text_url_is_refused_at_start(tmp_path: Path) -> None:
    """A CA for ``redis://`` would be ignored and the counters sent in clear text."""
    config = ProxyConfig(
        route_files=[tmp_path / "r.yaml"],
        redis_url="redis://127.0.0.1:6379/0",
        redis_ca_file=tmp_path / "ca.crt",
    )
    with pytest.raises(ConfigError, match=r"must be rediss://\.\.\., not redis://"):
        config.check()


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"the sidecar's admin port {port} did not open in {timeout} s")


def test_the_sidecar_process_takes_the_ca_from_its_environment(
    tls_redis: TlsRedis, tmp_path: Path
) -> None:
    """``modelroute proxy`` as injected: ``MODELROUTE_REDIS_URL`` and ``MODELROUTE_REDIS_CA_FILE``."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    api, admin = free_port(), free_port()
    argv = [
        str(MODELROUTE), "proxy", "--routes", str(routes), "--namespace", "team-a",
        "--listen", f"127.0.0.1:{api}", "--admin", f"127.0.0.1:{admin}", "--drain-seconds", "1",
    ]  # fmt: skip
    env = {
        **NO_TRACING,
        "MODELROUTE_REDIS_URL": tls_redis.url,
        "MODELROUTE_REDIS_CA_FILE": str(tls_redis.ca),
    }
    with server(argv, env) as proc:
        _wait_listening(admin, proc)
        wait_shared(f"http://127.0.0.1:{admin}", proc)
    env["MODELROUTE_REDIS_CA_FILE"] = str(tls_redis.other_ca)
    with server(argv, env) as proc:
        _wait_listening(admin, proc)
        deadline = time.monotonic() + 15
        budgets: dict[str, object] = {}
        while time.monotonic() < deadline and not budgets.get("redisError"):
            budgets = get_json(f"http://127.0.0.1:{admin}/status")["budgets"]
            time.sleep(0.1)
        assert budgets["shared"] is False
        assert str(budgets["redisError"]).startswith(NOT_TRUSTED), budgets
