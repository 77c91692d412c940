"""Upstream connections ask TCP to notice a dead path, and a death by silence says so.

``upstream/tcp_keepalive.py`` (the kernel suite's ``test_keepalive.py`` has the
real blackhole): every connection gets keepalive probes after 1 s idle, two
1 s apart; a connection the kernel ended with ``ETIMEDOUT`` while the answer's
head was awaited is :class:`PathDied` – a network fact, a timeout come early –
not a refusal (which would claim the upstream never saw the request).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from modelroute.proxy.upstream import tcp_keepalive
from modelroute.proxy.upstream.errors import Disconnected, PathDied
from modelroute.proxy.upstream.http11 import HTTP11Connection
from modelroute.proxy.upstream.origin import origin_of


def test_a_connection_is_armed_with_short_keepalive() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        tcp_keepalive.arm(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux: the probe timing is ours, not the system's
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 2
    tcp_keepalive.arm(None)  # a transport without a socket: nothing to arm, no error


class _Pool:
    def release(self, conn: Any) -> None: ...

    def forget(self, conn: Any) -> None: ...


class _Transport:
    def write(self, data: bytes) -> None: ...

    def get_extra_info(self, name: str) -> None:
        return None

    def close(self) -> None: ...

    def is_closing(self) -> bool:
        return False


async def _sent() -> tuple[HTTP11Connection, asyncio.Future[Any]]:
    conn = HTTP11Connection(_Pool(), origin_of("http://127.0.0.1:1/v1"))  # type: ignore[arg-type]
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    return conn, conn.send(b"POST / HTTP/1.1\r\n\r\n")


async def test_a_connection_the_kernel_timed_out_before_the_answer_is_a_dead_path() -> None:
    conn, head = await _sent()
    conn.connection_lost(TimeoutError(110, "Connection timed out"))
    with pytest.raises(PathDied, match="keepalive probes went unanswered"):
        await head


async def test_a_connection_closed_before_the_answer_is_still_a_disconnect() -> None:
    conn, head = await _sent()
    conn.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(Disconnected):
        await head
