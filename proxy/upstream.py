"""Pooled connections to the providers: one :class:`~.httpclient.ConnectionPool` per provider.

Pools are created on first use inside the running loop and closed by the
app's ``cleanup_ctx``.  The pool itself only bounds connection set-up; the
dispatcher bounds each attempt by the route's first-byte and total deadlines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from modelroute import __version__

from .httpclient import ConnectionPool
from .table import CompiledProvider

USER_AGENT = f"modelroute/{__version__}"
# sent with every upstream request; the decoder in httpclient handles what this accepts
DEFAULT_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
KEEPALIVE_SECONDS = 30.0  # idle connections closed after this (providers close at ~60 s+)

# Upstream response headers worth passing to the client; everything else
# (hop-by-hop, content-length/encoding we may change, cookies) stays behind.
FORWARDED_RESPONSE_HEADERS = ("x-request-id", "openai-processing-ms", "openai-version")
FORWARDED_RESPONSE_PREFIXES = ("x-ratelimit-",)


class UpstreamPool:
    """The sidecar's connection pools: one per provider, sized by its ``maxConnections``."""

    def __init__(self) -> None:
        self._pools: dict[str, ConnectionPool] = {}
        self._retired: list[ConnectionPool] = []  # replaced by a reload, still draining

    def pool(self, provider: CompiledProvider) -> ConnectionPool:
        found = self._pools.get(provider.name)
        if found is not None and found.limit == provider.max_connections:
            return found
        if found is not None:  # pool size changed by a reload: a new pool; the old one drains
            found.retire()  # idle connections close now, lent ones as they come back
            self._retired = [p for p in self._retired if p.in_use or p.queued]
            self._retired.append(found)
        pool = ConnectionPool(
            provider.max_connections,
            connect_timeout=provider.connect_timeout_ms / 1000,
            keepalive=KEEPALIVE_SECONDS,
            default_headers=DEFAULT_HEADERS,
        )
        self._pools[provider.name] = pool
        return pool

    def state(self) -> dict[str, tuple[int, int, int]]:
        """Per provider: connections in use, idle keep-alive connections, requests queued."""
        return {name: (p.in_use, p.idle, p.queued) for name, p in self._pools.items()}

    async def close(self) -> None:
        pools = list(self._pools.values()) + self._retired
        self._pools.clear()
        self._retired.clear()
        for pool in pools:
            pool.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream answer's headers worth passing on (``headers`` has lower-case names)."""
    return {
        name: value
        for name, value in headers.items()
        if name in FORWARDED_RESPONSE_HEADERS or name.startswith(FORWARDED_RESPONSE_PREFIXES)
    }
