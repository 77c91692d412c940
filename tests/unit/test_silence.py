"""The silent-path verdict (proxy/upstream/silence.py): ``struct tcp_info`` read, and judged.

The figures are the ones a black-holed loopback connection showed in a
network namespace (an nftables drop on output: the request is never even
sent; a drop on input, as a router would: sent, retransmitted), and the
cases that must never be called silent: a peer that ACKed, one whose
delayed ACK is still due, one advertising a zero window.
"""

from __future__ import annotations

import socket
import struct
import sys

import pytest
from modelroute.proxy.upstream import silence
from modelroute.proxy.upstream.silence import TcpInfo


def raw_info(
    *, retransmits: int = 0, backoff: int = 0, unacked: int = 0, since_ack_ms: int = 0,
    notsent: int | None = 0,
) -> bytes:  # fmt: skip
    """Bytes laid out as ``linux/tcp.h``'s ``struct tcp_info`` (232, or the old 104)."""
    u8 = [1, 0, retransmits, 0, backoff, 0, 0, 0]
    u32 = [0] * 24
    u32[0] = 204000  # rto, µs
    u32[4] = unacked
    u32[12] = since_ack_ms  # tcpi_last_ack_recv
    head = struct.pack("=8B24I", *u8, *u32)
    if notsent is None:
        return head
    tail = bytearray(232 - len(head))
    struct.pack_into("=I", tail, 144 - len(head), notsent)
    return head + bytes(tail)


def test_the_fields_come_from_where_linux_puts_them() -> None:
    info = silence.parse(
        raw_info(retransmits=1, backoff=2, unacked=3, since_ack_ms=756, notsent=300)
    )
    assert info == TcpInfo(backoff=2, retransmits=1, unacked=3, notsent=300, since_ack=0.756)
    old = silence.parse(raw_info(unacked=1, notsent=None))  # a kernel before tcpi_notsent_bytes
    assert old is not None and old.notsent == 0 and old.outstanding
    assert silence.parse(b"\x00" * 100) is None


@pytest.mark.parametrize(
    ("case", "info", "elapsed"),
    [
        # nft drop on output: never sent, the kernel's send probe backs off (measured: 0.70 s)
        ("local drop", TcpInfo(backoff=2, retransmits=0, unacked=0, notsent=300, since_ack=0.756), 0.70),
        # drop on the way (input): sent, tail-loss probe, then the RTO (measured: 0.70 s)
        ("path drop", TcpInfo(backoff=1, retransmits=1, unacked=1, notsent=0, since_ack=0.756), 0.70),
    ],
)  # fmt: skip
def test_a_request_nobody_acknowledged_is_silent(case: str, info: TcpInfo, elapsed: float) -> None:
    assert silence.silent(info, elapsed, deadline=0.1), case


@pytest.mark.parametrize(
    ("case", "info", "elapsed"),
    [
        ("acknowledged", TcpInfo(backoff=0, retransmits=0, unacked=0, notsent=0, since_ack=0.7), 0.7),
        # a delayed ACK (≤ 200 ms on Linux, ≤ 500 ms by RFC 1122) may still be on its way
        ("before the floor", TcpInfo(backoff=1, retransmits=1, unacked=1, notsent=0, since_ack=0.45), 0.45),
        # only the tail-loss probe went out: the kernel itself has not timed out yet
        ("no backoff yet", TcpInfo(backoff=0, retransmits=0, unacked=1, notsent=0, since_ack=0.6), 0.6),
        # a zero window: the peer ACKs its window probes, it is only not reading
        ("zero window", TcpInfo(backoff=3, retransmits=0, unacked=0, notsent=900, since_ack=0.05), 2.0),
        # a far endpoint: its own deadline (connect time) is longer than the floor
        ("far endpoint", TcpInfo(backoff=1, retransmits=1, unacked=1, notsent=0, since_ack=0.6), 0.6),
    ],
)  # fmt: skip
def test_a_peer_that_may_be_alive_is_never_silent(case: str, info: TcpInfo, elapsed: float) -> None:
    deadline = 0.9 if case == "far endpoint" else 0.1
    assert not silence.silent(info, elapsed, deadline), case


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux's")
def test_a_real_socket_reads_as_nothing_outstanding() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        conn, _ = server.accept()
        with conn:
            client.sendall(b"x" * 100)
            assert conn.recv(1000)
            info = silence.read(client)
            assert info is not None
            assert not info.outstanding and info.backoff == 0
    assert silence.read(None) is None
