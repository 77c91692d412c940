"""Issue 13 on the real API server: what the operator's identity may do, and who is injected.

Each line here is one that only kube-apiserver can draw: RBAC's authorizer and its
escalation check (item 3), the webhook Service's endpoints spreading reviews over two
peering replicas (item 2), and the mutating webhook's namespace selector (item 8).
The operator runs with the chart's ServiceAccount token (``operator_process.py``);
``test_install.py`` already holds that it can't read Secrets or patch a ConfigMap it
doesn't own in an enrolled namespace, so this file adds only what those don't cover.

Webhook calls are TLS, so the tests count them through :class:`~.relay.Relay`
between the Service's endpoint and the replica; a relay with no target is a tripwire.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from modelroute.operator import probe, rollout
from modelroute.operator.kube import ApiError, KubeApi
from modelroute.proxy.kube_source import KubeConfig

from .conftest import RELEASE, RELEASE_NS, WEBHOOK_SERVICE, eventually
from .controlplane import ControlPlane
from .operator_process import OperatorProcess
from .relay import Relay
from .test_install import enrolled_namespace, pod

POD_READER = f"{RELEASE}-pod-reader"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
PODS_BINDING = RBAC + "/namespaces/{ns}/rolebindings/modelroute-operator-pods"
ENABLED = "modelroute.io/enabled"


def as_operator(op: OperatorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return op.cp.kubectl(*args, check=False, kubeconfig=op.kubeconfig)


def forbidden(out: subprocess.CompletedProcess[str]) -> bool:
    return out.returncode != 0 and "forbidden" in out.stderr.lower()


def can_i(op: OperatorProcess, *args: str) -> str:
    """kubectl auth can-i as the operator: the API server's own SelfSubjectAccessReview."""
    return as_operator(op, "auth", "can-i", *args).stdout.strip()


def labelled_namespace(cp: ControlPlane, name: str) -> None:
    """Enrolled from its first event: no unlabelled moment for a view to cache."""
    meta = {"name": name, "labels": {ENABLED: "true"}}
    assert cp.api(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
    )


def create_pod(cp: ControlPlane, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    body = pod(ns, name)
    body["spec"].update(spec)
    created = cp.api("POST", f"/api/v1/namespaces/{ns}/pods", body)
    assert created is not None
    return created


def injected(created: dict[str, Any]) -> bool:
    names = [c["name"] for c in created["spec"].get("initContainers") or []]
    return "modelroute-proxy" in names and (
        (created["metadata"].get("annotations") or {}).get("modelroute.io/injected") == "true"
    )


@pytest.fixture
def routed(operator: OperatorProcess) -> Iterator[list[Relay]]:
    """Relays a test puts in front of the webhook; the Service points at the operator after."""
    relays: list[Relay] = []
    yield relays
    operator.cp.route_service(RELEASE_NS, WEBHOOK_SERVICE, operator.webhook_port)
    for relay in relays:
        relay.stop()


# ---- item 3: the operator lists pods only in the namespaces it enrolled ----------------


def test_the_operator_may_list_pods_only_in_enrolled_namespaces(operator: OperatorProcess) -> None:
    cp = operator.cp
    enrolled_namespace(cp, "sec-apps")
    cp.kubectl("create", "namespace", "sec-plain")
    binding = eventually(
        lambda: cp.api("GET", PODS_BINDING.format(ns="sec-apps")), what="the pod-list binding"
    )
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": POD_READER,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NS}
    ]
    bindings = cp.api("GET", f"{RBAC}/clusterrolebindings")
    assert bindings is not None
    assert [b for b in bindings["items"] if b["roleRef"]["name"] == POD_READER] == []

    eventually(lambda: can_i(operator, "list", "pods", "-n", "sec-apps") == "yes", what="list")
    listed = as_operator(operator, "get", "pods", "-n", "sec-apps")
    assert listed.returncode == 0, listed.stderr
    for ns in ("sec-plain", "kube-system", RELEASE_NS, "default"):
        assert can_i(operator, "list", "pods", "-n", ns) == "no", ns
        assert forbidden(as_operator(operator, "get", "pods", "-n", ns)), ns
    assert can_i(operator, "list", "pods", "--all-namespaces") == "no"
    assert forbidden(as_operator(operator, "get", "pods", "--all-namespaces"))
    assert can_i(operator, "get", "pods", "-n", "sec-apps") == "no"  # list is all it needs

    # where it may list pods, Secrets stay closed (test_install.py checks other namespaces)
    assert forbidden(as_operator(operator, "get", "secrets", "-n", "sec-apps"))
    # no ConfigMap of kube-system is its to change, its own table's name included
    for name in ("kube-root-ca.crt", "extension-apiserver-authentication"):
        patch = ["--type=merge", "-p", '{"data":{"x":"y"}}']
        assert forbidden(
            as_operator(operator, "patch", "configmap", name, "-n", "kube-system", *patch)
        ), name
    # bind is for the pod reader only: a binding to any other role is an escalation
    for role in ("cluster-admin", "edit", "view"):
        out = as_operator(
            operator, "create", "rolebinding", f"sneaky-{role}", "-n", "sec-apps",
            f"--clusterrole={role}", f"--serviceaccount={RELEASE_NS}:{RELEASE}",
        )  # fmt: skip
        assert forbidden(out), (role, out.stdout, out.stderr)

    # leaving takes the right away again
    cp.kubectl("label", "namespace", "sec-apps", f"{ENABLED}-")
    eventually(
        lambda: cp.api("GET", PODS_BINDING.format(ns="sec-apps")) is None,
        within=20,
        what="the pod-list binding removed",
    )
    eventually(lambda: can_i(operator, "list", "pods", "-n", "sec-apps") == "no", what="no list")


