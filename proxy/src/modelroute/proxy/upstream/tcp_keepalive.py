"""TCP keepalive on upstream connections: a path that dies after the request was acknowledged.

The silence watch (``silence.py``) catches a request the peer's TCP never
acknowledged.  Once it *has* been acknowledged, TCP has nothing outstanding
while the model thinks (or between stream chunks), so a path that goes dark
then is invisible: the attempt waited ``firstByteMs``, a stream hung until
``totalMs``.  Keepalive probes give TCP something to ask: after
:data:`IDLE_S` without a byte, the kernel sends an empty segment the peer's
TCP must answer (it does, however long the model thinks: the answer comes
from the kernel, not the application); :data:`PROBES` unanswered, one every
:data:`INTERVAL_S`, and the connection fails with ``ETIMEDOUT``.  A dead path
is so noticed about 3 s after the last byte from the upstream.

Two probes, not one: a single lost segment on a live path must not end an
answer a provider is still computing (and billing).  The price is one
40-byte segment each way per second on a connection with nothing to say,
pooled idle ones included – which also retires an idle connection to a dead
path before a request is handed to it.  Linux options; where the platform
lacks them only ``SO_KEEPALIVE`` (with the system's far longer defaults) is set.
"""

from __future__ import annotations

import socket
from typing import Protocol

IDLE_S = 1  # seconds without a byte before the first probe (the kernel's floor is 1 s)
INTERVAL_S = 1  # seconds between probes
PROBES = 2  # unanswered probes that end the connection

_OPTIONS = tuple(
    (getattr(socket, name), value)
    for name, value in (
        ("TCP_KEEPIDLE", IDLE_S),
        ("TCP_KEEPINTVL", INTERVAL_S),
        ("TCP_KEEPCNT", PROBES),
    )
    if hasattr(socket, name)
)


class _Settable(Protocol):
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


def arm(sock: _Settable | None) -> None:
    """Switch keepalive on for ``sock`` (a transport's socket); nothing if there is none."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in _OPTIONS:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:  # not a TCP socket (a test's pipe): there is no path to watch
        return


def died_silent(exc: BaseException | None) -> bool:
    """Did the kernel end the connection because the peer stopped answering (``ETIMEDOUT``)?"""
    return isinstance(exc, TimeoutError)
