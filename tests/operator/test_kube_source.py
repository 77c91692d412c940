"""The sidecar's ``--kube`` table source against kmock: a ConfigMap change applies within 2 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from modelroute.proxy.compiler import compile_local
from modelroute.proxy.kube_source import KubeTableSource
from modelroute.proxy.table import CompiledTable
from modelroute.proxy.tablestore import TableStore

from modelroute.resources import load_text

NS = "llm-apps"
CM_PATH = f"/api/v1/namespaces/{NS}/configmaps"

PROVIDER = """
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: gateway, namespace: llm-apps}
spec:
  api: openai
  endpoints: [{region: us-east, baseURL: "http://127.0.0.1:9/v1"}]
  credentials: {env: GATEWAY_KEY}
  builtinCatalogue: true
"""


def _table(alias: str, model: str) -> CompiledTable:
    route = f"""
---
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: r, namespace: llm-apps}}
spec:
  models: [{alias}]
  targets: [{{provider: gateway, model: {model}}}]
"""
    result = compile_local(load_text(PROVIDER + route))
    assert result.ok, result.errors
    return result.table


def _cm(data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "modelroute-table", "namespace": NS},
        "data": {"table.json": data},
    }


async def _wait_for(predicate: Any, within: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {within}s")


async def test_kube_source_follows_configmap_and_keeps_last_good(
    kmock: Any, kubeconfig: Path
) -> None:
    kmock.resources.load_bundled()
    first, second = _table("general", "qwen3-8b"), _table("general", "deepseek-v4-flash")
    assert first.hash != second.hash
    async with aiohttp.ClientSession(str(kmock.url)) as api:
        resp = await api.post(CM_PATH, json=_cm(first.to_json().decode()))
        assert resp.status in (200, 201)

        store = TableStore()
        source = KubeTableSource(store, namespace=NS, kubeconfig=str(kubeconfig))
        await asyncio.wait_for(source.start(), 5)
        try:
            assert store.loaded
            assert store.current.hash == first.hash

            patch = {"data": {"table.json": second.to_json().decode()}}
            hdrs = {"Content-Type": "application/merge-patch+json"}
            resp = await api.patch(f"{CM_PATH}/modelroute-table", json=patch, headers=hdrs)
            assert resp.status == 200
            took = await _wait_for(lambda: store.current.hash == second.hash, 2.0)
            assert took < 2.0

            # A corrupted table (hash no longer matches content) is refused; the good one stays.
            bad = second.to_json().decode().replace("deepseek-v4-flash", "evil-model")
            resp = await api.patch(
                f"{CM_PATH}/modelroute-table", json={"data": {"table.json": bad}}, headers=hdrs
            )
            assert resp.status == 200
            await _wait_for(lambda: store.last_rejected is not None, 2.0)
            assert store.current.hash == second.hash
        finally:
            await source.stop()


async def test_start_does_not_block_when_api_unreachable(tmp_path: Path) -> None:
    cfg = tmp_path / "kc"
    cfg.write_text(
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    store = TableStore()
    source = KubeTableSource(store, namespace=NS, kubeconfig=str(cfg))
    await asyncio.wait_for(source.start(), 6)
    try:
        assert not store.loaded
        assert source.last_error
        assert "list failed" in source.last_error
    finally:
        await source.stop()


@pytest.mark.parametrize("missing", ["no-such-dir/kubeconfig"])
async def test_start_without_credentials_returns(tmp_path: Path, missing: str) -> None:
    source = KubeTableSource(TableStore(), namespace=NS, kubeconfig=str(tmp_path / missing))
    await asyncio.wait_for(source.start(), 2)
    assert source.last_error
    assert "credentials" in source.last_error
    await source.stop()
