"""The operator's metrics (``operator/metrics.py``): the module alone, then through the service.

The first half reads the exposition text a scrape gets, so a renamed series, a
missing ``_total`` or a label that isn't in the closed vocabulary fails here
before Prometheus ever sees it.  The second half drives :class:`Service` against
kmock (``rollout_harness.world``) and checks the counters move where the work
happens: a table written, a broken route, a review refused, a rollout halted.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from modelroute.operator import rollout
from modelroute.operator.injection import Decision
from modelroute.operator.kube import API_FAILURES, KubeApi
from modelroute.operator.metrics import (
    Kind,
    OperatorMetrics,
    Result,
    Review,
    ViewSyncedCollector,
    render,
)
from modelroute.operator.namespaces import NamespaceView, readiness_app
from modelroute.proxy.kube_source import KubeConfig
from prometheus_client.parser import text_string_to_metric_families

from .helpers import G, route
from .rollout_harness import POLICY, V1, policy, world


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) → value."""
    body, _ = render(metrics.registry)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_counters_are_named_in_base_units_and_exist_before_their_first_increment() -> None:
    m = OperatorMetrics()
    names = {name for name, _ in samples(m)}
    # a rate() over a counter that appears at its first increment misses that increment
    for kind in Kind:
        for result in Result:
            assert value(m, "modelroute_operator_reconciles_total", kind=kind, result=result) == 0
    for decision in Decision:
        assert value(m, "modelroute_operator_injections_total", result=decision) == 0
    assert value(m, "modelroute_operator_tables_applied_total") == 0
    assert value(m, "modelroute_operator_routes_not_ready") == 0
    counters = {n for n in names if n.endswith("_total")}
    assert counters == {
        "modelroute_operator_reconciles_total",
        "modelroute_operator_tables_applied_total",
        "modelroute_operator_admission_reviews_total",
        "modelroute_operator_injections_total",
    }
    assert all(n.startswith("modelroute_operator_") for n in names)


def test_each_call_moves_its_own_series() -> None:
    m = OperatorMetrics()
    m.count_reconcile(Kind.NAMESPACE, Result.ERROR)
    m.count_table_applied()
    m.count_table_applied()
    m.count_injection(Decision.REFUSED)
    m.count_review("ModelRoute", Review.REFUSED)
    m.count_review("Pod", Review.ALLOWED)  # not a kind of ours: one "other" series, no name
    assert value(m, "modelroute_operator_reconciles_total", kind="Namespace", result="error") == 1
    assert value(m, "modelroute_operator_reconciles_total", kind="Namespace", result="ok") == 0
    assert value(m, "modelroute_operator_tables_applied_total") == 2
    assert value(m, "modelroute_operator_injections_total", result="refused") == 1
    assert value(m, "modelroute_operator_injections_total", result="injected") == 0
    review = "modelroute_operator_admission_reviews_total"
    assert value(m, review, kind="ModelRoute", result="refused") == 1
    assert value(m, review, kind="other", result="allowed") == 1
    assert value(m, review, kind="Pod", result="allowed") is None


def test_routes_not_ready_is_a_sum_a_healed_namespace_leaves() -> None:
    m = OperatorMetrics()
    m.set_routes_not_ready("team-a", 2)
    m.set_routes_not_ready("team-b", 1)
    assert value(m, "modelroute_operator_routes_not_ready") == 3
    m.set_routes_not_ready("team-a", 0)
    assert value(m, "modelroute_operator_routes_not_ready") == 1
    m.set_routes_not_ready("team-b", 1)  # set, not added: a resync doesn't double it
    assert value(m, "modelroute_operator_routes_not_ready") == 1
    # namespaces are never a label (a cluster has thousands)
    assert all("namespace" not in dict(labels) for _, labels in samples(m))


def test_rollout_is_a_state_set_and_forgetting_it_removes_every_series() -> None:
    m = OperatorMetrics()
    planned = rollout.plan("sha256:x", ["a", "b", "c"], 2)
    m.set_rollout("regions", planned)
    phase = "modelroute_operator_rollout_phase"
    assert {p: value(m, phase, policy="regions", phase=p) for p in rollout.Phase} == {
        rollout.Phase.PROGRESSING: 1,
        rollout.Phase.COMPLETE: 0,
        rollout.Phase.HALTED: 0,
    }
    assert value(m, "modelroute_operator_rollout_batch", policy="regions") == 1
    assert value(m, "modelroute_operator_rollout_batches", policy="regions") == 2
    halted = rollout.RolloutState(
        "sha256:x", planned.namespaces, phase=rollout.Phase.HALTED, current_batch=1
    )
    m.set_rollout("regions", halted)
    assert value(m, phase, policy="regions", phase="Halted") == 1
    assert value(m, phase, policy="regions", phase="Progressing") == 0
    assert value(m, "modelroute_operator_rollout_batch", policy="regions") == 2
    m.forget_rollout("regions")
    m.forget_rollout("never-seen")  # a policy this replica never drove: no error
    assert not [name for name, labels in samples(m) if ("policy", "regions") in labels]


