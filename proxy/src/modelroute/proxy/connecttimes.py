"""Observed connect times per endpoint, and the connect deadline a race starts at.

A connect is "late" when it takes clearly longer than connects to that
endpoint usually do; then the attempt loop starts the next region's attempt
(Happy Eyeballs across regions, :mod:`.dispatch.attempts`).  "Usually" is
TCP's retransmission-timeout estimator (Jacobson/Karels, RFC 6298): a
smoothed mean and a smoothed mean deviation, deadline = srtt + 4 × rttvar.
It is two floats per endpoint, updated in a few operations per *new*
connection (keep-alive makes those rare), and it reacts within a handful of
samples to an endpoint getting slower – a quantile sketch would need far
more samples than a sidecar's new connections give it before it said
anything, and a dependency for what two multiplications do.

The estimate is clamped: never below ``floorMs`` (a connect inside a cloud
region takes ~1 ms, and a deadline of a few ms would race on every
event-loop stall of a busy node), never above the provider's
``connectTimeoutMs`` (past it the connect has failed anyway).  Before the
first sample the deadline is ``initialMs``.

Every connect that completed is a sample – the late ones that lost their
race too, so an endpoint that got slower for good teaches its new normal –
except one that took ``SYN_RETRANSMIT`` or longer.  That one most likely
measured the kernel's retransmission of a lost SYN (its initial timeout is
1 s, RFC 6298 2.1), not the path; Karn's rule leaves out retransmitted
segments for the same reason, and a single such sample would lift the
deadline to the connect timeout for the next several connects.

Pure: no clock is needed (an EWMA ages by samples, not by time), no I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from modelroute.resources import ConnectRacing

# RFC 6298's gains: alpha = 1/8 for the mean, beta = 1/4 for the deviation, K = 4
ALPHA = 0.125
BETA = 0.25
K = 4.0
# a connect this slow most likely waited for a SYN retransmit (Linux's initial RTO, RFC 6298)
SYN_RETRANSMIT = 1.0


@dataclass(slots=True)
class ConnectEstimate:
    """One endpoint's smoothed connect time (seconds) and its mean deviation."""

    srtt: float = 0.0
    rttvar: float = 0.0
    samples: int = 0

    def add(self, seconds: float) -> None:
        """A connect that completed, in ``seconds`` (DNS, TCP, a tunnel and TLS included)."""
        if self.samples == 0:  # RFC 6298 (2.2): the first measurement sets both
            self.srtt = seconds
            self.rttvar = seconds / 2
        else:  # (2.3): the deviation is updated with the old mean first
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - seconds)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * seconds
        self.samples += 1

    def expected(self) -> float | None:
        """srtt + 4 × rttvar: how long a connect may take before it is late; None before data."""
        if self.samples == 0:
            return None
        return self.srtt + K * self.rttvar


def race_deadline(racing: ConnectRacing, estimate: ConnectEstimate | None, ceiling: float) -> float:
    """Seconds after a connect starts when the next region's attempt may start.

    ``ceiling`` is the provider's connect timeout: a deadline at it means no race.
    """
    expected = estimate.expected() if estimate is not None else None
    seconds = racing.initial_ms / 1000 if expected is None else expected
    return min(ceiling, max(racing.floor_ms / 1000, seconds))


@dataclass
class ConnectTimes:
    """Every endpoint's estimate (``provider@region``), shared by all routes and models there."""

    endpoints: dict[str, ConnectEstimate]

    def __init__(self) -> None:
        self.endpoints = {}

    def get(self, endpoint: str) -> ConnectEstimate | None:
        return self.endpoints.get(endpoint)

    def observe(self, endpoint: str, seconds: float) -> None:
        """A completed connect; one of ``SYN_RETRANSMIT`` or more is left out (Karn's rule)."""
        if seconds >= SYN_RETRANSMIT:
            return
        found = self.endpoints.get(endpoint)
        if found is None:
            found = self.endpoints[endpoint] = ConnectEstimate()
        found.add(seconds)

    def keep_only(self, endpoints: Collection[str]) -> None:
        """Forget endpoints a new table no longer has (bounded by the table, not by history)."""
        for key in [k for k in self.endpoints if k not in endpoints]:
            del self.endpoints[key]
