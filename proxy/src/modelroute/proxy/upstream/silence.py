"""Is a written request sitting unacknowledged on a dead path?  The kernel's ``TCP_INFO`` says.

A kept-alive connection whose path goes dark after the request was written
looks, from the HTTP side, exactly like a model that is thinking: no byte
comes back.  The kernel knows better.  A live peer's TCP acknowledges the
request's bytes within one round trip (a delayed ACK waits at most 200 ms
on Linux, 500 ms by RFC 1122), and answers a retransmission at once; on a
black-holed path the bytes stay outstanding, no ACK of any kind arrives, and
the kernel's retransmission (or, when a local filter refuses the segment,
its send-probe) timer fires and backs off.

The verdict (:func:`silent`) needs all of:

* request bytes still outstanding: unacknowledged (``tcpi_unacked``) or
  not even sent (``tcpi_notsent_bytes``);
* no ACK at all from the peer since the request was written
  (``tcpi_last_ack_recv`` – a peer advertising a zero window still ACKs its
  window probes, so an upstream that is merely not reading is never silent);
* the kernel's own timer has given up waiting at least once
  (``tcpi_backoff`` ≥ 1: an RTO, itself ≥ 200 ms and ≥ the socket's
  srtt + 4 × rttvar, after the tail-loss probe's retransmission went
  unanswered too);
* at least :data:`SILENCE_FLOOR` since the write, RFC 1122's longest
  delayed ACK, and at least the caller's deadline (the endpoint's usual
  connect time).

Linux only; elsewhere :func:`read` returns None and nothing is judged.  The
struct layout is ``linux/tcp.h``'s ``struct tcp_info``: eight ``__u8``, then
``__u32`` fields; ``tcpi_notsent_bytes`` (Linux 4.6) sits at byte 144.
Pure except :func:`read`, one ``getsockopt``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Protocol

SILENCE_FLOOR = 0.5  # seconds: RFC 1122's longest delayed ACK; a live peer has ACKed by then
MIN_BACKOFF = 1  # kernel retransmission (or probe) timeouts without an ACK

_HEAD = struct.Struct("=8B24I")  # the first 104 bytes: the fields every Linux since 2.6 has
_NOTSENT_AT = 144  # tcpi_notsent_bytes, after the u64 pacing/bytes fields and segs_out/in
_WANTED = 148
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The few ``struct tcp_info`` fields the verdict reads (times in seconds)."""

    backoff: int  # tcpi_backoff: RTO / probe timeouts since the last ACK of new data
    retransmits: int  # tcpi_retransmits: unrecovered RTO timeouts
    unacked: int  # tcpi_unacked: segments sent, not acknowledged
    notsent: int  # tcpi_notsent_bytes: written, not yet sent (0 when the kernel is too old)
    since_ack: float  # tcpi_last_ack_recv: since the peer's last ACK of any kind

    @property
    def outstanding(self) -> bool:
        """Are bytes we wrote still waiting for the peer's acknowledgement?"""
        return self.unacked > 0 or self.notsent > 0


def parse(raw: bytes) -> TcpInfo | None:
    """The fields from ``getsockopt(IPPROTO_TCP, TCP_INFO)``'s bytes; None when too short."""
    if len(raw) < _HEAD.size:
        return None
    v = _HEAD.unpack_from(raw)
    notsent = struct.unpack_from("=I", raw, _NOTSENT_AT)[0] if len(raw) >= _WANTED else 0
    # v: 0-7 the u8s (state, ca_state, retransmits, probes, backoff, …), then from 8 the u32s
    # rto, ato, snd_mss, rcv_mss, unacked (12), sacked, lost, retrans, fackets,
    # last_data_sent, last_ack_sent, last_data_recv, last_ack_recv (20), …
    return TcpInfo(
        backoff=v[4], retransmits=v[2], unacked=v[12], notsent=notsent, since_ack=v[20] / 1000
    )


class Sockish(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


def read(sock: Sockish | None) -> TcpInfo | None:
    """The socket's ``TCP_INFO``; None off Linux, for a non-TCP socket, or on any error."""
    if sock is None or _TCP_INFO is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _WANTED)
    except (OSError, ValueError, TypeError):
        return None
    return parse(raw)


def silent(info: TcpInfo, elapsed: float, deadline: float) -> bool:
    """Has the peer's TCP said nothing about a request written ``elapsed`` seconds ago?

    ``deadline`` is the caller's least wait (the endpoint's usual connect
    time); see the module docstring for why each condition is needed.
    """
    return (
        info.outstanding
        and info.backoff >= MIN_BACKOFF
        and elapsed >= max(SILENCE_FLOOR, deadline)
        # no ACK since the write (a few ms of slack: the kernel counts in jiffies)
        and info.since_ack >= elapsed - 0.02
    )
