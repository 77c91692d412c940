"""Pooled HTTP clients to the providers: one ``ClientSession`` per provider, reused for every request.

Sessions are created on first use inside the running loop and closed by the
app's ``cleanup_ctx``.  Timeouts are never aiohttp's defaults (300 s total):
the dispatcher bounds each attempt by the route's first-byte and total
deadlines, and the session itself only caps connection set-up.
"""

from __future__ import annotations

import asyncio

import aiohttp

from modelroute import __version__

from .table import CompiledProvider

USER_AGENT = f"modelroute/{__version__}"

# Upstream response headers worth passing to the client; everything else
# (hop-by-hop, content-length/encoding we may change, cookies) stays behind.
FORWARDED_RESPONSE_HEADERS = ("x-request-id", "openai-processing-ms", "openai-version")
FORWARDED_RESPONSE_PREFIXES = ("x-ratelimit-",)


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
        connector = aiohttp.TCPConnector(
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
