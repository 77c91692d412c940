"""Active health probes against real loopback servers (proxy/probes.py, upstream/probe.py).

An endpoint nobody sends to is still judged: a refused one is out of every
plan before the first request, a healed one is back after consecutive probe
successes (not by a timer), an HTTP probe is a GET under the provider's own
base URL that spends no tokens, probes follow the table, their concurrency
is bounded, and the connect-time guard refuses them as it refuses requests.
Every wait is a bounded poll; the file runs in about fifteen seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from modelroute.proxy.process import RunningProxy
from modelroute.proxy.upstream.connection import default_ssl

from modelroute.devtools.fake_provider import Knobs, start_fake_provider

from ..certs import self_signed
from ..forward_proxy import tinyproxy
from .conftest import (
    FakeFactory,
    ProxyFactory,
    ask,
    dead_port,
    provider_yaml,
    route_yaml,
    status,
)
from .test_endpoint_health import TIMEOUTS, endpoint


def policy(health_check: str = "{}", base_ejection_ms: int = 1000) -> str:
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {{name: regions}}
spec:
  regionPreference: [us-east-1, eu-west-1]
  outlierDetection: {{consecutiveLocalOriginFailures: 3, baseEjectionMs: {base_ejection_ms}}}
  healthCheck: {health_check}
---
"""


async def until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.02
) -> float:
    """Poll ``check`` until it holds; returns the seconds it took, fails after ``within``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(every)
    return time.monotonic() - started


async def endpoint_now(
    http: aiohttp.ClientSession, proxy: RunningProxy, key: str
) -> dict[str, Any]:
    return endpoint(await status(http, proxy), key)


# -- small servers that count what reaches them -------------------------------------------------


@dataclass
class Counting:
    """A TCP listener that counts connections and hangs up (what a connect probe sees)."""

    server: asyncio.Server
    port: int
    accepted: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
async def counting() -> AsyncIterator[Callable[[], Awaitable[Counting]]]:
    started: list[Counting] = []

    async def make() -> Counting:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            found.accepted += 1
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        found = Counting(server, int(server.sockets[0].getsockname()[1]))
        started.append(found)
        return found

    yield make
    for c in started:
        c.server.close()
        await c.server.wait_closed()


class Blackhole:
    """A listener that accepts (and hangs up) until :meth:`swallow`: then connects just hang.

    With its accept queue full (backlog 0, never accepted), Linux drops the
    SYNs of new connects: the loopback stand-in for a region whose packets
    go nowhere.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._filler: list[socket.socket] = []
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            self.accepted += 1
            conn.close()

    async def swallow(self) -> None:
        self._accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        for _ in range(3):  # fill the accept queue; later SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", self.port))
            self._filler.append(s)
        await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        for s in [*self._filler, self.sock]:
            s.close()


@dataclass
class ProbeTarget:
    """An HTTP server that records every request: what an HTTP probe sends, and how many at once."""

    port: int = 0
    delay: float = 0.0
    status: int = 200
    seen: list[tuple[str, str, str | None, str]] = field(
        default_factory=list
    )  # method, path, auth, host
    in_flight: int = 0
    most_in_flight: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            (
                request.method,
                request.path,
                request.headers.get("Authorization"),
                request.headers.get("Host", ""),
            )
        )
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.json_response({"object": "list", "data": []}, status=self.status)

    def gets(self) -> list[tuple[str, str, str | None, str]]:
        return [s for s in self.seen if s[0] == "GET"]


@pytest.fixture
async def targets() -> AsyncIterator[Callable[..., Awaitable[ProbeTarget]]]:
    runners: list[web.AppRunner] = []

    async def make(**kwargs: Any) -> ProbeTarget:
        target = ProbeTarget(**kwargs)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", target.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        target.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        runners.append(runner)
        return target

    yield make
    for r in runners:
        await r.cleanup()


def provider_with_check(name: str, endpoints: list[tuple[str, str]], env: str, check: str) -> str:
    return provider_yaml(name, endpoints, env=env, spec=f"  healthCheck: {check}\n")


