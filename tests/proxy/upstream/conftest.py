"""The transports the conformance tests run against, and the servers they talk to.

A second implementation of :class:`modelroute.proxy.upstream.Transport` joins by
adding its factory to ``TRANSPORTS``: every test that takes the ``connect``
fixture (all of ``test_conformance.py``) then runs against it as well, under its
own test id (``test_...[lean]``, ``test_...[yours]``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from modelroute.proxy.upstream import ConnectionPool, TransportFactory

from ...certs import self_signed
from .scripted import Handler, Server

TRANSPORTS: dict[str, TransportFactory] = {
    "lean": ConnectionPool,  # the sidecar's own client: httptools framing, keep-alive pools
}


@pytest.fixture(params=sorted(TRANSPORTS))
def connect(request: pytest.FixtureRequest) -> TransportFactory:
    """Makes one provider's transport, as ``UpstreamPool`` would (``ConnectionPool``'s signature)."""
    return TRANSPORTS[request.param]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Server:
        srv = Server(handler)
        srv.server = await asyncio.start_server(srv._serve, "127.0.0.1", 0)
        servers.append(srv.server)
        return srv

    yield start
    for s in servers:
        s.close()


@pytest.fixture
async def serve_tls(tmp_path: Path) -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Server:
        srv = Server(handler)
        srv.server = await asyncio.start_server(srv._serve, "127.0.0.1", 0, ssl=context)
        srv.cert = str(cert)
        servers.append(srv.server)
        return srv

    yield start
    for s in servers:
        s.close()
