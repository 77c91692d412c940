"""Pooled HTTP clients to the providers: one ``ClientSession`` per provider, reused for every request.

Sessions are created on first use inside the running loop and closed by the
app's ``cleanup_ctx``.  Timeouts are never aiohttp's defaults (300 s total):
the dispatcher bounds each attempt by the route's first-byte and total
deadlines, and the session itself only caps connection set-up.
"""

from __future__ import annotations

import asyncio
import contextvars

import aiohttp
import aiohttp.connector
import aiohttp.tracing

from modelroute import __version__

from .table import CompiledProvider

USER_AGENT = f"modelroute/{__version__}"

# Upstream response headers worth passing to the client; everything else
# (hop-by-hop, content-length/encoding we may change, cookies) stays behind.
FORWARDED_RESPONSE_HEADERS = ("x-request-id", "openai-processing-ms", "openai-version")
FORWARDED_RESPONSE_PREFIXES = ("x-ratelimit-",)


class PoolWait:
    """What one attempt's trip through the connection pool looked like.

    A first-byte timeout that fires while the attempt still waits for a free
    connection (the provider's ``maxConnections`` are all busy, e.g. with long
    streams) says nothing about the upstream's health; one that fires after it
    got a connection does.  :class:`PoolConnector` fills this in for the attempt
    that set it in :data:`POOL_WAIT`.
    """

    __slots__ = ("connected", "queued")

    def __init__(self) -> None:
        self.queued = False  # the pool had no free connection when the attempt asked
        self.connected = False  # the attempt got its connection

    @property
    def stuck_in_queue(self) -> bool:
        return self.queued and not self.connected


POOL_WAIT: contextvars.ContextVar[PoolWait | None] = contextvars.ContextVar(
    "modelroute_pool_wait", default=None
)


class PoolConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that notes, for the running attempt, whether it had to queue."""

    # aiohttp's own signature (its ``timeout`` is the session's ClientTimeout), not ours to change
    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[aiohttp.tracing.Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> aiohttp.connector.Connection:
        wait = POOL_WAIT.get()
        if wait is not None:
            # aiohttp's own test for "must wait for a slot" (limit and per-host limit); it is
            # private, hence getattr: should a release drop it, pool waits count as timeouts
            # again and tests/faults/test_pool_queue.py says so
            available = getattr(self, "_available_connections", None)
            wait.queued = available is not None and available(req.connection_key) <= 0
        conn = await super().connect(req, traces, timeout)
        if wait is not None:
            wait.connected = True
        return conn


class UpstreamPool:
    def __init__(self) -> None:
        self._sessions: dict[str, tuple[int, aiohttp.ClientSession]] = {}
        self._retired: list[aiohttp.ClientSession] = []

    def session(self, provider: CompiledProvider) -> aiohttp.ClientSession:
        found = self._sessions.get(provider.name)
        if found is not None and found[0] == provider.max_connections:
            return found[1]
        if found is not None:  # pool size changed by a reload: new session, old one drains
            self._retired.append(found[1])
        connector = PoolConnector(
            limit=provider.max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=30,
            enable_cleanup_closed=True,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=provider.connect_timeout_ms / 1000
            ),
            headers={"User-Agent": USER_AGENT},
            auto_decompress=True,
            trust_env=False,
        )
        self._sessions[provider.name] = (provider.max_connections, session)
        return session

    async def close(self) -> None:
        sessions = [s for _, s in self._sessions.values()] + self._retired
        self._sessions.clear()
        self._retired.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


def forwarded_headers(headers: aiohttp.typedefs.LooseHeaders) -> dict[str, str]:
    out: dict[str, str] = {}
    items = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        lower = str(name).lower()
        if lower in FORWARDED_RESPONSE_HEADERS or lower.startswith(FORWARDED_RESPONSE_PREFIXES):
            out[lower] = str(value)
    return out
