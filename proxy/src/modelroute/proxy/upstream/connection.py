"""Opening one connection to an origin: resolve, check, connect, tunnel, TLS.

Everything before the first request byte, bounded as a whole by the
provider's connect timeout: the name is resolved afresh (keep-alive makes
new connections rare, so there is no DNS cache), what it resolved to is
checked (``guard.py``), the addresses are raced Happy-Eyeballs style,
a forward proxy is asked for a CONNECT tunnel when one carries an https
origin, and TLS is started with the system's trust store.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar

import aiohappyeyeballs

from .egress import ForwardProxy, open_tunnel
from .errors import ConnectFailed, RequestNotSent
from .guard import check_resolved
from .origin import Origin

HAPPY_EYEBALLS_DELAY = 0.25  # seconds before trying the next address family (aiohttp's too)

P = TypeVar("P", bound=asyncio.Protocol)


async def open_connection(
    protocol: Callable[[], P],
    origin: Origin,
    *,
    proxy: ForwardProxy | None,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
) -> P:
    """A connected ``protocol()`` to ``origin`` (through ``proxy`` when given), within ``connect_timeout``.

    Raises :class:`ConnectFailed` for a timeout and for every ``OSError`` (refused,
    unreachable, DNS, TLS, a tunnel refused), :class:`RequestNotSent` for a host the
    key must not go to or a value that can't be encoded; the socket never outlives a
    failure.
    """
    loop = asyncio.get_running_loop()
    host, port = (proxy.host, proxy.port) if proxy is not None else (origin.host, origin.port)
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(connect_timeout):
            addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            if proxy is None:  # what the name resolved to now, not what it looked like
                check_resolved(origin.host, addresses)
            # Happy Eyeballs (RFC 8305), as aiohttp's connector does: a dual-stack provider
            # whose IPv6 route is a black hole costs 250 ms, not the whole connect timeout
            sock = await aiohappyeyeballs.start_connection(
                addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1
            )
            if proxy is not None and origin.tls:  # TLS end to end, through a CONNECT tunnel
                await open_tunnel(sock, proxy, origin.host, origin.port)
            _, conn = await loop.create_connection(
                protocol,
                sock=sock,
                ssl=(ssl_context or default_ssl()) if origin.tls else None,
                server_hostname=origin.host if origin.tls else None,
            )
    except BaseException as exc:
        if sock is not None:
            sock.close()  # connected, but the tunnel, TLS or the transport failed (or we gave up)
        if isinstance(exc, TimeoutError):
            raise ConnectFailed(
                f"no connection to {origin.host}:{origin.port}{_via(proxy)} "
                f"within {connect_timeout * 1000:.0f} ms",
                timed_out=True,
            ) from None
        if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS, tunnel refused
            raise ConnectFailed(
                f"cannot connect to {origin.host}:{origin.port}{_via(proxy)}: {exc}"
            ) from exc
        if isinstance(exc, ValueError) and not isinstance(exc, RequestNotSent):
            # a name IDNA can't encode, a TLS server name, proxy credentials that can't be
            # encoded: nothing was sent, and the upstream's health is not in question
            raise RequestNotSent(str(exc)) from exc
        raise
    return conn


def _via(proxy: ForwardProxy | None) -> str:
    return f" through proxy {proxy.shown}" if proxy is not None else ""


@functools.cache
def default_ssl() -> ssl.SSLContext:
    """The system's trust store, built once (loading it costs milliseconds)."""
    return ssl.create_default_context()
