"""The operator's ClusterRole grants exactly the verbs the operator uses, nothing more.

OPERATOR_NEEDS is the single reviewed list (one line per code path); the chart
renders its ClusterRole from `modelroute.operatorRules` and this test expands
both to (group, resource, verb) triples and compares them.
"""

from __future__ import annotations

from typing import Any

from .conftest import Render

OPERATOR_NEEDS: dict[tuple[str, str], set[str]] = {
    # kopf watches the three CRDs and patches them (finalizers, progress annotations)
    ("modelroute.io", "modelroutes"): {"get", "list", "watch", "patch"},
    ("modelroute.io", "modelproviders"): {"get", "list", "watch", "patch"},
    ("modelroute.io", "failoverpolicies"): {"get", "list", "watch", "patch"},
    # conditions, observedGeneration, compiled hash
    ("modelroute.io", "modelroutes/status"): {"patch"},
    ("modelroute.io", "modelproviders/status"): {"patch"},
    ("modelroute.io", "failoverpolicies/status"): {"patch"},
    # ConfigMap modelroute-table per namespace
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    # the sidecars' read-only Role + RoleBinding per namespace
    ("rbac.authorization.k8s.io", "roles"): {"get", "list", "watch", "create", "patch", "delete"},
    ("rbac.authorization.k8s.io", "rolebindings"): {
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    },
    ("", "namespaces"): {"get", "list", "watch"},
    # rollout health gate reads sidecar pods
    ("", "pods"): {"get", "list", "watch"},
    # kopf events (core and events.k8s.io, whichever the client posts)
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    # kopf peering
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
    # kopf scanning for CRD changes
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


def expand(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out: set[tuple[str, str, str]] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule
        assert "resourceNames" not in rule, "cluster role rules are not name-scoped"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_cluster_role_is_exactly_what_the_operator_uses(render: Render) -> None:
    [role] = [d for d in render() if d["kind"] == "ClusterRole"]
    granted = expand(role["rules"])
    for group, resource, verb in granted:
        assert "*" not in (group, resource, verb), "no wildcards"
    needed = {(g, r, v) for (g, r), verbs in OPERATOR_NEEDS.items() for v in verbs}
    assert granted - needed == set(), f"granted beyond need: {sorted(granted - needed)}"
    assert needed - granted == set(), f"missing: {sorted(needed - granted)}"
    # Privilege-escalation verbs never appear.
    assert not {v for _, _, v in granted} & {"escalate", "bind", "impersonate", "update"}


def test_binding_targets_the_operator_account(render: Render) -> None:
    docs = render()
    [binding] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    [sa] = [d for d in docs if d["kind"] == "ServiceAccount"]
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "modelroute-system"}
    ]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
