"""The operator's pure parts as data: object accessors, manifests, conditions, probe verdicts.

No API and no kopf: each builder gets plain dicts (hostile ones too) and the test
reads what it returns, so a change to what the operator writes shows up here
before any cluster test runs.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from modelroute.operator import admission, conditions, manifests, objects, probe, rollout
from modelroute.proxy.compiler import RouteOutcome, compile_table
from modelroute.proxy.table import CompiledFailover, CompiledTable

from modelroute.resources import ModelProvider, Problem, Reason, ResourceSet, parse_manifest

from .helpers import provider

# ---- objects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [None, {}, {"metadata": None}, {"metadata": "x"}, {"metadata": {"labels": None}}, "text", 3],
)
def test_accessors_answer_empty_for_missing_or_malformed_fields(obj: Any) -> None:
    assert objects.labels(obj) == {}
    assert objects.annotations(obj) == {}
    assert objects.spec(obj) == {}
    assert objects.status(obj) == {}
    assert objects.name(obj) == ""
    assert objects.namespace(obj) == ""
    assert objects.resource_version(obj) == ""
    assert objects.generation(obj) is None
    assert objects.being_deleted(obj) is False


def test_metadata_is_a_mapping_whatever_arrived() -> None:
    assert objects.metadata({"metadata": "x"}) == {}
    assert objects.metadata(None) == {}
    assert objects.metadata({"metadata": {"labels": None}}) == {"labels": None}


def test_accessors_read_the_fields() -> None:
    obj = {
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "labels": {"l": "1"},
            "annotations": {"a": "2"},
            "resourceVersion": "17",
            "generation": 3,
            "deletionTimestamp": "2026-12-03T08:00:00Z",
        },
        "spec": {"s": 1},
        "status": {"phase": "Running"},
    }
    assert (objects.name(obj), objects.namespace(obj)) == ("a", "ns")
    assert objects.labels(obj) == {"l": "1"}
    assert objects.annotations(obj) == {"a": "2"}
    assert objects.resource_version(obj) == "17"
    assert objects.generation(obj) == 3
    assert objects.being_deleted(obj)
    assert objects.spec(obj) == {"s": 1}
    assert objects.status(obj) == {"phase": "Running"}


# ---- namespaces and ownership ----------------------------------------------------------


def test_enrolment_termination_and_ownership() -> None:
    assert manifests.enrolled({"metadata": {"labels": {"modelroute.io/enabled": "true"}}})
    assert not manifests.enrolled({"metadata": {"labels": {"modelroute.io/enabled": "yes"}}})
    assert not manifests.enrolled(None)
    assert manifests.terminating({"status": {"phase": "Terminating"}})
    assert manifests.terminating({"metadata": {"deletionTimestamp": "t"}})
    assert not manifests.terminating({"status": {"phase": "Active"}})
    assert manifests.ours(manifests.sidecar_role("a"))
    assert not manifests.ours({"metadata": {"name": manifests.SIDECAR_RBAC, "labels": {}}})


# ---- RBAC ------------------------------------------------------------------------------


def test_sidecar_role_reads_only_the_table_of_its_namespace() -> None:
    role = manifests.sidecar_role("team-a")
    assert role["metadata"] == {
        "name": "modelroute-sidecar",
        "namespace": "team-a",
        "labels": manifests.MANAGED_BY,
    }
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["modelroute-table"],
            "verbs": ["get", "list", "watch"],
        }
    ]


def test_sidecar_binding_grants_every_service_account_of_the_namespace() -> None:
    binding = manifests.sidecar_binding("team-a")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "modelroute-sidecar",
    }
    assert binding["subjects"] == [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": "system:serviceaccounts:team-a",
        }
    ]


def test_operator_pods_binding_grants_the_pod_reader_role_to_the_operator_only() -> None:
    """Issue 13 item 3: the operator lists pods only where this binding exists."""
    reader = manifests.PodReader("mr-modelroute-pod-reader", "mr-modelroute", "modelroute-system")
    binding = manifests.operator_pods_binding("team-a", reader)
    assert binding["metadata"] == {
        "name": "modelroute-operator-pods",
        "namespace": "team-a",
        "labels": manifests.MANAGED_BY,
    }
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "mr-modelroute-pod-reader",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mr-modelroute", "namespace": "modelroute-system"}
    ]
    assert manifests.ours(binding)


def test_the_pod_reader_comes_from_the_chart_environment_or_not_at_all() -> None:
    env = {
        "MODELROUTE_POD_READER_CLUSTERROLE": "r",
        "MODELROUTE_SERVICE_ACCOUNT": "sa",
        "POD_NAMESPACE": "ns",
    }
    assert manifests.pod_reader_from_env(env) == manifests.PodReader("r", "sa", "ns")
    for missing in env:  # a local run off-cluster binds nothing rather than half a binding
        assert manifests.pod_reader_from_env({**env, missing: ""}) is None
    assert manifests.pod_reader_from_env({}) is None


# ---- the table ConfigMap ---------------------------------------------------------------


def _table(ns: str = "team-a", prefs: tuple[str, ...] | None = None) -> CompiledTable:
    rs = ResourceSet()
    parsed = parse_manifest(provider(ns), "ModelProvider")
    assert isinstance(parsed, ModelProvider)
    rs.add(parsed)
    table = compile_table(rs, ns).table
    failover = CompiledFailover(policy="p", region_preference=prefs) if prefs else None
    return table.model_copy(update={"failover": failover, "hash": ""}).sealed()


def test_table_configmap_round_trips_through_deployed_table() -> None:
    table = _table(prefs=("eu-west", "us-east"))
    ann = manifests.table_annotations(table, None, keep_previous=False)
    assert ann == {
        manifests.HASH_ANNOTATION: table.hash,
        manifests.PREVIOUS_FAILOVER_ANNOTATION: "null",
    }
    cm = manifests.table_configmap("team-a", table, ann)
    assert cm["metadata"]["name"] == "modelroute-table"
    assert manifests.ours(cm)
    read, previous = manifests.deployed_table(cm)
    assert read is not None and read.hash == table.hash
    assert previous is None  # "null": there was no block before this one


def test_the_previous_failover_block_is_what_a_rollback_returns_to() -> None:
    old, new = _table(prefs=("us-east",)), _table(prefs=("eu-west",))
    ann = manifests.table_annotations(new, old.failover, keep_previous=False)
    remembered = orjson.loads(ann[manifests.PREVIOUS_FAILOVER_ANNOTATION])
    assert remembered["regionPreference"] == ["us-east"]
    # a rolled-back namespace keeps remembering the block it rolled back to
    assert manifests.PREVIOUS_FAILOVER_ANNOTATION not in manifests.table_annotations(
        new, old.failover, keep_previous=True
    )
    # an unchanged block is not re-remembered
    assert manifests.PREVIOUS_FAILOVER_ANNOTATION not in manifests.table_annotations(
        new, new.failover, keep_previous=False
    )


def test_a_configmap_without_the_annotation_rolls_back_to_its_own_block() -> None:
    table = _table(prefs=("us-east",))
    cm = manifests.table_configmap("team-a", table, {manifests.HASH_ANNOTATION: table.hash})
    assert manifests.deployed_table(cm)[1] == table.failover


@pytest.mark.parametrize(
    "cm",
    [
        {"data": {"table.json": "not json"}},
        {"data": None},
        {"data": "x", "metadata": {"annotations": {manifests.PREVIOUS_FAILOVER_ANNOTATION: "{"}}},
    ],
)
def test_an_unreadable_configmap_is_no_table(cm: dict[str, Any]) -> None:
    assert manifests.deployed_table(cm) == (None, None)
    assert manifests.deployed_table(None) == (None, None)


def test_event_names_its_object_and_bounds_the_message() -> None:
    route = {
        "apiVersion": "modelroute.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": "team-a", "uid": "u-1"},
    }
    ev = manifests.event(route, "chat.1", "UnknownModel", "x" * 5000, "Warning", "now")
    assert ev["metadata"] == {"name": "chat.1", "namespace": "team-a"}
    assert ev["involvedObject"] == {
        "apiVersion": "modelroute.io/v1alpha1",
        "kind": "ModelRoute",
        "name": "chat",
        "namespace": "team-a",
        "uid": "u-1",
    }
    assert len(ev["message"]) == manifests.EVENT_MESSAGE_LIMIT
    # cluster-scoped objects (a FailoverPolicy) get their events in "default"
    assert (
        manifests.event({"metadata": {"name": "p"}}, "p.1", "R", "m", "Normal", "t")["metadata"][
            "namespace"
        ]
        == "default"
    )


# ---- conditions ------------------------------------------------------------------------


def test_a_ready_route_has_three_true_conditions() -> None:
    conds = conditions.route_conditions(RouteOutcome("ns", "chat"), [])
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
        ("Ready", "True", "Compiled"),
    ]


def test_an_unknown_provider_is_an_unresolved_ref_not_a_rejection() -> None:
    missing = Problem(
        "ModelRoute ns/chat",
        "spec.targets[0].provider",
        "no such provider",
        Reason.UNKNOWN_PROVIDER,
    )
    outcome = RouteOutcome("ns", "chat", resolved_refs=False, problems=[missing])
    accepted, resolved, ready = conditions.route_conditions(outcome, [])
    assert accepted["status"] == "True"
    assert (resolved["status"], resolved["reason"]) == ("False", "UnknownProvider")
    assert resolved["message"] == "spec.targets[0].provider: no such provider"
    assert ready["message"] == "not in the table: spec.targets[0].provider: no such provider"


def test_a_parse_problem_rejects_the_route() -> None:
    bad = Problem("ModelRoute ns/chat", "spec", "not an object", Reason.PARSE_ERROR)
    accepted, _, ready = conditions.route_conditions(None, [bad])
    assert (accepted["status"], accepted["reason"]) == ("False", "ParseError")
    assert ready["status"] == "False"


def test_transition_times_move_only_with_the_status() -> None:
    old = conditions.with_times([], [conditions.condition("Ready", True, "R", "")], "t0")
    same = conditions.with_times(old, [conditions.condition("Ready", True, "R2", "m")], "t1")
    flipped = conditions.with_times(old, [conditions.condition("Ready", False, "R", "")], "t1")
    assert same[0]["lastTransitionTime"] == "t0"
    assert flipped[0]["lastTransitionTime"] == "t1"
    assert conditions.same_conditions(old, [conditions.condition("Ready", True, "R", "")])
    assert not conditions.same_conditions(old, [conditions.condition("Ready", True, "R", "x")])


def test_policy_condition_is_ready_only_when_complete() -> None:
    done = rollout.RolloutState(
        "h", (), phase=rollout.Phase.COMPLETE, message="all batches healthy"
    )
    halted = rollout.RolloutState("h", (), phase=rollout.Phase.HALTED, message="batch 1 halted")
    assert conditions.policy_condition(done) == {
        "type": "Ready",
        "status": "True",
        "reason": "Complete",
        "message": "all batches healthy",
    }
    assert conditions.policy_condition(halted)["status"] == "False"


# ---- the probe's verdict ---------------------------------------------------------------


def _status(ready: bool = True, recent: int = 100, rate: float = 0.0, hash_: str = "h") -> Any:
    return {
        "table": {"hash": hash_},
        "health": {"ready": ready, "recentRequests": recent, "errorRate": rate},
    }


def test_verdict_against_the_gate() -> None:
    gate = probe.Gate(max_error_rate=0.05, min_requests=10)
    assert probe.verdict(_status(), "h", gate) is rollout.Health.CONVERGED
    assert probe.verdict(_status(hash_="old"), "h", gate) is rollout.Health.WAITING
    assert probe.verdict(_status(ready=False), "h", gate) is rollout.Health.REGRESSED
    assert probe.verdict(_status(rate=0.5), "h", gate) is rollout.Health.REGRESSED
    assert probe.verdict(_status(rate=0.5, recent=9), "h", gate) is rollout.Health.CONVERGED
    assert probe.verdict(["not", "an", "object"], "h", gate) is rollout.Health.WAITING
    assert probe.combine([]) is rollout.Health.CONVERGED
    assert (
        probe.combine([rollout.Health.WAITING, rollout.Health.REGRESSED])
        is rollout.Health.REGRESSED
    )


# ---- admission -------------------------------------------------------------------------


def test_admission_answers_name_no_other_objects() -> None:
    msg = (
        "error: ModelRoute ns/chat: spec.targets[0].provider: unknown provider gatewya"
        "; did you mean gateway? (known: gateway, other)"
    )
    assert admission.without_names(msg) == (
        "error: ModelRoute ns/chat: spec.targets[0].provider: unknown provider gatewya"
    )


def test_provider_hosts_outside_the_namespace_list_are_errors() -> None:
    parsed = parse_manifest(provider("ns"), "ModelProvider")
    assert isinstance(parsed, ModelProvider)
    assert admission.provider_host_errors(parsed, "ns", "") == []
    assert admission.provider_host_errors(parsed, "ns", "127.0.0.1") == []
    errors = admission.provider_host_errors(parsed, "ns", "api.example.com")
    assert len(errors) == 2 and errors[0].startswith("spec.endpoints[0].baseURL: 127.0.0.1 is not")
