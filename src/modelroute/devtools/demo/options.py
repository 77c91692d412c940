"""How long the demo runs and when its region goes down.

Why checked up front: a bad option should fail before any server starts,
with a message the CLI can print as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class DemoOptions:
    """The knobs of one run; times of the outage are shares of ``seconds``."""

    seconds: float = 16.0  # how long requests are sent
    rate: float = 8.0  # requests per second
    down: str = "us-east-1"  # the region taken down
    down_at: float = 0.35  # share of ``seconds`` at which it goes down
    back_at: float | None = 0.75  # share at which it serves again; None = stays down
    answer_within: float = 20.0  # a request with no answer by then counts as lost
    progress: Callable[[str], None] | None = None  # one-line notes while running

    def check(self) -> None:
        if not 1.0 <= self.seconds <= 600.0:
            raise ValueError("seconds must be between 1 and 600")
        if not 0.5 <= self.rate <= 200.0:
            raise ValueError("rate must be between 0.5 and 200 requests per second")
        if not 0.0 <= self.down_at < 1.0:
            raise ValueError("down_at must be a share of the run in [0, 1)")
        if self.back_at is not None and not self.down_at < self.back_at <= 1.0:
            raise ValueError("back_at must be after down_at and at most 1")
