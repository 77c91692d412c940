"""Which attempts a connect race's winner abandons (dispatch/attempts.py ``_connected``).

The first attempt to have a connection is the one that sends; every other attempt
of the request still without one must send nothing.  That includes one queued for a
slot behind the provider's ``maxConnections`` (not yet connecting): left alone it
would get its slot later and send the request a second time, uncharged to the retry
budget.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from modelroute.proxy.dispatch.attempts import AttemptLoop
from modelroute.proxy.upstream import PoolWait


def test_the_winner_abandons_attempts_connecting_and_queued_but_not_connected_ones() -> None:
    winner, connecting, queued, sending = PoolWait(), PoolWait(), PoolWait(), PoolWait()
    winner.connecting = winner.connected = True
    winner.connect_seconds = 0.01
    connecting.connecting = True  # a late connect still under way
    queued.queued = True  # waiting for a free connection at another provider
    sending.connected = True  # a hedge already on its way: too late to hold back
    loop = SimpleNamespace(
        waits={i: (None, w) for i, w in enumerate((winner, connecting, queued, sending))}
    )
    AttemptLoop._connected(cast(Any, loop), winner)
    assert connecting.abandoned and queued.abandoned
    assert not winner.abandoned and not sending.abandoned
