"""Egress through a real forward proxy (Debian's tinyproxy on loopback), with the real SDK.

* ``HTTPS_PROXY``: an https provider is reached through a CONNECT tunnel,
  with TLS (and certificate checks) end to end and the proxy's Basic
  credentials taken from the URL – and never logged;
* ``HTTP_PROXY``: an http provider gets its request in absolute form;
* ``NO_PROXY``: a listed host is reached directly, the proxy never sees it;
* ``spec.egress`` on a ModelProvider overrides the environment (a proxy of
  its own with credentials from a Secret or env var, or ``direct``).

The sidecar of the first test is a real ``modelroute proxy`` process, so the
environment it reads is its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import sys
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp import web
from modelroute.proxy.upstream import ConnectFailed, ConnectionPool
from modelroute.proxy.upstream.egress import EgressPolicy, parse_proxy_url

from modelroute.devtools.fake_provider import FakeProvider, Knobs, start_fake_provider

from ..certs import self_signed
from ..forward_proxy import PASSWORD, USER, tinyproxy
from .conftest import FakeFactory, ProxyFactory, dead_port, provider_yaml, route_yaml

MODELROUTE = Path(sys.executable).parent / "modelroute"
MESSAGES = [{"role": "user", "content": "hello"}]


async def tls_fake(
    cert: Path, key: str | Path, region: str
) -> tuple[FakeProvider, web.AppRunner, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = FakeProvider(Knobs(region=region))
    runner = web.AppRunner(fake.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    assert site._server is not None
    return fake, runner, int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


async def wait_ready(admin: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            assert proc.returncode is None, "the sidecar exited"
            try:
                async with http.get(admin + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the sidecar did not become ready in 10 s")


async def test_https_proxy_http_proxy_and_no_proxy_in_a_real_sidecar_process(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path, dns=("localhost",))
    secure, secure_runner, secure_port = await tls_fake(cert, key, "us-east-1")
    plain, plain_runner, plain_port = await start_fake_provider(knobs=Knobs(region="eu-west-1"))
    local, local_runner, local_port = await start_fake_provider(knobs=Knobs(region="local"))
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        provider_yaml("secure", [("us-east-1", f"https://localhost:{secure_port}/v1")])
        + provider_yaml("plain", [("eu-west-1", f"http://localhost:{plain_port}/v1")])
        + provider_yaml("local", [("local", f"http://127.0.0.1:{local_port}/v1")])
        + route_yaml("secure", ["secure"], ["{provider: secure, model: qwen3-8b}"])
        + route_yaml("plain", ["plain"], ["{provider: plain, model: qwen3-8b}"])
        + route_yaml("local", ["local"], ["{provider: local, model: qwen3-8b}"])
        # the requests' tunnels are counted below; probes open their own, on the same road
        # (tests/faults/test_probes.py), so they are off here
        + "apiVersion: modelroute.io/v1alpha1\nkind: FailoverPolicy\nmetadata: {name: regions}\n"
        "spec:\n  regionPreference: [us-east-1, eu-west-1, local]\n"
        "  healthCheck: {enabled: false}\n---\n"
    )
    api, admin = dead_port(), dead_port()
    with tinyproxy(tmp_path / "proxy") as forward:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("OTEL_") and "proxy" not in k.lower()
        }
        env.update(
            FAKE_PROVIDER_KEY="sk-provider-secret",
            HTTPS_PROXY=forward.url_with_auth,
            http_proxy=forward.url_with_auth,
            NO_PROXY="127.0.0.1,.svc",
            SSL_CERT_FILE=str(cert),  # the sidecar trusts the test's CA as it would a real one
        )
        proc = await asyncio.create_subprocess_exec(
            str(MODELROUTE), "proxy", "--routes", str(routes), "--listen", f"127.0.0.1:{api}",
            "--admin", f"127.0.0.1:{admin}", "--drain-seconds", "0", "--log-level", "debug",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await wait_ready(f"http://127.0.0.1:{admin}", proc)
            c = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{api}/v1", api_key="unused", max_retries=0, timeout=10
            )
            for model in ("secure", "secure", "plain", "local"):
                raw = await c.chat.completions.with_raw_response.create(
                    model=model, messages=MESSAGES
                )
                assert raw.parse().choices[0].message.content
                assert raw.headers["x-modelroute-route"] == model
            await c.close()
        finally:
            proc.terminate()
            _, stderr = await asyncio.wait_for(proc.communicate(), 10)
            for runner in (secure_runner, plain_runner, local_runner):
                await runner.cleanup()
        seen = forward.requests()

    # https: one tunnel (the second request reused the kept-alive TLS connection inside it)
    assert seen.count(f"CONNECT localhost:{secure_port} HTTP/1.1") == 1, seen
    assert secure.stats.requests == 2
    assert secure.stats.last_authorization == "Bearer sk-provider-secret"  # inside TLS only
    # http: the request in absolute form, with the proxy's credentials, never the provider's
    assert f"POST http://localhost:{plain_port}/v1/chat/completions HTTP/1.1" in seen, seen
    assert plain.stats.requests == 1
    # NO_PROXY: straight there, the proxy saw nothing of it
    assert local.stats.requests == 1
    assert not [line for line in seen if str(local_port) in line], seen
    # the proxy's credentials appear nowhere in what the sidecar logged
    log = stderr.decode(errors="replace")
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert PASSWORD not in log and token not in log


async def test_a_refused_tunnel_fails_the_connect_and_names_the_proxy_not_its_password(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path, dns=("localhost",))
    _, runner, port = await tls_fake(cert, key, "us-east-1")
    with tinyproxy(tmp_path / "proxy") as forward:
        for url in (forward.url, f"http://{USER}:wrong-{PASSWORD}@127.0.0.1:{forward.port}"):
            policy = EgressPolicy(https_proxy=parse_proxy_url(url, "HTTPS_PROXY"))
            pool = ConnectionPool(
                1,
                connect_timeout=5,
                ssl_context=ssl.create_default_context(cafile=cert),
                egress=policy,
            )
            with pytest.raises(ConnectFailed) as caught:
                await pool.post(f"https://localhost:{port}/v1", "/chat/completions", b"{}", {})
            message = str(caught.value)
            assert f"through proxy http://127.0.0.1:{forward.port}" in message
            # tinyproxy: 407 without credentials, 401 for wrong ones
            assert (
                "407" in message or "401" in message
            ) and "check the proxy credentials" in message
            assert PASSWORD not in message and USER not in message
            assert pool.in_use == 0
            pool.close()
        # with the right credentials the same pool set-up carries the request over TLS
        policy = EgressPolicy(https_proxy=parse_proxy_url(forward.url_with_auth, "HTTPS_PROXY"))
        pool = ConnectionPool(
            1, connect_timeout=5, ssl_context=ssl.create_default_context(cafile=cert), egress=policy
        )
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        answer = await pool.post(
            f"https://localhost:{port}/v1",
            "/chat/completions",
            body,
            {"Content-Type": "application/json"},
        )
        assert answer.status == 200 and b"chat.completion" in await answer.read()
        answer.release()
        pool.close()
    await runner.cleanup()


async def test_a_providers_egress_overrides_the_environment(
    fakes: FakeFactory,
    proxies: ProxyFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxied = await fakes("us-east-1")
    direct = await fakes("eu-west-1")
    with tinyproxy(tmp_path / "proxy") as forward:
        # the environment points at a proxy nothing listens on: only an override gets through
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port()}")
        monkeypatch.setenv("EGRESS_PROXY_CREDS", f"{USER}:{PASSWORD}")
        own_proxy = (
            f'  egress: {{proxy: "{forward.url}", proxyCredentials: {{env: EGRESS_PROXY_CREDS}}}}\n'
        )
        proxy = await proxies(
            provider_yaml(
                "proxied", [("us-east-1", f"http://localhost:{proxied.port}/v1")]
            ).replace("  credentials:", own_proxy + "  credentials:")
            + provider_yaml("direct", [("eu-west-1", direct.url)]).replace(
                "  credentials:", "  egress: {proxy: direct}\n  credentials:"
            )
            + provider_yaml("env", [("ap-1", f"http://localhost:{dead_port()}/v1")])
            + route_yaml("a", ["a"], ["{provider: proxied, model: qwen3-8b}"])
            + route_yaml("b", ["b"], ["{provider: direct, model: qwen3-8b}"])
            + route_yaml("c", ["c"], ["{provider: env, model: qwen3-8b}"])
        )
        c = openai.AsyncOpenAI(
            base_url=proxy.base_url,
            api_key="unused",
            max_retries=0,
            timeout=10,
            # the app's own client must not take the HTTP_PROXY meant for the sidecar's hop
            http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
        )
        assert (await c.chat.completions.create(model="a", messages=MESSAGES)).choices
        assert (await c.chat.completions.create(model="b", messages=MESSAGES)).choices
        with pytest.raises(openai.APIStatusError) as caught:
            await c.chat.completions.create(model="c", messages=MESSAGES)
        assert "through proxy http://127.0.0.1:" in caught.value.message  # the environment's
        await c.close()
        seen = forward.requests()
    assert f"POST http://localhost:{proxied.port}/v1/chat/completions HTTP/1.1" in seen
    assert proxied.fake.stats.requests == 1 and direct.fake.stats.requests == 1
    assert not [line for line in seen if str(direct.port) in line]