async def test_the_rollout_gate_reads_enrolled_namespaces_and_says_why_it_cant_elsewhere(
    operator: OperatorProcess,
) -> None:
    """The gate's own code (``probe.py``) with the operator's token: it lists an enrolled
    namespace's pods, and a 403 anywhere else names the binding it lacks."""
    cp = operator.cp
    enrolled_namespace(cp, "sec-gate")
    cp.kubectl("create", "namespace", "sec-nogate")
    create_pod(cp, "sec-gate", "app")
    async with KubeApi(KubeConfig.from_kubeconfig(operator.kubeconfig)) as api:

        async def listed() -> list[str] | None:
            try:
                return [p["metadata"]["name"] for p in await probe.list_pods(api, "sec-gate")]
            except ApiError:
                return None

        names = None
        for _ in range(100):  # the binding is written right after the table: bounded wait
            names = await listed()
            if names:
                break
            await asyncio.sleep(0.1)
        assert names == ["app"]
        # no podIP (no kubelet): nothing to ask, so the namespace has converged
        health = await probe.probe_sidecars(api, "sec-gate", "sha256:x", probe.Gate())
        assert health is rollout.Health.CONVERGED
        for ns in ("sec-nogate", "kube-system"):
            with pytest.raises(ApiError) as err:
                await probe.probe_sidecars(api, ns, "sha256:x", probe.Gate())
            assert err.value.status == 403
            assert f"may not list pods in namespace {ns}" in str(err.value)
            assert "modelroute-operator-pods" in str(err.value)


# ---- item 8: who is never sent to the injector, and who is asked and declined ----------


