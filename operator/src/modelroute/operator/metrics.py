"""The operator's Prometheus metrics: what it reconciled, wrote, admitted and injected.

One job: own the operator's :class:`~prometheus_client.CollectorRegistry` and
the few series on it.  The service layer (``service.py``, ``mutation.py``)
calls the ``count_*`` / ``set_*`` methods with the closed vocabularies below;
nothing here reads the API or knows kopf.  Like the sidecar's
(``proxy/metrics.py``), the registry is the process's own, never the global
one, because a test process runs several operators' services at once.

Cardinality: labels come from closed vocabularies (the ``StrEnum`` s here,
:class:`~.rollout.Phase`) or from FailoverPolicy names, which are cluster-scoped
and few.  Never a namespace, pod, route or user name: a cluster has thousands
of namespaces, and the Prometheus target labels already say which replica.
``docs/observability.md`` ("Operator metrics") says what a person does with each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.registry import Collector

from . import rollout
from .injection import Decision as Injection

PREFIX = "modelroute_operator"


class Kind(StrEnum):
    """What a reconcile was about: one namespace's table, or one FailoverPolicy's rollout step."""

    NAMESPACE = "Namespace"
    FAILOVER_POLICY = "FailoverPolicy"


class Result(StrEnum):
    OK = "ok"
    ERROR = "error"  # the API failed (or refused) part of it; the next event or resync retries


class Review(StrEnum):
    """A validating admission review's answer."""

    ALLOWED = "allowed"
    REFUSED = "refused"  # 422: what `kubectl apply` shows as the webhook's denial
    UNAVAILABLE = "unavailable"  # 503: the references could not be checked (API down, timeout)


# the kinds a validating webhook of ours is registered for; anything else is "other"
REVIEWED_KINDS = frozenset({"ModelRoute", "ModelProvider", "FailoverPolicy"})


class OperatorMetrics:
    """The operator's series, on a registry of its own (``.registry``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles = Counter(
            f"{PREFIX}_reconciles", "Reconciles by what and how they ended",
            ["kind", "result"], registry=r,
        )  # fmt: skip
        self.tables_applied = Counter(
            f"{PREFIX}_tables_applied",
            "Route-table ConfigMaps written (created or changed); unchanged tables are not written",
            registry=r,
        )
        self.routes_not_ready = Gauge(
            f"{PREFIX}_routes_not_ready",
            "ModelRoutes left out of their namespace's table by errors at the last compile",
            registry=r,
        )
        self.admission = Counter(
            f"{PREFIX}_admission_reviews", "Validating admission reviews by kind and answer",
            ["kind", "result"], registry=r,
        )  # fmt: skip
        self.injections = Counter(
            f"{PREFIX}_injections", "Pod CREATE reviews by what the sidecar injector did",
            ["result"], registry=r,
        )  # fmt: skip
        self.rollout_phase = Gauge(
            f"{PREFIX}_rollout_phase",
            "1 for the FailoverPolicy rollout's current phase, 0 for the others",
            ["policy", "phase"], registry=r,
        )  # fmt: skip
        self.rollout_batch = Gauge(
            f"{PREFIX}_rollout_batch",
            "The rollout's current batch, 1-based (batches + 1 once complete)",
            ["policy"], registry=r,
        )  # fmt: skip
        self.rollout_batches = Gauge(
            f"{PREFIX}_rollout_batches", "Batches in the rollout's plan", ["policy"], registry=r
        )
        self._not_ready: dict[str, int] = {}
        # every child of a closed vocabulary exists from the start: a rate() over a counter
        # that appears only on its first increment misses that first increment
        for kind in Kind:
            for result in Result:
                self.reconciles.labels(kind, result)
        for review_kind in sorted(REVIEWED_KINDS):
            for review in Review:
                self.admission.labels(review_kind, review)
        for injection in Injection:
            self.injections.labels(injection)

    # ---- the service layer's calls -------------------------------------------------------

    def count_reconcile(self, kind: Kind, result: Result) -> None:
        self.reconciles.labels(kind, result).inc()

    @contextlib.contextmanager
    def reconciling(self, kind: Kind) -> Iterator[None]:
        """Count the work in the block as one reconcile of ``kind``: ok, or error if it raised."""
        try:
            yield
        except Exception:
            self.count_reconcile(kind, Result.ERROR)
            raise
        self.count_reconcile(kind, Result.OK)

    def count_table_applied(self) -> None:
        self.tables_applied.inc()

    def set_routes_not_ready(self, namespace: str, count: int) -> None:
        """One namespace's count of failing routes; the series is the sum over namespaces.

        Kept per namespace here (never as a label) so a namespace that heals or leaves
        takes its share out of the total.
        """
        if count:
            self._not_ready[namespace] = count
        else:
            self._not_ready.pop(namespace, None)
        self.routes_not_ready.set(sum(self._not_ready.values()))

    def count_review(self, kind: str, result: Review) -> None:
        self.admission.labels(kind if kind in REVIEWED_KINDS else "other", result).inc()

    def count_injection(self, result: Injection) -> None:
        self.injections.labels(result).inc()

    def set_rollout(self, policy: str, state: rollout.RolloutState) -> None:
        """The policy's phase as a state set, and where its batches stand."""
        for phase in rollout.Phase:
            self.rollout_phase.labels(policy, phase).set(1 if phase is state.phase else 0)
        self.rollout_batch.labels(policy).set(state.current_batch + 1)
        self.rollout_batches.labels(policy).set(state.batches)

    def forget_rollout(self, policy: str) -> None:
        """The policy is gone, or this replica stopped driving it (peering paused it)."""
        for phase in rollout.Phase:
            _remove(self.rollout_phase, policy, phase)
        _remove(self.rollout_batch, policy)
        _remove(self.rollout_batches, policy)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set on this replica
        gauge.remove(*labels)


class ViewSyncedCollector(Collector):
    """``modelroute_operator_namespace_view_synced``: read from the view at scrape time.

    Takes a callable, not the view, so this module stays below ``namespaces.py``.
    """

    def __init__(self, synced: Callable[[], bool]) -> None:
        self.synced = synced

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_namespace_view_synced",
            "1 while this replica's namespace view (what the injector reads) is synced",
        )
        family.add_metric([], 1.0 if self.synced() else 0.0)
        yield family


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """Body and content type for ``GET /metrics``; OpenMetrics when the scraper asks for it."""
    if accept and "application/openmetrics-text" in accept:
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type
    return generate_latest(registry), CONTENT_TYPE_LATEST
