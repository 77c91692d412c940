"""Enrolment on the real API server: un-labelling removes what the operator wrote, and
deleting a namespace that holds a table (the namespace controller at work) does not
wedge the operator."""

from __future__ import annotations

from .conftest import eventually
from .controlplane import ControlPlane
from .operator_process import OperatorProcess
from .test_install import enrolled_namespace, provider_yaml, route_yaml

OURS = (
    "/api/v1/namespaces/{ns}/configmaps/modelroute-table",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/modelroute-sidecar",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/modelroute-sidecar",
)


def ours(cp: ControlPlane, ns: str) -> list[bool]:
    return [cp.api("GET", path.format(ns=ns)) is not None for path in OURS]


def test_removing_the_label_removes_table_and_rbac(operator: OperatorProcess) -> None:
    cp = operator.cp
    enrolled_namespace(cp, "leaving")
    cp.kubectl(
        "apply", "-f", "-", input=provider_yaml("leaving") + "---" + route_yaml("leaving", "r")
    )
    eventually(lambda: all(ours(cp, "leaving")), what="table, Role and RoleBinding")
    cp.kubectl("label", "namespace", "leaving", "modelroute.io/enabled-")
    eventually(lambda: not any(ours(cp, "leaving")), what="all three removed")
    # the routes themselves are the user's: they stay
    assert cp.api("GET", "/apis/modelroute.io/v1alpha1/namespaces/leaving/modelroutes/r")


def test_deleting_a_namespace_with_a_table_does_not_wedge_the_operator(
    operator: OperatorProcess,
) -> None:
    cp = operator.cp
    enrolled_namespace(cp, "doomed")
    cp.kubectl(
        "apply", "-f", "-", input=provider_yaml("doomed") + "---" + route_yaml("doomed", "r")
    )
    eventually(lambda: all(ours(cp, "doomed")), what="doomed's table")
    cp.kubectl("delete", "namespace", "doomed", "--wait=false")
    # the namespace controller empties it and it goes: nothing of ours holds it up
    eventually(lambda: cp.api("GET", "/api/v1/namespaces/doomed") is None, within=60, what="gone")
    # and the operator still works: a new namespace gets its table and a Ready route
    enrolled_namespace(cp, "after-doomed")
    cp.kubectl(
        "apply",
        "-f",
        "-",
        input=provider_yaml("after-doomed") + "---" + route_yaml("after-doomed", "r"),
    )
    cp.kubectl("wait", "-n", "after-doomed", "mroute/r", "--for=condition=Ready", "--timeout=20s")
    assert operator.alive(), operator.tail()
    # it did not fight the namespace controller: no write into the terminating namespace
    assert "unable to create new content in namespace doomed" not in operator.log.read_text()
