"""The operator's ClusterRole grants exactly what the operator uses, nothing more.

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
from modelroute.operator.service import sidecar_role

from .conftest import ROOT, Render

Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

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
}


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
def used(tmp_path_factory: pytest.TempPathFactory) -> set[Triple]:
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
    out: set[Triple] = set()
    for line in record.read_text().splitlines():
        rec = json.loads(line)
        t = triple(rec["method"], rec["path"], rec["query"])
        if t is not None and not sidecars_own(rec):
            out.add(t)
    return out


def expand(rules: list[dict[str, Any]]) -> set[Triple]:
    out: set[Triple] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule
        assert "resourceNames" not in rule, "cluster role rules are not name-scoped"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def cluster_role(render: Render) -> set[Triple]:
    [role] = [d for d in render() if d["kind"] == "ClusterRole"]
    granted = expand(role["rules"])
    for group, resource, verb in granted:
        assert "*" not in (group, resource, verb), "no wildcards"
    return granted


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


def test_cluster_role_is_exactly_what_the_operator_uses(render: Render, used: set[Triple]) -> None:
    granted = cluster_role(render)
    needed = used | set(NOT_EXERCISED)
    assert needed - granted == set(), f"used but not granted: {sorted(needed - granted)}"
    assert granted - needed == set(), f"granted but never used: {sorted(granted - needed)}"
    # The operator never writes Namespace objects (kopf state lives on our own resources).
    assert not {
        t for t in used if t[1].startswith("namespaces") and t[2] not in ("get", "list", "watch")
    }
    # Privilege-escalation verbs never appear.
    assert not {v for _, _, v in granted} & {"escalate", "bind", "impersonate", "update"}


def test_operator_holds_what_it_grants_the_sidecars(render: Render) -> None:
    """Kubernetes only lets the operator create a Role with rights it holds itself."""
    granted = cluster_role(render)
    for rule in sidecar_role("any")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (group, resource, verb) in granted, (group, resource, verb)


def test_binding_targets_the_operator_account(render: Render) -> None:
    docs = render()
    [binding] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    [sa] = [d for d in docs if d["kind"] == "ServiceAccount"]
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "modelroute-system"}
    ]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