def test_openmetrics_when_asked_and_the_view_read_at_scrape_time() -> None:
    m = OperatorMetrics()
    synced = [False]
    m.registry.register(ViewSyncedCollector(lambda: synced[0]))
    assert value(m, "modelroute_operator_namespace_view_synced") == 0
    synced[0] = True
    assert value(m, "modelroute_operator_namespace_view_synced") == 1
    body, content_type = render(m.registry, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    body, content_type = render(m.registry, None)
    assert content_type.startswith("text/plain") and b"# EOF" not in body


async def test_metrics_are_served_beside_readyz_even_while_not_ready() -> None:
    m = OperatorMetrics()
    view = NamespaceView(KubeApi(KubeConfig(server="http://127.0.0.1:9", token="x")))
    m.registry.register(ViewSyncedCollector(lambda: view.synced))
    async with TestClient(TestServer(readiness_app(view, m.registry))) as client:
        ready = await client.get("/readyz")
        assert ready.status == 503
        scraped = await client.get("/metrics")
        assert scraped.status == 200
        assert "modelroute_operator_namespace_view_synced 0.0" in await scraped.text()
        view.replace([])
        assert (
            "modelroute_operator_namespace_view_synced 1.0"
            in await (await client.get("/metrics")).text()
        )
    async with TestClient(TestServer(readiness_app(view))) as client:
        assert (await client.get("/metrics")).status == 404  # no registry, no page


# ---- through the service, against kmock ---------------------------------------------------


async def test_the_service_counts_reconciles_tables_and_broken_routes(cluster: Any) -> None:
    async with world(cluster, ["ns-1"]) as w:
        m = w.service.metrics
        reconciles = "modelroute_operator_reconciles_total"
        assert value(m, reconciles, kind="Namespace", result="ok") == 1  # world()'s reconcile_all
        assert value(m, "modelroute_operator_tables_applied_total") == 1
        assert value(m, "modelroute_operator_routes_not_ready") == 0

        await w.service.reconcile_namespace("ns-1")  # an unchanged world writes nothing
        assert value(m, reconciles, kind="Namespace", result="ok") == 2
        assert value(m, "modelroute_operator_tables_applied_total") == 1

        await w.api.post(f"{G}/namespaces/ns-1/modelroutes", route("ns-1", "typo", "gatewey"))
        await w.service.reconcile_namespace("ns-1")
        assert value(m, "modelroute_operator_routes_not_ready") == 1
        await w.api.delete(f"{G}/namespaces/ns-1/modelroutes/typo")
        await w.service.reconcile_namespace("ns-1")
        assert value(m, "modelroute_operator_routes_not_ready") == 0

        await w.api.patch("/api/v1/namespaces/ns-1", {"metadata": {"labels": {"x": "y"}}})
        errors = value(m, reconciles, kind="Namespace", result="error")
        async with KubeApi(KubeConfig(server="http://127.0.0.1:9", token="x")) as dead:
            w.service.api = dead  # nothing listens there: the API is down
            with pytest.raises(API_FAILURES):
                await w.service.reconcile_namespace("ns-1")
        assert value(m, reconciles, kind="Namespace", result="error") == (errors or 0) + 1


async def test_the_service_counts_reviews_by_answer(cluster: Any) -> None:
    async with world(cluster, ["ns-1"]) as w:
        m = w.service.metrics
        assert await w.service.validate(route("ns-1", "fine")) == []
        assert await w.service.validate(route("ns-1", "typo", "gatewey"))
        review = "modelroute_operator_admission_reviews_total"
        assert value(m, review, kind="ModelRoute", result="allowed") == 1
        assert value(m, review, kind="ModelRoute", result="refused") == 1


async def test_a_halted_rollout_shows_in_the_state_set_until_the_policy_goes(
    cluster: Any,
) -> None:
    async with world(cluster, ["ns-1", "ns-2"]) as w:
        m = w.service.metrics
        await w.api.post(f"{G}/failoverpolicies", policy(V1, batch_size=1))
        await w.step()  # batch 1 applied
        phase = "modelroute_operator_rollout_phase"
        assert value(m, phase, policy=POLICY, phase="Progressing") == 1
        assert value(m, "modelroute_operator_rollout_batches", policy=POLICY) == 2
        w.prober.verdicts["ns-1"] = rollout.Health.REGRESSED
        await w.step()
        assert (await w.status())["phase"] == "Halted"
        assert value(m, phase, policy=POLICY, phase="Halted") == 1
        assert value(m, phase, policy=POLICY, phase="Progressing") == 0
        assert value(m, "modelroute_operator_rollout_batch", policy=POLICY) == 1
        assert value(m, "modelroute_operator_reconciles_total", kind="FailoverPolicy", result="ok")
        await w.api.delete(f"{G}/failoverpolicies/{POLICY}")
        assert await w.step() is None
        assert value(m, phase, policy=POLICY, phase="Halted") is None
