"""The real sidecar in ``--kube`` mode against kmock: requests follow the ConfigMap within 2 s.

``test_kube_source.py`` proves the watch feeds a :class:`TableStore`; this file
proves what a user depends on end to end (issue 5): the proxy, configured the
way ``modelroute proxy --kube --namespace team-a --table-file …`` configures
it, routes a chat request by the namespace's ``modelroute-table`` ConfigMap,
routes differently within 2 s of the ConfigMap changing, keeps serving the
last good table (and says why on ``/status``) when the ConfigMap turns bad,
and serves from the mounted copy when the API server can't be reached at start.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from modelroute.operator.manifests import HASH_ANNOTATION, TABLE_CONFIGMAP, TABLE_KEY
from modelroute.proxy.compiler import compile_local
from modelroute.proxy.kube_source import KubeTableSource
from modelroute.proxy.process import RunningProxy, start_proxy
from modelroute.proxy.server import ProxyConfig
from modelroute.proxy.sources import TableFileSource
from modelroute.proxy.table import CompiledTable
from modelroute.proxy.tablestore import TableStore

from modelroute.devtools.fake_provider import Knobs, start_fake_provider
from modelroute.resources import load_text

from ..proxy.conftest import Fake
from .helpers import Api, eventually

NS = "team-a"
CM_PATH = f"/api/v1/namespaces/{NS}/configmaps"
PICKUP_LIMIT = 2.0  # issue 5: "the proxy in --kube mode picks up a change within 2 s"
POLL = 0.05
CHAT = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_PROVIDER_KEY", "sk-provider-secret")
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[Fake, Fake]]:
    """Two fake providers, A and B, each in its own region, so the target header tells them apart."""
    started: list[Fake] = []
    try:
        for region in ("us-east-1", "eu-west-1"):
            fake, runner, port = await start_fake_provider("127.0.0.1", 0, Knobs(region=region), 1)
            started.append(Fake(fake, runner, port))
        yield started[0], started[1]
    finally:
        for f in started:
            await f.runner.cleanup()


def _provider(name: str, region: str, url: str) -> str:
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {{name: {name}, namespace: {NS}}}
spec:
  api: openai
  endpoints: [{{region: {region}, baseURL: "{url}"}}]
  credentials: {{env: FAKE_PROVIDER_KEY}}
---
"""


def table_to(target: str, a: Fake, b: Fake) -> CompiledTable:
    """Both providers declared; route ``general`` sends everything to ``target``."""
    docs = (
        _provider("provider-a", "us-east-1", a.url)
        + _provider("provider-b", "eu-west-1", b.url)
        + f"""
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: general, namespace: {NS}}}
spec:
  models: [general]
  targets: [{{provider: {target}, model: qwen3-8b}}]
"""
    )
    result = compile_local(load_text(docs))
    assert result.ok, result.errors
    return result.table


