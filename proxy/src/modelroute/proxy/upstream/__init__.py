"""The hop to the providers: one lean HTTP/1.1 connection pool per provider, and nothing more.

Why not aiohttp's ``ClientSession`` (which the sidecar used before): it is a
general client, and the generality is paid on every request – a request
object, a connector lease, trace hooks, cookie handling, a multidict per
header set, a redirect loop.  Measured on the bench machine, a bare aiohttp
pass-through spends ~200 µs of CPU per request and ~100 µs of that is the
client; the same pass-through with this client spends ~100 µs.  A sidecar
pays that on every request of every pod, and at 20 concurrent connections the
slowest request waits for the CPU of all the others, so it shows at p99.

What it does, all of it: one pool per provider with a connection limit and a
FIFO queue when the limit is reached, keep-alive reuse (idle connections
closed after ``keepalive`` seconds), HTTPS through the loop's TLS, a connect
timeout, framing by ``httptools`` (llhttp, the parser behind uvicorn and
Node.js: Content-Length, chunked, read-until-close), gzip/deflate bodies
decoded, and read flow control (a slow reader pauses the socket instead of
buffering a whole stream).  Egress through an HTTP forward proxy (CONNECT
tunnels for https, absolute-form requests for http) follows ``egress``.
What it leaves out on purpose: redirects (the sidecar must never follow one
with a provider key), cookies, HTTP/2, ``Expect: 100-continue``.

The rooms, each with one job (as httpcore splits ``connection_pool.py`` /
``connection.py`` / ``http11.py``); a room imports only rooms in the rows
below its own (import-linter holds it: ``pyproject.toml``):

=====================  =============================================================
``providers``          the sidecar's pools: one per provider and pool shape, across reloads
``probe``              an active health probe's one trip: a connect or one GET, then hang up
``connection_pool``    one provider's pool: the limit, the FIFO queue, keep-alive reuse
``transport``          what the sidecar asks of a pool: the ``Transport`` protocol
``connection``         opening one connection: resolve, check, connect, tunnel, TLS
``http11``             HTTP/1.1 on one connection, framed by httptools; the ``Response``
``egress``             which connections take a forward proxy; the CONNECT tunnel
``guard``              where a provider key may go: no metadata host, the allow-list
``body``               an answer's body as it arrives: gzip/deflate, flow control
``origin``             a base URL's origin, the request target, header encoding
``silence``            is a written request unacknowledged on a dead path? (``TCP_INFO``)
``errors``             the one error tree (``UpstreamError`` and its kinds)
=====================  =============================================================

The rest of the sidecar uses what this module exports, and holds a pool as a
:class:`Transport`, so a second implementation plugs in behind it.
"""

from __future__ import annotations

from .connection_pool import ConnectionPool
from .egress import EgressConfigError, EgressPolicy
from .errors import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    PathDied,
    PathSilent,
    RequestNotSent,
    UpstreamError,
)
from .guard import ConnectRefused, check_origin
from .http11 import Response
from .providers import UpstreamPool, forwarded_headers
from .transport import (
    PoolWait,
    ResponseBody,
    Transport,
    TransportFactory,
    UpstreamResponse,
)

__all__ = [
    "BadResponse",
    "ConnectFailed",
    "ConnectRefused",
    "ConnectionPool",
    "Disconnected",
    "EgressConfigError",
    "EgressPolicy",
    "PathDied",
    "PathSilent",
    "PoolWait",
    "RequestNotSent",
    "Response",
    "ResponseBody",
    "Transport",
    "TransportFactory",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "check_origin",
    "forwarded_headers",
]
