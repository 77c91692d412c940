"""The request path's lock-free counters and histograms expose what prometheus_client's would.

``loop_metrics`` replaces prometheus_client's ``Counter`` and ``Histogram``
on the hot path; dashboards, alert rules and every scrape depend on the
series staying the same.  Each test feeds the same values to both and
compares what a scrape returns, text and OpenMetrics, ``_created`` samples
aside from their timestamps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
from modelroute.proxy.loop_metrics import LoopCounter, LoopHistogram
from modelroute.proxy.metrics import DURATION_BUCKETS
from modelroute.proxy.outcomes import RequestOutcome
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

Render = Callable[[CollectorRegistry], bytes]
RENDERERS = [pytest.param(generate_latest, id="text"), pytest.param(openmetrics_latest, id="om")]


def _without_created_times(body: bytes) -> str:
    """The exposition with every ``_created`` value blanked (they are wall-clock times)."""
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", body.decode())


@pytest.mark.parametrize("render", RENDERERS)
def test_a_counter_scrapes_as_prometheus_clients_counter(render: Render) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    names = ["route", "outcome"]
    reference = Counter("modelroute_requests_total", "Requests.", names, registry=theirs)
    counter = LoopCounter("modelroute_requests_total", "Requests.", names, registry=ours)
    for route, outcome, n in [
        ("chat", RequestOutcome.OK, 1),
        ("chat", RequestOutcome.OK, 41),
        ("chat", RequestOutcome.ERROR, 2),
        ('we"ird\\route\n', RequestOutcome.OK, 3),
    ]:
        reference.labels(route, outcome).inc(n)
        counter.get(route, outcome).inc(n)
    assert _without_created_times(render(ours)) == _without_created_times(render(theirs))
    assert ours.get_sample_value(
        "modelroute_requests_total", {"route": "chat", "outcome": "ok"}
    ) == pytest.approx(42)


@pytest.mark.parametrize("render", RENDERERS)
def test_a_histogram_scrapes_as_prometheus_clients_histogram(render: Render) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    name, doc = "modelroute_request_duration_seconds", "Whole request time."
    reference = Histogram(name, doc, ["route"], buckets=DURATION_BUCKETS, registry=theirs)
    histogram = LoopHistogram(name, doc, ["route"], buckets=DURATION_BUCKETS, registry=ours)
    # on a bound (``le`` includes it), between bounds, under the first, past the last
    values = [*DURATION_BUCKETS, 0.0, 1e-9, 0.0123, 7.5, 1e6, math.inf]
    for i, value in enumerate(values):
        route = "a" if i % 3 else "b"
        reference.labels(route).observe(value)
        histogram.get(route).observe(value)
    assert _without_created_times(render(ours)) == _without_created_times(render(theirs))


def test_an_unlabelled_histogram_and_removed_children_scrape_alike() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram(
        "modelroute_overhead_seconds", "Own time.", buckets=(0.1, 1), registry=theirs
    )
    histogram = LoopHistogram("modelroute_overhead_seconds", "Own time.", (), (0.1, 1), ours)
    reference_probe = Histogram("p_seconds", "Probes.", ["region"], buckets=(1,), registry=theirs)
    probe = LoopHistogram("p_seconds", "Probes.", ["region"], (1,), ours)
    for value in (0.05, 0.5, 5.0):
        reference.observe(value)
        histogram.get().observe(value)
    for region in ("eu", "us"):
        reference_probe.labels(region).observe(0.5)
        probe.get(region).observe(0.5)
    reference_probe.remove("eu")
    probe.remove("eu")
    expected = _without_created_times(generate_latest(theirs))
    assert _without_created_times(generate_latest(ours)) == expected
    assert 'region="eu"' not in expected


def test_created_samples_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import metrics

    ours = CollectorRegistry()
    LoopCounter("x_total", "X.", ["a"], registry=ours).get("1").inc()
    LoopHistogram("y_seconds", "Y.", ["a"], (1,), registry=ours).get("1").observe(2)
    assert b"x_created" in generate_latest(ours) and b"y_seconds_created" in generate_latest(ours)
    monkeypatch.setattr(metrics, "_use_created", False)
    assert b"_created" not in generate_latest(ours)


def test_misuse_fails_loudly() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("c_total", "C.", ["a"], registry=registry)
    with pytest.raises(ValueError, match="non-negative"):
        counter.get("1").inc(-1)
    with pytest.raises(ValueError, match="expected labels"):
        counter.get("1", "2")
    with pytest.raises(ValueError, match="_total"):
        LoopCounter("c", "C.", [], registry=registry)
    with pytest.raises(ValueError, match="ascending"):
        LoopHistogram("h", "H.", [], (2, 1), registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):  # the registry still guards names
        LoopCounter("c_total", "again", ["a"], registry=registry)