def test_kube_system_and_the_operators_namespace_never_reach_the_injector(
    operator: OperatorProcess, routed: list[Relay]
) -> None:
    """Labelled for enrolment or not: the API server doesn't call the webhook for them."""
    cp = operator.cp
    tripwire = Relay(None).start()
    routed.append(tripwire)
    cp.route_service(RELEASE_NS, WEBHOOK_SERVICE, tripwire.port)
    protected = ("kube-system", RELEASE_NS)
    try:
        for ns in protected:
            cp.kubectl("label", "namespace", ns, f"{ENABLED}=true", "--overwrite")
        # control: a namespace labelled after them is sent to the webhook (the tripwire
        # hangs up, failurePolicy Ignore admits the pod); the API server's namespace view
        # has then seen the labels above too, which came first
        labelled_namespace(cp, "sec-tripwire")
        n = itertools.count()
        eventually(
            lambda: create_pod(cp, "sec-tripwire", f"control-{next(n)}") and tripwire.connections,
            what="the control pod reaching the webhook",
        )
        seen = tripwire.connections
        for ns in protected:
            created = create_pod(cp, ns, "labelled-app")
            assert not injected(created) and "initContainers" not in created["spec"], ns
        assert tripwire.connections == seen, "a protected namespace's pod was sent to the webhook"
    finally:
        for ns in protected:
            cp.kubectl("label", "namespace", ns, f"{ENABLED}-", check=False)
            cp.kubectl("delete", "pod", "labelled-app", "-n", ns, "--wait=false", check=False)
    # labelled, the operator enrolled them meanwhile; it must take its objects back out
    # (the next tests hold it to no pods right in kube-system)
    eventually(
        lambda: all(cp.api("GET", PODS_BINDING.format(ns=ns)) is None for ns in protected),
        within=30,
        what="the operator leaving kube-system and its own namespace",
    )


def test_a_host_network_pod_is_asked_about_and_admitted_without_the_sidecar(
    operator: OperatorProcess, routed: list[Relay]
) -> None:
    cp = operator.cp
    relay = Relay(operator.webhook_port).start()
    routed.append(relay)
    cp.route_service(RELEASE_NS, WEBHOOK_SERVICE, relay.port)
    labelled_namespace(cp, "sec-hostnet")
    n = itertools.count()
    eventually(  # control: this namespace's pods are injected through the relay
        lambda: injected(create_pod(cp, "sec-hostnet", f"app-{next(n)}")) and relay.sent(),
        what="an injected pod through the relay",
    )
    before = relay.sent()
    created = create_pod(cp, "sec-hostnet", "on-the-node", hostNetwork=True)
    assert relay.sent() > before, "the injector was not asked"
    assert "initContainers" not in created["spec"]
    assert [c["name"] for c in created["spec"]["containers"]] == ["app"]
    assert "modelroute.io/injected" not in (created["metadata"].get("annotations") or {})
    app = created["spec"]["containers"][0]
    assert "OPENAI_BASE_URL" not in {e["name"] for e in app.get("env") or []}


# ---- item 2: a standby peering replica injects too --------------------------------------


def test_every_pod_is_injected_whichever_peering_replica_the_api_server_asks(
    operator: OperatorProcess, routed: list[Relay], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two replicas behind the webhook Service; the session's (priority 100) pauses for B
    (200).  The namespace is created after it paused, so nothing kopf watches on the
    standby knows it; every pod still gets the sidecar, and both replicas were asked."""
    cp = operator.cp
    a = operator
    b = OperatorProcess(
        cp, RELEASE_NS, RELEASE, Path(tmp_path_factory.mktemp("operator-b")), priority=200
    )
    second = f"{WEBHOOK_SERVICE}-local-b"
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{RELEASE_NS}/endpointslices"
    b.start()
    try:
        relay_a, relay_b = Relay(a.webhook_port).start(), Relay(b.webhook_port).start()
        routed += [relay_a, relay_b]
        cp.route_service(RELEASE_NS, WEBHOOK_SERVICE, relay_a.port)
        cp.route_service(RELEASE_NS, WEBHOOK_SERVICE, relay_b.port, slice_name=second)
        eventually(
            a.has_paused,
            within=20,
            what="A pausing in favour of B",
        )
        labelled_namespace(cp, "sec-standby")
        bare = [
            p["metadata"]["name"]
            for p in (create_pod(cp, "sec-standby", f"app-{i}") for i in range(16))
            if not injected(p)
        ]
        assert bare == [], f"admitted without the sidecar: {bare}"
        # random over two slices, 16 times: both replicas answered (p of not: 2**-15)
        assert relay_a.sent() > 0, "the standby was never asked"
        assert relay_b.sent() > 0, "the leader was never asked"
    finally:
        cp.api("DELETE", f"{slices}/{second}")
        b.stop()  # SIGTERM: kopf takes B out of the peering and A resumes
    eventually(
        a.resumed_since_pause,
        within=20,
        what="A resuming",
    )
