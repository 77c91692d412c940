"""Feed the sidecar's :class:`TableStore` from its namespace's ``modelroute-table`` ConfigMap.

The sidecar watches the API (not just the kubelet-synced mounted file, which
can lag by a minute) so a new table applies within a couple of seconds.  It
never blocks serving: :meth:`KubeTableSource.start` returns after the first
list attempt whatever its outcome, and a background task keeps re-listing and
re-watching with capped exponential backoff.  Bad tables are refused by
``store.offer_json`` and the last good one keeps serving.

:attr:`KubeTableSource.connected` says whether the API is answering for this
ConfigMap right now: while it is, the mounted copy (``TableFileSource``) is only
a mirror running a minute behind and must not replace what the watch delivered
(it would bring back a table the operator just rolled back).

Plain aiohttp, no Kubernetes client library: the sidecar needs one GET and one
watch, and the image stays small.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .tablestore import TableStore

log = logging.getLogger("modelroute.kube")

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TABLE_KEY = "table.json"


@dataclass(frozen=True)
class KubeConfig:
    """Where the API is and how to authenticate: in-cluster service account or a kubeconfig."""

    server: str
    token: str | None = None
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    namespace: str | None = None

    @classmethod
    def resolve(cls, kubeconfig: str | None = None) -> KubeConfig:
        """Explicit kubeconfig, else ``$KUBECONFIG``, else the pod's service account."""
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path:
            return cls.from_kubeconfig(Path(path.split(os.pathsep)[0]))
        return cls.in_cluster()

    @classmethod
    def in_cluster(cls) -> KubeConfig:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError("not in a cluster (no KUBERNETES_SERVICE_HOST) and no KUBECONFIG")
        if ":" in host:
            host = f"[{host}]"
        ns_file = SA_DIR / "namespace"
        return cls(
            server=f"https://{host}:{port}",
            token=(SA_DIR / "token").read_text().strip(),
            ca_file=str(SA_DIR / "ca.crt"),
            namespace=ns_file.read_text().strip() if ns_file.exists() else None,
        )

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeConfig:
        """Read a kubeconfig (PyYAML imported here: in-cluster sidecars never load it)."""
        import yaml

        try:
            doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RuntimeError(f"{path} is not valid YAML: {exc}") from exc
        current = doc.get("current-context")
        contexts = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
        ctx = contexts.get(current, {}) if current else next(iter(contexts.values()), {})
        clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in doc.get("users") or []}
        cluster = clusters.get(ctx.get("cluster"), next(iter(clusters.values()), {}))
        user = users.get(ctx.get("user"), {})
        token = user.get("token")
        if token is None and user.get("tokenFile"):
            token = Path(user["tokenFile"]).read_text().strip()
        ca_data = cluster.get("certificate-authority-data")
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            token=token,
            ca_file=cluster.get("certificate-authority"),
            ca_data=base64.b64decode(ca_data) if ca_data else None,
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
            namespace=ctx.get("namespace"),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return True
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.ca_data:
            ctx.load_verify_locations(cadata=self.ca_data.decode())
        return ctx

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class KubeTableSource:
    """List + watch one ConfigMap and offer its ``table.json`` to the store."""

    # Backoff after a failed list/watch: full jitter, capped so recovery stays quick.
    BACKOFF_BASE = 0.2
    BACKOFF_MAX = 5.0
    # Server-side watch timeout; the loop simply re-watches afterwards.
    WATCH_SECONDS = 300

    def __init__(
        self,
        store: TableStore,
        *,
        namespace: str | None = None,
        configmap: str = "modelroute-table",
        kubeconfig: str | None = None,
    ) -> None:
        self.store = store
        self.configmap = configmap
        self._kubeconfig = kubeconfig
        self._namespace = namespace
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._config: KubeConfig | None = None
        self.last_error: str | None = None
        # True from the API delivering the ConfigMap until a list or watch fails: the
        # API is the source of truth then, and the lagging mounted copy defers to it
        self.connected = False

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            raise RuntimeError("namespace unknown: pass namespace= or run in a pod")
        return self._namespace

    @property
    def source(self) -> str:
        return f"configmap/{self._namespace}/{self.configmap}"

    async def start(self) -> None:
        """Do the first list (success or failure), then keep watching in the background."""
        try:
            self._config = KubeConfig.resolve(self._kubeconfig)
        except (OSError, RuntimeError, KeyError) as exc:
            self.last_error = f"no Kubernetes credentials: {exc}"
            log.error("%s; serving from the mounted table only", self.last_error)
            return
        if self._namespace is None:
            self._namespace = self._config.namespace or "default"
        self._session = aiohttp.ClientSession(
            base_url=self._config.server,
            headers=self._config.headers(),
            connector=aiohttp.TCPConnector(ssl=self._config.ssl_context()),
        )
        listed = await self._list_once()
        self._task = asyncio.create_task(self._run(listed), name="kube-table-source")

    async def stop(self) -> None:
        self.connected = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps"

    def _offer(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("name") != self.configmap:
            return  # field selectors are advisory for us: filter client-side too
        self.connected = True  # listed or watched: the API is answering with our ConfigMap
        data = (obj.get("data") or {}).get(TABLE_KEY)
        if data is None:
            self.store.reject(self.source, f"ConfigMap has no {TABLE_KEY!r} key")
            return
        self.store.offer_json(data, self.source)

    async def _list_once(self) -> str | None:
        """LIST the ConfigMap by name; returns the list's resourceVersion, None when it failed.

        A list, not a GET of the object: the watch must start from the *collection's*
        resourceVersion.  An object's own version can be older than anything the API
        server's watch cache holds (a restarted kube-apiserver starts its cache at the
        current etcd revision), and a watch from it fails with 410 Expired on every retry.
        The name is a field selector, which RBAC matches against the sidecar Role's
        ``resourceNames``.
        """
        assert self._session is not None
        params = {"fieldSelector": f"metadata.name={self.configmap}"}
        try:
            async with self._session.get(
                self._path, params=params, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                resp.raise_for_status()
                doc: dict[str, Any] = await resp.json(loads=orjson.loads)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.last_error = f"list failed: {exc!r}"
            self.connected = False
            log.warning("route table %s: %s", self.source, self.last_error)
            return None
        version = str((doc.get("metadata") or {}).get("resourceVersion") or "")
        found = [
            o
            for o in doc.get("items") or []
            if (o.get("metadata") or {}).get("name") == self.configmap
        ]
        if not found:
            self.last_error = "ConfigMap not found (yet)"
            self.connected = False  # no table from the API: the mount may have one
            return version
        self.last_error = None
        self._offer(found[0])
        return version

    async def _watch(self, resource_version: str) -> None:
        assert self._session is not None
        params = {
            "watch": "true",
            "fieldSelector": f"metadata.name={self.configmap}",
            "timeoutSeconds": str(self.WATCH_SECONDS),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=5, sock_read=self.WATCH_SECONDS + 30
        )
        async with self._session.get(self._path, params=params, timeout=timeout) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if not line.strip():
                    continue
                event: dict[str, Any] = orjson.loads(line)
                kind = event.get("type")
                if kind in ("ADDED", "MODIFIED"):
                    self._offer(event.get("object") or {})
                elif kind == "ERROR":  # e.g. 410 Gone: resourceVersion too old → re-list
                    raise aiohttp.ClientError(f"watch error: {event.get('object')}")
                # DELETED: keep serving the last good table; the operator removes the
                # table only when the namespace leaves, and then the sidecar goes too.

    async def _run(self, listed: str | None) -> None:
        failures = 0 if listed is not None else 1
        resource_version = listed
        while True:
            if resource_version is None:
                delay = random.uniform(0, min(self.BACKOFF_MAX, self.BACKOFF_BASE * 2**failures))
                await asyncio.sleep(delay)
                resource_version = await self._list_once()
                if resource_version is None:
                    failures += 1
                    continue
            try:
                await self._watch(resource_version)
                failures = 0
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failures += 1
                self.connected = False
                self.last_error = f"watch failed: {exc!r}"
                log.warning("route table %s: %s", self.source, self.last_error)
            resource_version = None  # always re-list after a watch ends: never miss a change