# -- the tests ------------------------------------------------------------------------------------


async def test_a_refused_endpoint_nobody_sends_to_is_ejected_and_skipped_from_the_first_request(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    eu = await fakes("eu-west-1")
    proxy = await proxies(
        provider_yaml(
            "global", [("us-east-1", f"http://127.0.0.1:{dead_port()}/v1"), ("eu-west-1", eu.url)]
        )
        + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
        + policy()  # the defaults: a connect probe about every second, the first one sooner
    )

    async def ejected() -> bool:
        return (await endpoint_now(http, proxy, "global@us-east-1"))["state"] == "ejected"

    took = await until(ejected, 1.0, "probes eject the refused endpoint")
    us = await endpoint_now(http, proxy, "global@us-east-1")
    assert us["lastError"] == "probe_refused" and us["probe"] == "connect", us
    assert us["lastProbe"]["result"] == "failed" and us["successesToReadmit"] == 2, us
    assert (await endpoint_now(http, proxy, "global@eu-west-1"))["state"] == "healthy"
    answer = await ask(http, proxy.base_url)  # the very first request goes straight to eu-west-1
    assert answer.complete() and answer.attempts == 1, answer.headers
    assert answer.target == "global/chat-a@eu-west-1"
    print(
        f"[probes] a refused endpoint no request touched: ejected {took * 1000:.0f} ms after start"
    )


async def test_a_healed_endpoint_is_back_after_consecutive_probe_successes(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    eu = await fakes("eu-west-1")
    port = dead_port()
    proxy = await proxies(
        provider_yaml(
            "global", [("us-east-1", f"http://127.0.0.1:{port}/v1"), ("eu-west-1", eu.url)]
        )
        + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
        + policy()  # healthyThreshold 2, intervalMs 1000, baseEjectionMs 1000
    )

    async def ejected() -> bool:
        return (await endpoint_now(http, proxy, "global@us-east-1"))["state"] == "ejected"

    await until(ejected, 1.0, "probes eject the refused endpoint")
    await asyncio.sleep(1.0)  # an outage longer than the shortest ejection
    _, runner, _ = await start_fake_provider("127.0.0.1", port, Knobs(region="us-east-1"))
    try:
        healed = time.monotonic()
        before = await endpoint_now(http, proxy, "global@us-east-1")
        assert before["state"] == "ejected", before  # the minimum time alone brings nothing back

        async def back() -> bool:
            return not await ejected()

        took = await until(back, 3.0, "consecutive probe successes readmit the healed endpoint")
        now = await endpoint_now(http, proxy, "global@us-east-1")
        assert now["probes"] - before["probes"] >= 2, (before, now)  # two successes in a row
        answer = await ask(http, proxy.base_url)
        assert answer.complete() and answer.target == "global/chat-a@us-east-1", answer.headers
        assert answer.attempts == 1
        served = time.monotonic() - healed
        print(
            f"[probes] failback after healing: back in rotation {took:.2f} s, "
            f"first request served there {served:.2f} s after the heal"
        )
    finally:
        await runner.cleanup()


async def test_a_black_holed_endpoint_nobody_sends_to_is_ejected_by_probe_timeouts(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    eu = await fakes("eu-west-1")
    hole = Blackhole()
    try:
        proxy = await proxies(
            provider_yaml("global", [("us-east-1", hole.url), ("eu-west-1", eu.url)])
            + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
            + policy()  # the defaults: timeoutMs 300 once a probe has succeeded
        )

        async def probed() -> bool:
            return (await endpoint_now(http, proxy, "global@us-east-1"))["probes"] >= 1

        await until(probed, 1.0, "the first probe of us-east-1")
        assert hole.accepted >= 1
        await hole.swallow()
        swallowed = time.monotonic()

        async def ejected() -> bool:
            return (await endpoint_now(http, proxy, "global@us-east-1"))["state"] == "ejected"

        took = await until(ejected, 1.5, "probe timeouts eject the black-holed endpoint")
        us = await endpoint_now(http, proxy, "global@us-east-1")
        assert us["lastError"] == "probe_timeout" and us["lastProbe"]["timeoutMs"] == 300, us
        answer = await ask(http, proxy.base_url)
        assert answer.complete() and answer.attempts == 1, answer.headers
        assert answer.target == "global/chat-a@eu-west-1"
        assert time.monotonic() - swallowed < 2.0
        print(f"[probes] a black hole no request touched: ejected {took * 1000:.0f} ms after")
    finally:
        await hole.close()


async def test_an_http_probe_is_a_get_under_its_own_base_url_with_its_own_key_and_no_tokens(
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    targets: Callable[..., Awaitable[ProbeTarget]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEY_A", "sk-key-of-a")
    monkeypatch.setenv("KEY_B", "sk-key-of-b")
    a, b = await targets(), await targets()
    proxy = await proxies(
        provider_with_check(
            "pa",
            [("us-east-1", a.url)],
            "KEY_A",
            "{intervalMs: 200, timeoutMs: 150, http: {path: /models}}",
        )
        + provider_with_check(
            "pb",
            [("us-east-1", b.url)],
            "KEY_B",
            "{intervalMs: 200, timeoutMs: 150, http: {path: /models, sendKey: false}}",
        )
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: pa, model: chat-a}", "{provider: pb, model: chat-a, tier: 1}"],
            TIMEOUTS,
        )
        + policy()
    )

    async def probed_twice() -> bool:
        return len(a.gets()) >= 2 and len(b.gets()) >= 2

    await until(probed_twice, 2.0, "both endpoints probed over HTTP")
    assert {s[:3] for s in a.seen} == {("GET", "/v1/models", "Bearer sk-key-of-a")}, a.seen
    assert {s[:3] for s in b.seen} == {("GET", "/v1/models", None)}, b.seen  # sendKey: false
    assert {s[3] for s in a.seen} == {f"127.0.0.1:{a.port}"}
    assert not [s for s in a.seen + b.seen if s[0] != "GET"]  # nothing POSTed: no tokens spent
    doc = await status(http, proxy)
    assert endpoint(doc, "pa@us-east-1")["probe"] == "GET /models"
    assert endpoint(doc, "pa@us-east-1")["state"] == "healthy"
    a.status = 503  # the provider's edge is sick: an answer, but not a healthy one

    async def ejected() -> bool:
        return (await endpoint_now(http, proxy, "pa@us-east-1"))["state"] == "ejected"

    await until(ejected, 1.0, "a 5xx to the probe ejects the endpoint")
    pa = await endpoint_now(http, proxy, "pa@us-east-1")
    assert pa["lastError"] == "probe_status" and "503" in pa["lastErrorDetail"], pa
    assert proxy.admin_url is not None
    async with http.get(proxy.admin_url + "/metrics") as resp:
        text = await resp.text()
    assert (
        'modelroute_endpoint_probes_total{provider="pa",region="us-east-1",result="failed"}' in text
    )
    assert "modelroute_endpoint_probe_duration_seconds_count" in text


async def test_a_request_timing_out_on_a_connected_endpoint_brings_its_probe_forward(
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    targets: Callable[..., Awaitable[ProbeTarget]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEY_A", "sk-key-of-a")
    frozen, eu = await targets(), await fakes("eu-west-1")
    proxy = await proxies(
        provider_with_check(
            "global",
            [("us-east-1", frozen.url), ("eu-west-1", eu.url)],
            "KEY_A",
            "{intervalMs: 3000, timeoutMs: 200, http: {path: /models}}",
        )
        + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
        + policy()
    )

    async def probed() -> bool:
        return len(frozen.gets()) >= 1

    await until(probed, 1.0, "the first probe of us-east-1")
    frozen.delay = 5.0  # it still accepts connections, but answers nothing any more
    answer = await ask(http, proxy.base_url)  # us-east-1's first-byte timeout, then eu-west-1
    assert answer.complete() and answer.attempts == 2, answer.headers

    async def ejected() -> bool:
        return (await endpoint_now(http, proxy, "global@us-east-1"))["state"] == "ejected"

    # the next scheduled probe is 2.4-3 s after the first; the suspicion brings it forward
    took = await until(ejected, 1.0, "the suspected endpoint probed at once and ejected")
    us = await endpoint_now(http, proxy, "global@us-east-1")
    assert us["lastError"] == "probe_timeout" and len(frozen.gets()) == 2, us
    print(f"[probes] a request's first-byte timeout: endpoint ejected {took * 1000:.0f} ms later")


async def test_an_http_probe_takes_the_providers_forward_proxy_like_a_request(
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    targets: Callable[..., Awaitable[ProbeTarget]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("KEY_A", "sk-key-of-a")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    target = await targets()
    with tinyproxy(tmp_path / "proxy") as forward:
        monkeypatch.setenv("http_proxy", forward.url_with_auth)
        await proxies(
            provider_with_check(
                "pa",
                [("us-east-1", f"http://localhost:{target.port}/v1")],
                "KEY_A",
                "{intervalMs: 200, timeoutMs: 150, http: {path: /models}}",
            )
            + route_yaml("chat", ["chat"], ["{provider: pa, model: chat-a}"], TIMEOUTS)
        )

        async def probed() -> bool:
            return len(target.gets()) >= 1

        await until(probed, 2.0, "a probe through the forward proxy")
        seen = forward.requests()
    # absolute form through the proxy (with the proxy's credentials, never the key's)
    assert f"GET http://localhost:{target.port}/v1/models HTTP/1.1" in seen, seen
    assert target.gets()[0][2] == "Bearer sk-key-of-a"


async def test_a_connect_probe_of_https_is_a_verified_tls_handshake_through_the_tunnel(
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name in ("trusted", "other"):
        (tmp_path / name).mkdir()
    trusted_cert, trusted_key = self_signed(tmp_path / "trusted", dns=("localhost",))
    other_cert, other_key = self_signed(tmp_path / "other", dns=("localhost",))
    handshakes: dict[int, int] = {}

    async def tls_server(cert: Path, key: Path) -> asyncio.Server:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)

        def done(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            port = writer.get_extra_info("sockname")[1]
            handshakes[port] = handshakes.get(port, 0) + 1  # called once the handshake is done
            writer.close()

        return await asyncio.start_server(done, "127.0.0.1", 0, ssl=context)

    good, bad = await tls_server(trusted_cert, trusted_key), await tls_server(other_cert, other_key)
    good_port, bad_port = (int(s.sockets[0].getsockname()[1]) for s in (good, bad))
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted_cert))  # the trust store probes use
    default_ssl.cache_clear()
    try:
        with tinyproxy(tmp_path / "proxy") as forward:
            monkeypatch.setenv("https_proxy", forward.url_with_auth)
            proxy = await proxies(
                provider_yaml(
                    "global",
                    [
                        ("us-east-1", f"https://localhost:{good_port}/v1"),
                        ("eu-west-1", f"https://localhost:{bad_port}/v1"),
                    ],
                )
                + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
                + policy("{intervalMs: 300, timeoutMs: 200}")
            )

            async def judged() -> bool:
                doc = await status(http, proxy)
                return (
                    handshakes.get(good_port, 0) >= 2
                    and endpoint(doc, "global@eu-west-1")["state"] == "ejected"
                )

            await until(judged, 3.0, "the trusted endpoint probed, the untrusted one ejected")
            seen = forward.requests()
        assert f"CONNECT localhost:{good_port} HTTP/1.1" in seen, seen  # the tunnel, as requests
        assert f"CONNECT localhost:{bad_port} HTTP/1.1" in seen, seen
        doc = await status(http, proxy)
        assert endpoint(doc, "global@us-east-1")["state"] == "healthy"
        eu = endpoint(doc, "global@eu-west-1")
        assert eu["lastError"] == "probe_refused" and "CERTIFICATE_VERIFY_FAILED" in str(
            eu["lastErrorDetail"]
        ), eu
        assert handshakes.get(bad_port, 0) == 0  # the handshake never completed
    finally:
        default_ssl.cache_clear()  # later tests get the trust store without the test's cert
        for server in (good, bad):
            server.close()


async def test_probes_stop_when_a_reload_takes_the_endpoint_out_of_every_table(
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    counting: Callable[[], Awaitable[Counting]],
    tmp_path: Path,
) -> None:
    gone, kept = await counting(), await counting()
    check = "{intervalMs: 200, timeoutMs: 100}"

    def routes(endpoints: list[tuple[str, str]]) -> str:
        return (
            provider_yaml("global", endpoints)
            + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
            + policy(check)
        )

    proxy = await proxies(
        routes([("us-east-1", gone.url), ("eu-west-1", kept.url)]), reload_seconds=0.05
    )

    async def both_probed() -> bool:
        return gone.accepted >= 2 and kept.accepted >= 2

    await until(both_probed, 2.0, "both endpoints probed")
    (tmp_path / "routes-0.yaml").write_text(routes([("eu-west-1", kept.url)]))

    async def reloaded() -> bool:
        return proxy.proxy.store.reloads >= 2

    await until(reloaded, 2.0, "the route file reloaded")
    await asyncio.sleep(0.15)  # a probe already out when the table changed may still land
    after, kept_after = gone.accepted, kept.accepted
    await asyncio.sleep(0.8)  # four intervals
    assert gone.accepted == after, "probes went on for an endpoint no table uses"
    assert kept.accepted >= kept_after + 2  # ... while the one still in the table is probed
    keys = {e["endpoint"] for e in (await status(http, proxy))["endpoints"]}
    assert keys == {"global@eu-west-1"}
    assert proxy.admin_url is not None
    async with http.get(proxy.admin_url + "/metrics") as resp:
        text = await resp.text()
    durations = [line for line in text.splitlines() if "probe_duration_seconds_count" in line]
    assert durations and all('region="eu-west-1"' in line for line in durations), durations


async def test_probe_concurrency_is_bounded(
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    targets: Callable[..., Awaitable[ProbeTarget]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEY_A", "sk-key-of-a")
    slow = await targets(delay=0.15)
    regions = [f"r{i}" for i in range(6)]
    proxy = await proxies(
        provider_with_check(
            "many",
            [(r, slow.url) for r in regions],
            "KEY_A",
            "{intervalMs: 500, timeoutMs: 400, http: {path: /models}}",
        )
        + route_yaml("chat", ["chat"], ["{provider: many, model: chat-a}"], TIMEOUTS),
        probe_concurrency=2,
    )

    async def every_endpoint_probed() -> bool:
        doc = await status(http, proxy)
        return all(endpoint(doc, f"many@{r}")["probes"] >= 2 for r in regions)

    await until(every_endpoint_probed, 4.0, "all six endpoints probed, two at a time")
    assert slow.most_in_flight == 2, slow.most_in_flight  # the bound, reached and held
    assert proxy.proxy.prober.most_in_flight == 2
    doc = await status(http, proxy)
    assert all(endpoint(doc, f"many@{r}")["state"] == "healthy" for r in regions)


async def test_the_guard_refuses_a_probe_to_a_host_outside_the_allow_list(
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    counting: Callable[[], Awaitable[Counting]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELROUTE_ALLOWED_PROVIDER_HOSTS", "api.example.com")
    forbidden = await counting()
    proxy = await proxies(
        provider_yaml("global", [("us-east-1", forbidden.url)])
        + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
        + policy("{intervalMs: 200, timeoutMs: 100}")
    )

    async def refused_twice() -> bool:
        return (await endpoint_now(http, proxy, "global@us-east-1"))["probesNotSent"] >= 2

    await until(refused_twice, 2.0, "the guard refuses the probes")
    us = await endpoint_now(http, proxy, "global@us-east-1")
    assert forbidden.accepted == 0  # not one connection reached the forbidden host
    assert (
        us["lastProbe"]["result"] == "not_sent"
        and "allowed-provider-hosts" in us["lastProbe"]["detail"]
    )
    assert us["state"] == "healthy" and us["probeFailures"] == 0, us  # no verdict either way
