"""An active health probe's one trip: a connect (TCP, and TLS for https) or one ``GET``, then hang up.

A probe must take the road a request would take, or it judges the wrong
thing – and must be refused where a request would be refused.  So it goes
through the same steps: the base URL's origin (``origin.py``), the
connect-time guard against metadata addresses and outside the namespace's
allow-list (``guard.py``: on the name here, on what it resolves to in
``connection.py``), the provider's forward proxy (``egress.py``: a CONNECT
tunnel for https), and TLS with the system trust store.

It never shares the provider's request pool: a probe that borrowed an idle
keep-alive connection would prove nothing about connecting, and one queued
behind ``maxConnections`` busy streams would time out on a healthy endpoint.
Nothing is ever POSTed, and an HTTP probe's answer body is never read: the
connection is closed once the status line and headers are in.

``probe`` raises what a request's connect raises (:class:`~.errors.ConnectFailed`
for refused, unreachable, TLS, DNS and timeouts, :class:`~.errors.RequestNotSent`
and :class:`~.guard.ConnectRefused` for a probe that must not be sent,
:class:`~.errors.Disconnected`/:class:`~.errors.BadResponse` for a broken
answer), plus ``TimeoutError`` when the whole probe outlasts ``within``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

from .connection import open_connection
from .connection_pool import ConnectionPool
from .egress import EgressPolicy
from .guard import check_origin
from .origin import origin_of


class _Connected(asyncio.Protocol):
    """Holds the transport of a probe's connection just long enough to close it."""

    transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


async def probe(
    base_url: str,
    *,
    egress: EgressPolicy,
    within: float,
    path: str | None = None,
    headers: Mapping[str, str] | None = None,
    default_headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> int | None:
    """Probe ``base_url`` within ``within`` seconds: ``None`` for a connect probe, else the GET's status.

    With ``path`` the probe is ``GET <base_url><path>`` with ``headers`` (the
    provider's key, when sent) on a connection of its own; without, a connect
    (and TLS handshake for https) that is closed at once.
    """
    origin = origin_of(base_url)
    check_origin(origin.host)  # the namespace's allow-list and metadata hosts, as for requests
    if path is None:
        connected = await open_connection(
            _Connected,
            origin,
            proxy=egress.proxy_for(origin.host, origin.port, origin.tls),
            ssl_context=ssl_context,
            connect_timeout=within,
        )
        if connected.transport is not None:
            connected.transport.close()
        return None
    pool = ConnectionPool(
        1,
        connect_timeout=within,
        keepalive=0.0,
        default_headers=default_headers,
        ssl_context=ssl_context,
        egress=egress,
    )
    try:
        async with asyncio.timeout(within):
            response = await pool.post(base_url, path, b"", headers or {}, method=b"GET")
        response.release()  # the body unread: the connection closes, nothing is buffered
        return response.status
    finally:
        pool.close()