def configmap(table: CompiledTable) -> dict[str, Any]:
    """What the operator writes (operator/service.py): the table plus its hash annotation."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": TABLE_CONFIGMAP,
            "namespace": NS,
            "annotations": {HASH_ANNOTATION: table.hash},
        },
        "data": {TABLE_KEY: table.to_json().decode()},
    }


def dead_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig naming a 127.0.0.1 port nothing listens on (connect is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    path = tmp_path / "dead-kubeconfig"
    path.write_text(
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    return path


def kube_config(kubeconfig: Path, table_file: Path | None = None) -> ProxyConfig:
    """The ProxyConfig ``modelroute proxy --kube`` builds (src/modelroute/cli/proxy.py)."""
    return ProxyConfig(
        listen=("127.0.0.1", 0),
        admin=("127.0.0.1", 0),
        table_file=table_file,
        kube=True,
        namespace=NS,
        kubeconfig=str(kubeconfig),
        drain_seconds=0.0,
    )


async def target_of(http: aiohttp.ClientSession, proxy: RunningProxy | str) -> str:
    """Send one chat request; which provider/model@region served it (``proxy``: one or a URL)."""
    base_url = proxy if isinstance(proxy, str) else proxy.base_url
    async with http.post(
        base_url + "/chat/completions", json=CHAT, timeout=aiohttp.ClientTimeout(total=5)
    ) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()
        return resp.headers["x-modelroute-target"]


async def status_of(http: aiohttp.ClientSession, proxy: RunningProxy) -> dict[str, Any]:
    assert proxy.admin_url is not None
    async with http.get(
        proxy.admin_url + "/status", timeout=aiohttp.ClientTimeout(total=5)
    ) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def pickup(
    http: aiohttp.ClientSession, proxy: RunningProxy | str, want: str, since: float
) -> float:
    """Send a request every ~50 ms until one is served by ``want``; seconds since ``since``."""
    seen: list[str] = []
    while time.monotonic() - since < PICKUP_LIMIT:
        target = await target_of(http, proxy)
        if target == want:
            return time.monotonic() - since
        seen.append(target)
        await asyncio.sleep(POLL)
    raise AssertionError(f"still not routed to {want} {PICKUP_LIMIT}s after the patch: {seen[-3:]}")


async def test_kube_mode_routes_by_configmap_follows_changes_and_keeps_last_good(
    cluster: Any, kubeconfig: Path, fakes: tuple[Fake, Fake]
) -> None:
    a, b = fakes
    to_a, to_b = table_to("provider-a", a, b), table_to("provider-b", a, b)
    assert to_a.hash != to_b.hash
    target_a, target_b = "provider-a/qwen3-8b@us-east-1", "provider-b/qwen3-8b@eu-west-1"

    async with aiohttp.ClientSession(str(cluster.url)) as kube, aiohttp.ClientSession() as http:
        api = Api(kube)
        await api.namespace(NS)
        await api.post(CM_PATH, configmap(to_a))

        proxy = await asyncio.wait_for(start_proxy(kube_config(kubeconfig)), 10)
        try:
            # 1. the ConfigMap's table is what serves
            assert await target_of(http, proxy) == target_a
            status = await status_of(http, proxy)
            assert status["table"]["hash"] == to_a.hash
            assert status["table"]["source"] == f"configmap/{NS}/{TABLE_CONFIGMAP}"
            assert status["table"]["kube"] == {"connected": True, "lastError": None}

            # 2. the operator rewrites the table: requests move to B within 2 s
            since = time.monotonic()
            await api.patch(f"{CM_PATH}/{TABLE_CONFIGMAP}", configmap(to_b))
            took = await pickup(http, proxy, target_b, since)
            print(f"\n--kube pickup: routed to B {took * 1000:.0f} ms after the ConfigMap patch")
            assert took < PICKUP_LIMIT
            served_by_a = a.fake.stats.requests
            for _ in range(3):  # and it stays there: no flapping back to the old table
                assert await target_of(http, proxy) == target_b
            assert a.fake.stats.requests == served_by_a

            # 3. a ConfigMap that isn't a table at all: refused, B keeps serving
            bad_json = {"data": {TABLE_KEY: "{not json"}}
            await api.patch(f"{CM_PATH}/{TABLE_CONFIGMAP}", bad_json)

            async def rejected() -> dict[str, Any] | None:
                table: dict[str, Any] = (await status_of(http, proxy))["table"]
                return table.get("lastRejected")

            first = await eventually(rejected, within=PICKUP_LIMIT, what="bad JSON refused")
            assert first["source"] == f"configmap/{NS}/{TABLE_CONFIGMAP}"
            assert await target_of(http, proxy) == target_b

            # 4. a well-formed table whose content no longer matches its hash (tampered or
            #    truncated): refused too, with a newer rejection on /status
            tampered = to_b.to_json().decode().replace(b.url, "http://127.0.0.1:9/v1")
            assert tampered != to_b.to_json().decode()
            await api.patch(f"{CM_PATH}/{TABLE_CONFIGMAP}", {"data": {TABLE_KEY: tampered}})

            async def rejected_again() -> dict[str, Any] | None:
                last = await rejected()
                return last if last and last["at"] > first["at"] else None

            second = await eventually(rejected_again, within=PICKUP_LIMIT, what="tampered refused")
            assert second["reason"] != first["reason"]
            for _ in range(3):
                assert await target_of(http, proxy) == target_b
            status = await status_of(http, proxy)
            assert status["table"]["hash"] == to_b.hash
            assert status["health"]["ready"] is True
            assert proxy.admin_url is not None
            async with http.get(proxy.admin_url + "/readyz") as resp:
                assert resp.status == 200

            # 5. and a good table after the bad ones is picked up again
            since = time.monotonic()
            await api.patch(f"{CM_PATH}/{TABLE_CONFIGMAP}", configmap(to_a))
            took = await pickup(http, proxy, target_a, since)
            print(f"--kube pickup after rejections: back to A in {took * 1000:.0f} ms")
        finally:
            await proxy.stop()


async def test_kube_mode_serves_the_mounted_table_when_the_api_is_unreachable(
    tmp_path: Path, fakes: tuple[Fake, Fake]
) -> None:
    a, b = fakes
    table_file = tmp_path / "table.json"
    table_file.write_bytes(table_to("provider-b", a, b).to_json())

    started = time.monotonic()
    proxy = await asyncio.wait_for(
        start_proxy(kube_config(dead_kubeconfig(tmp_path), table_file)), 10
    )
    try:
        took = time.monotonic() - started
        print(f"\n--kube with the API unreachable: serving from --table-file after {took:.2f} s")
        assert took < 6.0  # the first list attempt is bounded (5 s) and must not block serving
        async with aiohttp.ClientSession() as http:
            assert proxy.admin_url is not None
            async with http.get(proxy.admin_url + "/readyz") as resp:
                assert resp.status == 200, await resp.text()
            for _ in range(3):
                assert await target_of(http, proxy) == "provider-b/qwen3-8b@eu-west-1"
            status = await status_of(http, proxy)
        assert status["table"]["source"] == f"file:{table_file}"
        # and it says the API is not answering, so nobody mistakes the mount for the watch
        assert status["table"]["kube"]["connected"] is False
        assert status["table"]["kube"]["lastError"]
        assert status["health"]["ready"] is True
        assert a.fake.stats.requests == 0
        assert b.fake.stats.requests == 3

        # the kubelet (which can still reach the API) syncs a new table into the mount: with
        # the watch down, the mounted copy is the source, so the sidecar follows it (the
        # poll is 1 s, the default `modelroute proxy` uses)
        staged = tmp_path / "table.json.new"
        staged.write_bytes(table_to("provider-a", a, b).to_json())
        staged.replace(table_file)
        async with aiohttp.ClientSession() as http:
            since = time.monotonic()
            while await target_of(http, proxy) != "provider-a/qwen3-8b@us-east-1":
                assert time.monotonic() - since < 3.0, "mounted table change not applied in 3 s"
                await asyncio.sleep(POLL)
    finally:
        await proxy.stop()


LISTENING = re.compile(
    r"listening on (http://127\.0\.0\.1:\d+) \(admin (http://127\.0\.0\.1:\d+)\)"
)


async def test_modelroute_proxy_kube_cli_follows_the_configmap(
    cluster: Any, kubeconfig: Path, fakes: tuple[Fake, Fake], tmp_path: Path
) -> None:
    """The command the injected sidecar runs, as a process: ``KUBECONFIG`` from the
    environment, ``--namespace``, ``--table-file``; then SIGTERM stops it cleanly."""
    a, b = fakes
    to_a, to_b = table_to("provider-a", a, b), table_to("provider-b", a, b)
    table_file = tmp_path / "table.json"
    table_file.write_bytes(to_a.to_json())
    log_path = tmp_path / "proxy.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "POD_NAMESPACE"))}
    env["KUBECONFIG"] = str(kubeconfig)

    async with aiohttp.ClientSession(str(cluster.url)) as kube, aiohttp.ClientSession() as http:
        api = Api(kube)
        await api.namespace(NS)
        await api.post(CM_PATH, configmap(to_a))
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "modelroute",
                "proxy",
                "--kube",
                "--namespace",
                NS,
                "--table-file",
                str(table_file),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--drain-seconds",
                "0",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:

            async def listening() -> re.Match[str] | None:
                assert proc.returncode is None, log_path.read_text()
                return LISTENING.search(log_path.read_text())

            found = await eventually(listening, within=30.0, what="`modelroute proxy --kube` up")
            base_url, admin_url = found.group(1) + "/v1", found.group(2)
            assert await target_of(http, base_url) == "provider-a/qwen3-8b@us-east-1"
            async with http.get(admin_url + "/status") as resp:
                table = (await resp.json())["table"]
            assert table["hash"] == to_a.hash  # the mount and the API agree at start

            since = time.monotonic()
            await api.patch(f"{CM_PATH}/{TABLE_CONFIGMAP}", configmap(to_b))
            took = await pickup(http, base_url, "provider-b/qwen3-8b@eu-west-1", since)
            print(f"\n`modelroute proxy --kube` pickup: {took * 1000:.0f} ms after the patch")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise AssertionError("proxy did not stop within 10 s of SIGTERM") from None
        assert code == 0, log_path.read_text()


@pytest.mark.parametrize("api", ["listed", "created-later", "unreachable"])
async def test_the_mounted_copy_defers_to_a_live_watch(
    cluster: Any, kubeconfig: Path, fakes: tuple[Fake, Fake], tmp_path: Path, api: str
) -> None:
    """The two sources wired as the sidecar needs them: a file change is skipped while the
    API delivers the ConfigMap (found by the first list, or created later and seen by the
    watch) and applied while the API can't be reached."""
    a, b = fakes
    to_a, to_b = table_to("provider-a", a, b), table_to("provider-b", a, b)
    table_file = tmp_path / "table.json"
    table_file.write_bytes(to_b.to_json())
    async with aiohttp.ClientSession(str(cluster.url)) as kube_http:
        api_client = Api(kube_http)
        await api_client.namespace(NS)
        if api == "listed":
            await api_client.post(CM_PATH, configmap(to_b))
        store = TableStore()
        kube = KubeTableSource(
            store,
            namespace=NS,
            kubeconfig=str(dead_kubeconfig(tmp_path) if api == "unreachable" else kubeconfig),
        )
        mount = TableFileSource(store, table_file, 0.05, defer_to=lambda: kube.connected)
        assert mount.load_initial()
        await asyncio.wait_for(kube.start(), 6)
        await mount.start()
        try:
            assert kube.connected is (api == "listed")
            if api == "created-later":  # 404 at start; the watch then sees it created
                await api_client.post(CM_PATH, configmap(to_b))

                async def watched() -> bool:
                    return kube.connected

                await eventually(watched, within=2.0, what="the watch delivers the ConfigMap")
            assert store.current.hash == to_b.hash
            staged = tmp_path / "table.json.new"
            staged.write_bytes(to_a.to_json())
            staged.replace(table_file)
            if api != "unreachable":  # ten polls later the watch's table still stands
                await asyncio.sleep(0.5)
                assert store.current.hash == to_b.hash
                # then the watch goes away: the change it deferred is not lost, it applies
                await kube.stop()
                deadline = time.monotonic() + 2.0
                while store.current.hash != to_a.hash:
                    assert time.monotonic() < deadline, "deferred file change never applied"
                    await asyncio.sleep(0.02)
            else:
                deadline = time.monotonic() + 2.0
                while store.current.hash != to_a.hash:
                    assert time.monotonic() < deadline, "mounted table not applied"
                    await asyncio.sleep(0.02)
                assert store.source == f"file:{table_file}"
        finally:
            await mount.stop()
            await kube.stop()
        assert not kube.connected


