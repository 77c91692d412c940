"""One pool per provider across reloads: a new pool for new settings, the old one drains.

A request still running under the previous table (a retry or a hedge after a
reload that changed ``maxConnections``) must use the retired pool, not throw
away the new one each time it asks: that churn let connections exceed the
provider's limit.
"""

from __future__ import annotations

from typing import Any

from modelroute.proxy.table import CompiledEndpoint, CompiledProvider, CompiledTable
from modelroute.proxy.upstream import ConnectionPool, Transport, UpstreamPool


def provider(max_connections: int) -> CompiledProvider:
    return CompiledProvider(
        name="p",
        endpoints=(CompiledEndpoint(region="r", base_url="http://127.0.0.1:9/v1"),),
        max_connections=max_connections,
    )


def table(*providers: CompiledProvider) -> CompiledTable:
    return CompiledTable(namespace="ns", providers=providers, routes=())


async def test_a_reload_retires_the_old_pool_and_old_requests_do_not_replace_the_new_one() -> None:
    pools = UpstreamPool()
    old, new = provider(2), provider(8)
    pools.table_applied(table(old))
    first = pools.pool(old)
    assert pools.pool(old) is first and first.limit == 2

    pools.table_applied(table(new))  # the reload: maxConnections 2 -> 8
    assert first.retired
    current = pools.pool(new)
    assert current is not first and current.limit == 8 and not current.retired
    for _ in range(3):  # requests of the old table and of the new one, interleaved
        assert pools.pool(old).limit == 2 and pools.pool(old).retired
        assert pools.pool(new) is current  # never replaced by an old table's request
    assert not current.retired
    assert pools.state() == {"p": (0, 0, 0)}

    pools.table_applied(table(old))  # and back again: the old settings are current once more
    assert current.retired
    reverted = pools.pool(old)
    assert reverted.limit == 2 and not reverted.retired  # a pool that keeps connections again
    assert pools.pool(old) is reverted
    await pools.close()


async def test_the_pools_are_made_by_the_transport_factory_they_are_given() -> None:
    """How a second implementation of the Transport protocol plugs in behind the same pools."""
    made: list[tuple[int, float]] = []

    def factory(limit: int, *, connect_timeout: float, **settings: Any) -> Transport:
        made.append((limit, connect_timeout))
        return ConnectionPool(limit, connect_timeout=connect_timeout, **settings)

    pools = UpstreamPool(transport=factory)
    pools.table_applied(table(provider(3)))
    first = pools.pool(provider(3))
    assert pools.pool(provider(3)) is first and made == [(3, 1.0)]  # connectTimeoutMs: 1000
    await pools.close()
