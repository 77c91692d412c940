"""The connect deadline (proxy/connecttimes.py): TCP's RTO estimate over observed connect times.

When is a connect *late*, so that the next region's attempt starts beside it
(docs/failover.md, "Connect racing")?  srtt + 4 × rttvar, clamped between
``floorMs`` and the provider's connect timeout, ``initialMs`` before any
connect was seen.
"""

from __future__ import annotations

import pytest
from modelroute.proxy.connecttimes import ConnectEstimate, ConnectTimes, race_deadline

from modelroute.resources import ConnectRacing

RACING = ConnectRacing()  # floorMs 100, initialMs 250
CEILING = 1.0  # the provider's connectTimeoutMs


def test_the_first_sample_sets_the_mean_and_half_of_it_as_the_deviation() -> None:
    estimate = ConnectEstimate()
    assert estimate.expected() is None
    estimate.add(0.040)
    assert estimate.srtt == pytest.approx(0.040)
    assert estimate.rttvar == pytest.approx(0.020)
    assert estimate.expected() == pytest.approx(0.040 + 4 * 0.020)  # RFC 6298 (2.2)


def test_later_samples_are_smoothed_with_the_rfc_6298_gains() -> None:
    estimate = ConnectEstimate()
    estimate.add(0.040)
    estimate.add(0.080)
    # rttvar first, with the old srtt: 3/4 · 0.020 + 1/4 · |0.040 − 0.080|
    assert estimate.rttvar == pytest.approx(0.025)
    assert estimate.srtt == pytest.approx(7 / 8 * 0.040 + 1 / 8 * 0.080)
    assert estimate.samples == 2


def test_a_steady_endpoint_converges_on_its_connect_time() -> None:
    estimate = ConnectEstimate()
    for _ in range(60):
        estimate.add(0.150)
    expected = estimate.expected()
    assert expected is not None
    assert expected == pytest.approx(0.150, abs=0.005)  # the deviation decays to ~0


def test_an_endpoint_getting_slower_moves_its_deadline_within_a_few_connects() -> None:
    estimate = ConnectEstimate()
    for _ in range(30):
        estimate.add(0.120)
    before = race_deadline(RACING, estimate, CEILING)
    for _ in range(3):
        estimate.add(0.300)
    after = race_deadline(RACING, estimate, CEILING)
    assert after > before + 0.1  # the deviation reacts at once: no race on its new normal


def test_the_deadline_is_clamped_between_the_floor_and_the_connect_timeout() -> None:
    fast = ConnectEstimate()
    for _ in range(10):
        fast.add(0.001)  # a connect inside one cloud region
    assert race_deadline(RACING, fast, CEILING) == pytest.approx(0.100)  # floorMs
    slow = ConnectEstimate()
    slow.add(0.9)
    assert race_deadline(RACING, slow, CEILING) == pytest.approx(CEILING)
    assert race_deadline(ConnectRacing(floorMs=20), fast, CEILING) == pytest.approx(0.020)


def test_before_any_connect_the_initial_deadline_applies_capped_by_the_timeout() -> None:
    assert race_deadline(RACING, None, CEILING) == pytest.approx(0.250)
    assert race_deadline(RACING, ConnectEstimate(), CEILING) == pytest.approx(0.250)
    assert race_deadline(RACING, None, 0.2) == pytest.approx(0.2)
    assert race_deadline(ConnectRacing(initialMs=50), None, CEILING) == pytest.approx(0.100)


def test_the_book_is_per_endpoint_and_forgets_endpoints_no_table_has() -> None:
    book = ConnectTimes()
    book.observe("gw@us-east", 0.010)
    book.observe("gw@eu-west", 0.090)
    us, eu = book.get("gw@us-east"), book.get("gw@eu-west")
    assert us is not None and eu is not None and us.srtt < eu.srtt
    book.keep_only({"gw@eu-west"})
    assert book.get("gw@us-east") is None and book.get("gw@eu-west") is eu


def test_a_connect_that_waited_for_a_syn_retransmit_is_no_sample() -> None:
    """Karn's rule: one lost SYN (1 s) would lift the deadline to the timeout for a while."""
    estimate = ConnectEstimate()
    for _ in range(20):
        estimate.add(0.002)
    lifted = ConnectEstimate(estimate.srtt, estimate.rttvar, estimate.samples)
    lifted.add(1.002)  # what it would do
    assert race_deadline(RACING, lifted, CEILING) == pytest.approx(CEILING)
    for _ in range(4):
        lifted.add(0.002)
    assert race_deadline(RACING, lifted, CEILING) > 0.3  # still far from the usual 100 ms
    book = ConnectTimes()
    book.observe("gw@us-east", 0.002)
    book.observe("gw@us-east", 1.002)  # left out
    book.observe("gw@eu-west", 3.5)  # left out: no estimate at all yet
    us = book.get("gw@us-east")
    assert us is not None and us.samples == 1
    assert book.get("gw@eu-west") is None
    book.observe("gw@us-east", 0.300)  # slower for good, but no retransmit: learnt
    us_after = book.get("gw@us-east")
    assert us_after is not None and us_after.samples == 2
