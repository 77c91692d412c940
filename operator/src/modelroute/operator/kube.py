"""The operator's few Kubernetes API calls, over aiohttp.

All writes go through here so the service layer reads as intent ("ensure this
ConfigMap") and tests can see every request reach the API.  Credentials come
from the same resolver the sidecar uses (in-cluster service account or
``KUBECONFIG``), read at start-up, not at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from modelroute.proxy.kube_source import KubeConfig

GROUP_PATH = "/apis/modelroute.io/v1alpha1"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


# What a failed call looks like from KubeApi: an error status or a broken connection (both
# ApiError, see _call), or aiohttp's total timeout, which is no ClientError.
API_FAILURES = (ApiError, TimeoutError)


class KubeApi:
    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeApi:
        self._session = aiohttp.ClientSession(
            base_url=self.config.server,
            headers=self.config.headers(),
            connector=aiohttp.TCPConnector(ssl=self.config.ssl_context()),
            timeout=aiohttp.ClientTimeout(total=10),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> dict[str, Any] | None:
        if self._session is None:
            raise RuntimeError("KubeApi used outside its context")
        headers = {"Content-Type": content_type} if content_type else None
        try:
            async with self._session.request(method, path, json=body, headers=headers) as resp:
                if resp.status == 404:
                    return None
                if resp.status >= 400:
                    raise ApiError(resp.status, (await resp.text())[:500])
                data: dict[str, Any] = await resp.json(loads=orjson.loads, content_type=None)
                return data
        except aiohttp.ClientError as exc:  # unreachable or cut off: one error type for callers
            raise ApiError(503, f"the Kubernetes API is unreachable: {exc}"[:500]) from exc

    async def get(self, path: str) -> dict[str, Any] | None:
        return await self._call("GET", path)

    async def list(self, path: str) -> list[dict[str, Any]]:
        doc = await self._call("GET", path)
        return list((doc or {}).get("items") or [])

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self._call("POST", path, body)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self._call("PATCH", path, body, "application/merge-patch+json")

    async def watch(
        self, path: str, resource_version: str | None, timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events of a collection until the server ends the watch (``timeoutSeconds``)."""
        if self._session is None:
            raise RuntimeError("KubeApi used outside its context")
        params = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        if resource_version:
            params["resourceVersion"] = resource_version
        # no total bound: a watch is meant to stay open; a silent one is cut after a while
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        try:
            async with self._session.get(path, params=params, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise ApiError(resp.status, (await resp.text())[:500])
                pending = b""
                async for chunk in resp.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield orjson.loads(line)
        except aiohttp.ClientError as exc:
            raise ApiError(503, f"the Kubernetes API watch broke: {exc}"[:500]) from exc

    async def delete(self, path: str) -> bool:
        """True when something was deleted, False when it was already gone."""
        return await self._call("DELETE", path) is not None


def core(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def rbac(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def custom(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    path = (
        f"{GROUP_PATH}/namespaces/{namespace}/{plural}" if namespace else f"{GROUP_PATH}/{plural}"
    )
    return f"{path}/{name}" if name else path
