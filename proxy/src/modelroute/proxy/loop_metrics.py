"""Counters and histograms for the request path: plain numbers on the event loop.

Why not ``prometheus_client``'s ``Counter`` and ``Histogram`` there: they are
made to be updated from any thread, so every ``inc`` takes a lock, checks the
metric is observable and a histogram's ``observe`` walks its buckets in Python
with a lock per bucket it touches.  A request updates about ten series; under
callgrind that was ~87,000 instructions per request, a tenth of what the
sidecar itself spends on one.  Every update here comes from the event loop's
thread, and so does every read (``GET /metrics`` is served on the same loop),
so a child is two or three attributes: a counter's value, a histogram's
per-bucket counts (found with ``bisect``, C) and sum.

What a scrape sees is what ``prometheus_client`` would have exposed: the same
family names, help, label strings (values pass through ``str`` once, when the
child is made), ``_total``/``_created`` samples for counters and ``_bucket``
(cumulative, ``le`` formatted by prometheus_client's own ``floatToGoString``),
``_count``, ``_sum`` and ``_created`` for histograms.  The collectors register
with a ``CollectorRegistry`` and are rendered by its encoders, text or
OpenMetrics.

Not thread-safe by design: don't update these from another thread.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, cast

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as _client_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# how prometheus_client writes a bucket's ``le`` (untyped there)
_go_float = cast(Callable[[float], str], floatToGoString)


class CounterChild:
    """One label set's counter."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:  # a counter only goes up (prometheus_client raises the same)
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class HistogramChild:
    """One label set's histogram: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # finite upper bounds, ascending; the last bucket is +Inf
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # the first bucket whose bound is >= value: Prometheus' ``le``
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


C = TypeVar("C", CounterChild, HistogramChild)


class _LoopFamily(Collector, Generic[C]):
    """A family's children by label values: ``get(*labels)`` finds or makes one."""

    def __init__(
        self,
        family: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self.family = family
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        # label values as given (the key) → (as exposed, through str once; the child)
        self.children: dict[tuple[str, ...], tuple[tuple[str, ...], C]] = {}
        registry.register(self)

    _metric_family: type[CounterMetricFamily] | type[HistogramMetricFamily]

    def _child(self) -> C:
        raise NotImplementedError

    def _empty(self) -> Any:
        """The family as prometheus_client's types describe it, before its samples."""
        return self._metric_family(self.family, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterator[Metric]:
        yield self._empty()

    def get(self, *labels: str) -> C:
        found = self.children.get(labels)
        if found is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.family}: expected labels {self.labelnames}, got {labels}")
            found = self.children[labels] = (tuple(str(v) for v in labels), self._child())
        return found[1]

    def remove(self, *labels: str) -> None:
        self.children.pop(labels, None)


class LoopCounter(_LoopFamily[CounterChild]):
    """A labelled counter family; ``get(*labels)`` gives the child to ``inc``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r}: Prometheus counter names end in _total")
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    _metric_family = CounterMetricFamily

    def _child(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterator[Metric]:
        family: CounterMetricFamily = self._empty()
        created = _created_series()
        for names, child in list(self.children.values()):
            family.add_metric(names, child.value, created=child.created if created else None)
        yield family


class LoopHistogram(_LoopFamily[HistogramChild]):
    """A (labelled or not) histogram family; ``get(*labels)`` gives the child to ``observe``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"histogram {name!r}: buckets must be distinct and ascending")
        self.bounds = bounds
        self.le = (*(_go_float(b) for b in bounds), "+Inf")
        super().__init__(name, documentation, labelnames, registry)

    _metric_family = HistogramMetricFamily

    def _child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family: HistogramMetricFamily = self._empty()
        created = _created_series()
        for names, child in list(self.children.values()):
            cumulative, running = [], 0
            for le, count in zip(self.le, child.counts, strict=True):
                running += count
                cumulative.append((le, float(running)))
            family.add_metric(names, cumulative, child.sum)
            # HistogramMetricFamily takes no ``created``: the sample prometheus_client adds
            if created:
                labels = dict(zip(self.labelnames, names, strict=True))
                family.samples.append(Sample(f"{self.family}_created", labels, child.created))
        yield family


def _created_series() -> bool:
    """Whether ``_created`` samples are exposed: prometheus_client's own switch.

    ``PROMETHEUS_DISABLE_CREATED_SERIES=true`` or ``disable_created_metrics()``
    turn them off for its metrics; these follow the same switch.
    """
    return bool(getattr(_client_metrics, "_use_created", True))