async def test_a_lagging_mounted_copy_does_not_undo_a_rollback_while_the_api_is_watched(
    cluster: Any, kubeconfig: Path, fakes: tuple[Fake, Fake], tmp_path: Path
) -> None:
    """The kubelet syncs the mounted ConfigMap a minute or so behind the API.  The operator
    rolls a table out (A) and back (B) within that minute; the mounted copy then shows A.
    While the watch is live the API is the truth: the sidecar must stay on B."""
    a, b = fakes
    to_a, to_b = table_to("provider-a", a, b), table_to("provider-b", a, b)
    target_b = "provider-b/qwen3-8b@eu-west-1"
    table_file = tmp_path / "table.json"
    table_file.write_bytes(to_b.to_json())  # the mount and the API agree at start

    async with aiohttp.ClientSession(str(cluster.url)) as kube, aiohttp.ClientSession() as http:
        api = Api(kube)
        await api.namespace(NS)
        await api.post(CM_PATH, configmap(to_b))
        config = kube_config(kubeconfig, table_file)
        config.reload_seconds = 0.1
        proxy = await asyncio.wait_for(start_proxy(config), 10)
        try:
            assert await target_of(http, proxy) == target_b
            await api.patch(f"{CM_PATH}/{TABLE_CONFIGMAP}", configmap(to_a))  # roll out A
            await pickup(http, proxy, "provider-a/qwen3-8b@us-east-1", time.monotonic())
            await api.patch(f"{CM_PATH}/{TABLE_CONFIGMAP}", configmap(to_b))  # roll back
            await pickup(http, proxy, target_b, time.monotonic())

            # the kubelet's late sync lands the rolled-back table A in the mount (atomically,
            # as the kubelet's symlink swap does)
            staged = tmp_path / "table.json.new"
            staged.write_bytes(to_a.to_json())
            staged.replace(table_file)
            deadline = time.monotonic() + 10 * config.reload_seconds
            while time.monotonic() < deadline:
                assert await target_of(http, proxy) == target_b
                await asyncio.sleep(POLL)
            assert (await status_of(http, proxy))["table"]["hash"] == to_b.hash
        finally:
            await proxy.stop()
