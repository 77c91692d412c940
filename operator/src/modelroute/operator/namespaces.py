"""Every replica's own view of the cluster's namespaces, for the sidecar injector.

Why not kopf's index: with peering, only the leader's kopf watches run; a
standby replica pauses them, its index goes stale or stays empty, yet its
webhook server keeps answering the pod reviews the API server spreads over the
replicas.  An injector that read that index admitted about half the pods of an
enrolled namespace without the sidecar.  This view is a plain list+watch that
peering does not pause, so every replica knows; and where it can't (not synced
yet, a namespace it hasn't seen), :meth:`NamespaceView.lookup` asks the API.

``/readyz`` (:func:`readiness_app`) passes only while the view is synced, so the
webhook Service sends reviews only to replicas that know.  The same listener
serves the operator's ``/metrics`` (``metrics.py``): kopf's liveness server on
the other port is kopf's own and takes no routes of ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from . import metrics, objects
from .kube import API_FAILURES, ApiError, KubeApi

log = logging.getLogger("modelroute.operator")

NAMESPACES = "/api/v1/namespaces"
Entry = tuple[dict[str, str], dict[str, str]]  # labels, annotations


def _entry(raw: Mapping[str, Any]) -> Entry:
    return dict(objects.labels(raw)), dict(objects.annotations(raw))


class NamespaceView:
    def __init__(self, api: KubeApi, *, retry_seconds: float = 1.0) -> None:
        self.api = api
        self.retry_seconds = retry_seconds
        self.synced = False
        self._items: dict[str, Entry] = {}

    def cached(self, name: str) -> Entry | None:
        """What the view holds for ``name`` (None when not synced or not seen)."""
        return self._items.get(name) if self.synced else None

    async def lookup(self, name: str) -> Entry | None:
        """Labels and annotations of ``name``; None if it doesn't exist.

        Raises one of ``API_FAILURES`` when neither the view nor the API can say.
        """
        found = self.cached(name)
        if found is not None:
            return found
        raw = await self.api.get(f"{NAMESPACES}/{name}")
        return None if raw is None else _entry(raw)

    # -- keeping it current ---------------------------------------------------------------

    def replace(self, items: list[dict[str, Any]]) -> None:
        """A full listing: the view is exactly this, and synced."""
        self._items = {name: _entry(raw) for raw in items if (name := objects.name(raw))}
        self.synced = True

    def apply(self, event: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED)."""
        obj = event.get("object") or {}
        name = objects.name(obj)
        if not name:
            return
        if event.get("type") == "DELETED":
            self._items.pop(name, None)
        elif event.get("type") in ("ADDED", "MODIFIED"):
            self._items[name] = _entry(obj)

    async def run(self) -> None:
        """List, then watch from the list's version, forever; relist after any break."""
        while True:
            try:
                await self._list_and_watch()
            except API_FAILURES as exc:
                log.warning("namespace view: %s (relisting in %gs)", exc, self.retry_seconds)
            except Exception:  # a bug must not leave a replica answering from a dead view
                log.exception("namespace view failed (relisting)")
            self.synced = False
            await asyncio.sleep(self.retry_seconds)

    async def _list_and_watch(self) -> None:
        doc = await self.api.get(NAMESPACES) or {}
        self.replace(list(doc.get("items") or []))
        version = objects.resource_version(doc)
        while version:  # without a version (kmock) one watch, then a fresh listing
            async for event in self.api.watch(NAMESPACES, version):
                if event.get("type") == "ERROR":  # 410 Gone: the version is too old
                    status = event.get("object") or {}
                    raise ApiError(int(status.get("code") or 500), str(status.get("message")))
                version = objects.resource_version(event.get("object")) or version
                self.apply(event)
        if not version:
            async for event in self.api.watch(NAMESPACES, None):
                self.apply(event)


def readiness_app(
    view: NamespaceView, registry: CollectorRegistry | None = None
) -> web.Application:
    """``/readyz``: 200 once this replica's namespace view is synced, 503 before and after a break.

    With a registry, ``/metrics`` too: served whatever ``/readyz`` says, because a
    replica that is not ready (its view unsynced) is the one worth seeing.
    """

    async def readyz(_: web.Request) -> web.Response:
        if view.synced:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="namespace view not synced\n")

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    if registry is not None:
        scraped = registry

        async def metrics_page(request: web.Request) -> web.Response:
            body, content_type = metrics.render(scraped, request.headers.get("Accept"))
            return web.Response(body=body, headers={"Content-Type": content_type})

        app.router.add_get("/metrics", metrics_page)
    return app
