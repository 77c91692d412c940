"""Latency samples fed to the sketch in batches read exactly as samples fed one by one."""

from __future__ import annotations

import random

from modelroute.proxy.health import LatencyTracker


class OneByOne(LatencyTracker):
    """Each sample straight into the sketch: how the tracker worked before batches."""

    _BATCH = 1


def test_batched_samples_give_the_same_counts_and_quantiles_across_rotations() -> None:
    rng = random.Random(7)
    batched = LatencyTracker(window=10.0)
    single = OneByOne(window=10.0)
    now = 100.0
    for i in range(3000):
        now += rng.expovariate(100.0)  # ~100 samples a second: windows rotate every 5 s
        seconds = rng.lognormvariate(-3.5, 0.6)
        batched.add(seconds, now)
        single.add(seconds, now)
        if i % 37 == 0:  # read now and then, between flushes too
            assert batched.count(now) == single.count(now)
            for q in (0.5, 0.99):
                assert batched.quantile(q, now, 20) == single.quantile(q, now, 20)
    assert batched.count_total == single.count_total == 3000
    later = now + 7.0  # a rotation with samples still queued: they stay in their window
    assert batched.count(later) == single.count(later)
    assert batched.quantile(0.99, later) == single.quantile(0.99, later)
