"""The operator's ClusterRole grants exactly what the operator uses, nothing more.

Its pods right is not cluster-wide (issue 13 item 3): the chart ships an unbound
ClusterRole ``<fullname>-pod-reader`` that the operator may only ``bind``, and does, to
itself, in each namespace it enrols; the requests it makes to list pods are checked
against that role, and must be namespaced.

"What it uses" is not a hand-written list: the operator scenarios
(``tests/operator/test_*.py`` that run the real operator with ``KopfRunner``
against kmock) are run in a child pytest with the ``rbac_recorder`` plugin, which
logs every request that carried the operator's credentials.  Each request becomes
the (group, resource, verb) RBAC would check; the chart must grant all of them and
nothing beyond them plus :data:`NOT_EXERCISED`, the few permissions a test run
cannot show, each with its reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from modelroute.operator import manifests
from modelroute.operator.manifests import sidecar_role

from ..operator.helpers import POD_READER_ENV
from .conftest import ROOT, Render

Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
# A grant: a triple and the object name it is limited to ("*": any, a rule without
# resourceNames).  A used triple carries the name RBAC sees (None: create, lists).
Grant = tuple[str, str, str, str]
Use = tuple[Triple, str | None]

POD_LIST: Triple = ("", "pods", "list")
HERE = Path(__file__).resolve().parent
OPERATOR_TESTS = ROOT / "tests" / "operator"

NOT_EXERCISED: dict[Triple, str] = {
    # The tests run `--standalone`; the chart runs replicas that peer cluster-wide
    # (settings.peering.clusterwide = True): kopf lists and watches the peering object
    # and patches its own entry into it.  kopf never GETs it, nor creates it (the chart does).
    ("kopf.dev", "clusterkopfpeerings", "list"): "kopf peering",
    ("kopf.dev", "clusterkopfpeerings", "watch"): "kopf peering",
    ("kopf.dev", "clusterkopfpeerings", "patch"): "kopf peering",
    # Kubernetes refuses to let the operator create the sidecar Role (get/list/watch on
    # the table ConfigMap) unless it holds those verbs itself (RBAC escalation check).
    ("", "configmaps", "watch"): "escalation: the sidecar Role grants it",
    # Creating (or patching) RoleBinding modelroute-operator-pods, which references the
    # pod-reader ClusterRole, needs either that role's rights cluster-wide (what issue 13
    # item 3 takes away) or bind on the role: RBAC checks it, no request carries it.
    ("rbac.authorization.k8s.io", "clusterroles", "bind"): "escalation: the pod-list binding",
}


def object_name(method: str, path: str, query: dict[str, str]) -> str | None:
    """The name RBAC matches against ``resourceNames``: the path's object name, or for a
    list/watch the ``metadata.name`` field selector (kube-apiserver's RequestInfo)."""
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest and rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    if len(rest) > 1:
        return rest[1]
    selector = query.get("fieldSelector", "")
    if method == "GET" and selector.startswith("metadata.name=") and "," not in selector:
        return selector.removeprefix("metadata.name=")
    return None


def triple(method: str, path: str, query: dict[str, str]) -> Triple | None:
    """The RBAC (group, resource, verb) a request is authorized against; None: discovery."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None  # /version, /api, /apis: non-resource URLs every user may read
    if not rest:
        return None  # /api/v1, /apis/<group>/<version>: discovery
    namespace_subresource = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
    if rest[0] == "namespaces" and len(rest) >= 3 and not namespace_subresource:
        rest = rest[2:]  # /namespaces/<ns>/<resource>...: a namespaced resource
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else "get" if named else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}[method]
    return group, resource, verb


def sidecars_own(record: dict[str, Any]) -> bool:
    """The rollout test's fake sidecars share the operator's kubeconfig; their namespaced
    list/watch of the table ConfigMap is what the per-namespace sidecar Role grants, not
    the operator's ClusterRole (the operator lists that ConfigMap cluster-wide only)."""
    parts = record["path"].strip("/").split("/")
    return bool(
        record["method"] == "GET"
        and parts[:3] == ["api", "v1", "namespaces"]
        and parts[4:] == ["configmaps"]
        and record["query"].get("fieldSelector") == "metadata.name=modelroute-table"
    )


def scenarios() -> list[Path]:
    return sorted(p for p in OPERATOR_TESTS.glob("test_*.py") if "KopfRunner" in p.read_text())


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run the operator scenarios once and collect what the operator asked the API for."""
    record = tmp_path_factory.mktemp("rbac") / "requests.jsonl"
    env = {
        **os.environ,
        "MODELROUTE_RBAC_RECORD": str(record),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    files = [str(p) for p in scenarios()]
    assert len(files) >= 3, files  # routes, rollout, namespace events at least
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "rbac_recorder", *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"operator scenarios failed:\n{run.stdout[-4000:]}"
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.fixture(scope="module")
def used(records: list[dict[str, Any]]) -> set[Use]:
    """Each request as the RBAC check it needs (the sidecars' own calls left out)."""
    out: set[Use] = set()
    for rec in records:
        t = triple(rec["method"], rec["path"], rec["query"])
        if t is not None and not sidecars_own(rec):
            out.add((t, object_name(rec["method"], rec["path"], rec["query"])))
    return out


def expand(rules: list[dict[str, Any]]) -> set[Grant]:
    out: set[Grant] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or ["*"]:
                        out.add((group, resource, verb, name))
    return out


def _role(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name]
    return role


def _no_wildcards(granted: set[Grant]) -> set[Grant]:
    for group, resource, verb, _ in granted:
        assert "*" not in (group, resource, verb), "no wildcards"
    return granted


def cluster_role(render: Render) -> set[Grant]:
    """The operator's cluster-wide rights: the ClusterRole its ClusterRoleBinding names."""
    docs = render()
    [binding] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    return _no_wildcards(expand(_role(docs, binding["roleRef"]["name"])["rules"]))


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator's environment as a kubelet would resolve it (the two fieldRefs it uses)."""
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    fields = {"metadata.namespace": deploy["metadata"]["namespace"]}
    fields["spec.serviceAccountName"] = pod["serviceAccountName"]
    [container] = pod["containers"]
    return {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
    }


def pod_reader(render: Render) -> set[Grant]:
    """What the operator holds in an enrolled namespace besides its ClusterRole."""
    docs = render()
    name = operator_env(docs)["MODELROUTE_POD_READER_CLUSTERROLE"]
    return _no_wildcards(expand(_role(docs, name)["rules"]))


def covered(t: Triple, name: str | None, granted: set[Grant]) -> bool:
    """RBAC's rule match: any name, or the request's name among the rule's resourceNames."""
    return (*t, "*") in granted or (name is not None and (*t, name) in granted)


def test_triple_reads_requests_the_way_rbac_does() -> None:
    assert triple("GET", "/api/v1/namespaces", {"watch": "true"}) == ("", "namespaces", "watch")
    assert triple("GET", "/api/v1/namespaces/team-a", {}) == ("", "namespaces", "get")
    assert triple("PATCH", "/api/v1/namespaces/kube-system", {}) == ("", "namespaces", "patch")
    assert triple("PUT", "/api/v1/namespaces/a/finalize", {}) == (
        "",
        "namespaces/finalize",
        "update",
    )
    assert triple("GET", "/api/v1/namespaces/a/pods", {}) == ("", "pods", "list")
    assert triple("GET", "/api/v1/configmaps", {}) == ("", "configmaps", "list")
    assert triple("DELETE", "/api/v1/namespaces/a/configmaps/t", {}) == ("", "configmaps", "delete")
    path = "/apis/modelroute.io/v1alpha1/namespaces/a/modelroutes/r/status"
    assert triple("PATCH", path, {}) == ("modelroute.io", "modelroutes/status", "patch")
    assert triple("GET", "/apis/modelroute.io/v1alpha1", {}) is None
    assert triple("GET", "/version", {}) is None
    cm = "/api/v1/namespaces/a/configmaps"
    assert object_name("PATCH", f"{cm}/modelroute-table", {}) == "modelroute-table"
    assert object_name("GET", cm, {"fieldSelector": "metadata.name=t"}) == "t"
    assert object_name("POST", cm, {}) is None


def test_cluster_role_is_exactly_what_the_operator_uses(render: Render, used: set[Use]) -> None:
    granted = cluster_role(render) | pod_reader(render)
    missing = sorted((t, n) for t, n in used if not covered(t, n, granted))
    assert missing == [], f"used but not granted: {missing}"
    needed = {t for t, _ in used} | set(NOT_EXERCISED)
    unused = {g[:3] for g in granted} - needed
    assert unused == set(), f"granted but never used: {sorted(unused)}"
    # A name-limited grant is used under that name (no dead resourceNames entries).
    names = {(t, n) for t, n in used}
    for g in granted:
        if g[3] != "*" and g[:3] not in NOT_EXERCISED:
            assert (g[:3], g[3]) in names, f"granted for a name never used: {g}"
    # The operator never writes Namespace objects (kopf state lives on our own resources).
    assert not {
        t for t, _ in used if t[1].startswith("namespaces") and t[2] not in ("get", "list", "watch")
    }
    # Privilege-escalation verbs never appear, but bind on the one pod-reader ClusterRole.
    assert not {g[2] for g in granted} & {"escalate", "impersonate", "update"}
    reader = operator_env(render())["MODELROUTE_POD_READER_CLUSTERROLE"]
    assert {g for g in granted if g[2] == "bind"} == {
        ("rbac.authorization.k8s.io", "clusterroles", "bind", reader)
    }


def test_no_cluster_wide_pods_right_only_the_pod_reader_bound_by_the_operator(
    render: Render, records: list[dict[str, Any]]
) -> None:
    """Issue 13 item 3: the ClusterRole grants nothing on pods (kube-system's included);
    the pod-reader role is bound by no ClusterRoleBinding, and the operator lists pods
    only inside a namespace, where its RoleBinding grants them."""
    docs = render()
    assert not {g for g in cluster_role(render) if g[1].startswith("pods")}
    reader = operator_env(docs)["MODELROUTE_POD_READER_CLUSTERROLE"]
    assert pod_reader(render) == {("", "pods", "list", "*")}
    assert [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == reader
    ] == []
    pod_lists = [r for r in records if triple(r["method"], r["path"], r["query"]) == POD_LIST]
    assert pod_lists, "the scenarios exercise the rollout's pod listing"
    assert {r["path"].split("/")[3] for r in pod_lists} == {"namespaces"}, pod_lists


def test_the_operator_may_bind_exactly_the_role_it_binds(render: Render) -> None:
    """The RoleBinding the operator writes, from the Deployment's own environment, names the
    chart's pod-reader role (which the ClusterRole lets it bind) and the chart's account."""
    docs = render()
    reader = manifests.pod_reader_from_env(operator_env(docs))
    assert reader is not None, "the chart tells the operator whom to grant pod list"
    binding = manifests.operator_pods_binding("team-a", reader)
    assert ("rbac.authorization.k8s.io", "clusterroles", "bind", binding["roleRef"]["name"]) in (
        cluster_role(render)
    )
    [sa] = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "modelroute-system"}
    ]
    # the operator's own RoleBindings are the ones it may get, patch and delete by name
    for name in (manifests.OPERATOR_PODS_RBAC, manifests.SIDECAR_RBAC):
        for verb in ("get", "patch", "delete"):
            assert ("rbac.authorization.k8s.io", "rolebindings", verb, name) in cluster_role(render)
    # the kmock scenarios run with the environment this chart renders (tests/operator/conftest.py)
    assert {k: operator_env(docs)[k] for k in POD_READER_ENV} == POD_READER_ENV


def test_operator_holds_what_it_grants_the_sidecars(render: Render) -> None:
    """Kubernetes only lets the operator create a Role with rights it holds itself."""
    granted = cluster_role(render)
    for rule in sidecar_role("any")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        assert covered((group, resource, verb), name, granted), (resource, verb)


def test_binding_targets_the_operator_account(render: Render) -> None:
    docs = render()
    [binding] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    [sa] = [d for d in docs if d["kind"] == "ServiceAccount"]
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "modelroute-system"}
    ]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
