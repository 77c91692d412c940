"""The chart on a real API server: what ``helm install`` + ``kubectl apply`` give a user.

Against kube-apiserver 1.37 built from source (tests/cluster/controlplane.py): the
chart's objects are accepted, its CRDs are Established with their CEL rules compiled,
the operator runs with the chart's ServiceAccount token (so RBAC is the chart's),
and both admission webhooks are reached through the chart's webhook configurations,
Service and CA.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from .conftest import RELEASE, RELEASE_NS, Release, eventually
from .controlplane import ApiStatus, ControlPlane
from .operator_process import OperatorProcess

CRDS = (
    "modelroutes.modelroute.io",
    "modelproviders.modelroute.io",
    "failoverpolicies.modelroute.io",
    "clusterkopfpeerings.kopf.dev",
)


def enrolled_namespace(cp: ControlPlane, name: str, **labels: str) -> None:
    cp.kubectl("create", "namespace", name)
    pairs = [f"{k}={v}" for k, v in {"modelroute.io/enabled": "true", **labels}.items()]
    cp.kubectl("label", "namespace", name, *pairs)


def provider_yaml(ns: str, name: str = "gateway", url: str = "http://127.0.0.1:9/v1") -> str:
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {{name: {name}, namespace: {ns}}}
spec:
  endpoints:
    - {{region: us-east, baseURL: "{url}"}}
    - {{region: eu-west, baseURL: "{url}"}}
"""


def route_yaml(ns: str, name: str, provider: str = "gateway", model: str = "qwen3-8b") -> str:
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  models: [{name}]
  targets: [{{provider: {provider}, model: {model}}}]
