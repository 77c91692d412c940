"""Pooled connections to the providers: one :class:`~.connection_pool.ConnectionPool` each.

Pools are created on first use inside the running loop and closed by the
app's ``cleanup_ctx``.  The pool itself only bounds connection set-up; the
dispatcher bounds each attempt by the route's first-byte and total deadlines.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from importlib.metadata import version

from ..credentials import Credentials, MissingCredentials
from ..table import CompiledProvider, CompiledTable, KeySource
from .connection_pool import ConnectionPool
from .egress import (
    DIRECT,
    NO_EGRESS,
    EgressPolicy,
    ForwardProxy,
    basic_authorization,
    parse_proxy_url,
)
from .probe import probe
from .transport import Transport, TransportFactory

USER_AGENT = f"modelroute/{version('modelroute')}"  # the version pyproject.toml gives
# sent with every upstream request; the decoders in body.py handle what this accepts
DEFAULT_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
KEEPALIVE_SECONDS = 30.0  # idle connections closed after this (providers close at ~60 s+)

# Upstream response headers worth passing to the client; everything else
# (hop-by-hop, content-length/encoding we may change, cookies) stays behind.
FORWARDED_RESPONSE_HEADERS = ("x-request-id", "openai-processing-ms", "openai-version")
FORWARDED_RESPONSE_PREFIXES = ("x-ratelimit-",)


# provider name, maxConnections, connectTimeoutMs, egress proxy and its credentials' source
PoolShape = tuple[str, int, int, str | None, KeySource | None]


def _shape(provider: CompiledProvider) -> PoolShape:
    return (
        provider.name,
        provider.max_connections,
        provider.connect_timeout_ms,
        provider.egress_proxy,
        provider.egress_proxy_credentials,
    )


class UpstreamPool:
    """The sidecar's connection pools: one per provider, sized by its ``maxConnections``.

    A reload that changes a provider's pool settings gets a new pool; the old
    one is retired (it keeps no idle connection) and drains.  Pools are keyed
    by their settings, and the table applied last says which are current, so
    a request still running under the previous table (a retry, a hedge) uses
    the retired pool instead of replacing the new one each time it asks.
    """

    def __init__(
        self,
        egress: EgressPolicy = NO_EGRESS,
        credentials: Credentials | None = None,
        *,
        transport: TransportFactory = ConnectionPool,
    ) -> None:
        self.egress = egress  # the sidecar's environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)
        self.credentials = credentials  # reads a provider's egress.proxyCredentials
        self._transport = transport  # makes one provider's pool (the lean client's, unless given)
        self._pools: dict[PoolShape, Transport] = {}
        self._current: set[PoolShape] | None = None  # the applied table's shapes (None: not yet)

    def table_applied(self, table: CompiledTable) -> None:
        self._current = {_shape(p) for p in table.providers}
        for shape, pool in list(self._pools.items()):
            if shape in self._current and not pool.retired:
                continue
            pool.retire()  # idle connections close now, lent ones as they come back
            # drained, or current again after a revert: the next request gets a fresh pool
            if shape in self._current or (not pool.in_use and not pool.queued):
                del self._pools[shape]

    def pool(self, provider: CompiledProvider) -> Transport:
        shape = _shape(provider)
        found = self._pools.get(shape)
        if found is None:
            found = self._pools[shape] = self._transport(
                provider.max_connections,
                connect_timeout=provider.connect_timeout_ms / 1000,
                keepalive=KEEPALIVE_SECONDS,
                default_headers=DEFAULT_HEADERS,
                egress=self.egress_for(provider),
            )
            if self._current is not None and shape not in self._current:
                found.retire()  # asked for by a request of an earlier table
        return found

    async def probe(
        self,
        provider: CompiledProvider,
        base_url: str,
        *,
        within: float,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int | None:
        """One active health probe of ``base_url`` on the provider's egress road (``probe.py``).

        On a connection of its own, never one of the request pool's: see ``probe.py``.
        """
        return await probe(
            base_url,
            egress=self.egress_for(provider),
            within=within,
            path=path,
            headers=headers,
            default_headers=DEFAULT_HEADERS,
        )

    def egress_for(self, provider: CompiledProvider) -> EgressPolicy:
        """The environment's policy, with the provider's ``spec.egress`` on top."""
        setting = provider.egress_proxy
        if setting is None:
            return self.egress
        if setting == DIRECT:
            return self.egress.for_provider(None, direct=True)
        proxy = parse_proxy_url(setting, f"ModelProvider {provider.name} spec.egress.proxy")
        source, credentials = provider.egress_proxy_credentials, self.credentials
        if source is not None and credentials is not None:

            def authorization(source: KeySource = source, store: Credentials = credentials) -> str:
                try:
                    return basic_authorization(store.key_for(source))
                except MissingCredentials as exc:  # connect fails, and says why (no value)
                    raise ConnectionRefusedError(
                        f"no proxy credentials for provider {provider.name}: {exc}"
                    ) from None

            proxy = ForwardProxy(proxy.host, proxy.port, authorization=authorization)
        return self.egress.for_provider(proxy, direct=False)

    def state(self) -> dict[str, tuple[int, int, int]]:
        """Per provider: connections in use, idle keep-alive connections, requests queued."""
        out: dict[str, tuple[int, int, int]] = {}
        for (name, *_), p in self._pools.items():
            in_use, idle, queued = out.get(name, (0, 0, 0))
            out[name] = (in_use + p.in_use, idle + p.idle, queued + p.queued)
        return out

    async def close(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            pool.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream answer's headers worth passing on (``headers`` has lower-case names)."""
    return {
        name: value
        for name, value in headers.items()
        if (_known_forwarded(name) if len(name) <= 64 else _is_forwarded(name))
    }


def _is_forwarded(name: str) -> bool:
    return name in FORWARDED_RESPONSE_HEADERS or name.startswith(FORWARDED_RESPONSE_PREFIXES)


# answers repeat a handful of names: each decided once (short names only, so an upstream
# inventing long ones can't make the cache hold much)
_known_forwarded = functools.lru_cache(maxsize=256)(_is_forwarded)