"""


def get(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


# ---- helm install ------------------------------------------------------------------


def test_helm_install_is_accepted_and_crds_are_established(release: Release) -> None:
    cp = release.cp
    status = json.loads(cp.helm("status", RELEASE, "-n", RELEASE_NS, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    # Helm's real release storage: a Secret of type helm.sh/release.v1 in the namespace
    secrets = get(cp, "secrets", "-n", RELEASE_NS, "--field-selector", "type=helm.sh/release.v1")
    assert [s["metadata"]["name"] for s in secrets["items"]] == [f"sh.helm.release.v1.{RELEASE}.v1"]
    for crd in CRDS:
        cp.kubectl("wait", f"crd/{crd}", "--for=condition=Established", "--timeout=30s")
    # every object of the release is there, as the chart rendered it
    manifest = cp.helm("get", "manifest", RELEASE, "-n", RELEASE_NS).stdout
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    assert {d["kind"] for d in docs} >= {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "Secret",
        "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ClusterKopfPeering",
    }  # fmt: skip
    cp.kubectl("get", "-f", "-", input=manifest)


def test_crd_cel_rules_are_compiled_and_enforced(release: Release) -> None:
    """A CEL rule of the ModelRoute CRD refuses a spec at apply, with its own message."""
    cp = release.cp
    cp.kubectl("create", "namespace", "cel-check")
    bad = route_yaml("cel-check", "slow") + "  timeouts: {firstByteMs: 5000, totalMs: 1000}\n"
    out = cp.kubectl("apply", "-f", "-", input=bad, check=False)
    assert out.returncode != 0
    assert "timeouts.firstByteMs must not exceed timeouts.totalMs" in out.stderr, out.stderr


# ---- the operator's identity ----------------------------------------------------------


def test_operator_runs_with_the_chart_serviceaccount(operator: OperatorProcess) -> None:
    cp = operator.cp
    who = cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=operator.kubeconfig)
    user = json.loads(who.stdout)["status"]["userInfo"]["username"]
    assert user == f"system:serviceaccount:{RELEASE_NS}:{RELEASE}"


def test_operator_identity_cannot_read_secrets(operator: OperatorProcess) -> None:
    cp = operator.cp
    for ns in (RELEASE_NS, "default", "kube-system"):
        out = cp.kubectl("get", "secrets", "-n", ns, check=False, kubeconfig=operator.kubeconfig)
        assert out.returncode != 0 and "Forbidden" in out.stderr, (ns, out.stdout, out.stderr)
    out = cp.kubectl(
        "get", "secret", "-n", RELEASE_NS, f"{RELEASE}-webhook-tls",
        check=False, kubeconfig=operator.kubeconfig,
    )  # fmt: skip
    assert out.returncode != 0 and "Forbidden" in out.stderr, out.stderr


def test_operator_identity_cannot_patch_a_configmap_it_does_not_own(
    operator: OperatorProcess,
) -> None:
    cp = operator.cp
    enrolled_namespace(cp, "not-ours")
    cp.kubectl("create", "configmap", "app-settings", "-n", "not-ours", "--from-literal=a=b")
    for verb in (
        ["patch", "configmap", "app-settings", "--type=merge", "-p", '{"data":{"a":"c"}}'],
        ["delete", "configmap", "app-settings"],
        ["patch", "configmap", "kube-root-ca.crt", "--type=merge", "-p", '{"data":{"x":"y"}}'],
    ):
        out = cp.kubectl(*verb, "-n", "not-ours", check=False, kubeconfig=operator.kubeconfig)
        assert out.returncode != 0 and "Forbidden" in out.stderr, (verb, out.stdout, out.stderr)
    assert get(cp, "configmap", "app-settings", "-n", "not-ours")["data"] == {"a": "b"}
    # ... while its own table in the same namespace is written (by the operator, under RBAC)
    eventually(
        lambda: cp.api("GET", "/api/v1/namespaces/not-ours/configmaps/modelroute-table"),
        what="the operator's table in not-ours",
    )


# ---- admission webhooks ------------------------------------------------------------


def test_validating_webhook_refuses_unknown_provider_at_apply(operator: OperatorProcess) -> None:
    cp = operator.cp
    enrolled_namespace(cp, "team-v")
    cp.kubectl("apply", "-f", "-", input=provider_yaml("team-v"))
    out = cp.kubectl("apply", "-f", "-", input=route_yaml("team-v", "typo", "gatway"), check=False)
    assert out.returncode != 0, out.stdout
    assert 'admission webhook "validate-modelroute.modelroute.io" denied the request' in out.stderr
    assert "no ModelProvider named 'gatway' in namespace 'team-v'" in out.stderr, out.stderr
    # issue 13: the webhook port answers anyone: no provider names of the namespace listed
    assert "gateway" not in out.stderr.split("gatway", 2)[-1], out.stderr
    assert cp.api("GET", "/apis/modelroute.io/v1alpha1/namespaces/team-v/modelroutes/typo") is None
    # the good spelling is accepted
    cp.kubectl("apply", "-f", "-", input=route_yaml("team-v", "typo", "gateway"))


def pod(ns: str, name: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {
            "containers": [{"name": "app", "image": "python:3.11-slim", "command": ["sleep", "1"]}]
        },
    }


def test_mutating_webhook_injects_a_native_sidecar_the_server_accepts(
    operator: OperatorProcess,
) -> None:
    cp = operator.cp
    enrolled_namespace(cp, "team-i")
    created = cp.api("POST", "/api/v1/namespaces/team-i/pods", pod("team-i", "app"))
    assert created is not None
    spec = created["spec"]
    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == "modelroute-proxy"
    assert sidecar["restartPolicy"] == "Always"  # native sidecar: the server knows 1.37
    argv = sidecar["command"] + sidecar.get("args", [])
    assert argv[:2] == ["modelroute", "proxy"] and "--kube" in argv, argv
    app = spec["containers"][0]
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:15400/v1"} in app["env"]
    assert created["metadata"]["annotations"]["modelroute.io/injected"] == "true"
    assert created["metadata"]["labels"]["modelroute.io/injected"] == "true"
    # what the server stored after its own defaulting and validation
    stored = get(cp, "pod", "app", "-n", "team-i")
    assert stored["spec"]["initContainers"][0]["readinessProbe"]["httpGet"]["port"] == 15401


def test_pods_outside_enrolled_namespaces_or_opted_out_are_untouched(
    operator: OperatorProcess,
) -> None:
    cp = operator.cp
    cp.kubectl("create", "namespace", "plain")
    created = cp.api("POST", "/api/v1/namespaces/plain/pods", pod("plain", "app"))
    assert created is not None
    assert "initContainers" not in created["spec"]
    assert [c["name"] for c in created["spec"]["containers"]] == ["app"]
    assert "modelroute.io/injected" not in (created["metadata"].get("annotations") or {})
    enrolled_namespace(cp, "team-o")
    opted = cp.api(
        "POST",
        "/api/v1/namespaces/team-o/pods",
        pod("team-o", "app", **{"modelroute.io/inject": "false"}),
    )
    assert opted is not None and "initContainers" not in opted["spec"]


# ---- what a person reads ---------------------------------------------------------------


def test_get_mroute_columns_generation_conditions_and_events(operator: OperatorProcess) -> None:
    cp = operator.cp
    enrolled_namespace(cp, "team-s")
    cp.kubectl(
        "apply", "-f", "-", input=provider_yaml("team-s") + "---" + route_yaml("team-s", "general")
    )
    cp.kubectl("wait", "-n", "team-s", "mroute/general", "--for=condition=Ready", "--timeout=20s")
    table = cp.kubectl("get", "mroute", "-n", "team-s").stdout.splitlines()
    assert table[0].split() == ["NAME", "MODELS", "PRIMARY", "READY", "AGE"]
    assert table[1].split()[:4] == ["general", "general", "gateway/qwen3-8b", "True"]

    # observedGeneration follows the server's metadata.generation
    cp.kubectl("apply", "-f", "-", input=route_yaml("team-s", "general", model="qwen3-32b"))
    obj = get(cp, "mroute", "general", "-n", "team-s")
    assert obj["metadata"]["generation"] == 2
    eventually(
        lambda: (
            get(cp, "mroute", "general", "-n", "team-s")["status"].get("observedGeneration") == 2
        ),
        what="observedGeneration 2",
    )
    assert get(cp, "mroute", "general", "-n", "team-s")["status"]["primaryTarget"] == (
        "gateway/qwen3-32b"
    )
    # a status write does not bump the generation (the status subresource is real)
    assert get(cp, "mroute", "general", "-n", "team-s")["metadata"]["generation"] == 2

    # the provider goes away: READY False, and describe says why
    cp.kubectl("delete", "modelprovider", "gateway", "-n", "team-s")
    eventually(
        lambda: "False" in cp.kubectl("get", "mroute", "general", "-n", "team-s").stdout,
        what="READY False",
    )

    def describe() -> str | None:
        text = cp.kubectl("describe", "mroute", "general", "-n", "team-s").stdout
        return text if "UnknownProvider" in text and "Warning" in text else None

    described = eventually(describe, what="describe with the condition and the Warning event")
    assert "no ModelProvider named 'gateway'" in described, described
    assert "ResolvedRefs" in described and "Events:" in described, described


def test_api_refuses_what_kmock_accepted(control_plane: ControlPlane) -> None:
    """The fixture's admin client reports the server's Status, so a test can assert on it."""
    with pytest.raises(ApiStatus) as err:
        control_plane.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace"})
    assert err.value.code in (400, 422)
