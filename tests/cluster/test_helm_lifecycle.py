"""``helm upgrade`` and ``helm uninstall`` on the real API server, with a release of its own.

A second release (``mr2``: own namespace, ``fullnameOverride``, own peering name) so
the session's release keeps serving the other tests.  Its validating webhooks are set to
``Ignore`` while it lives: no operator runs behind it, and with ``Fail`` every
ModelRoute write in the shared cluster would be refused meanwhile.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .conftest import CHART
from .controlplane import ControlPlane

NAME, NS = "mr2", "mr2-system"
VALUES = [
    "--set", f"fullnameOverride={NAME}", "--set", f"operator.peering={NAME}",
    "--set", "webhook.validationFailurePolicy=Ignore",
]  # fmt: skip
CLUSTER_KINDS = (
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "validatingwebhookconfigurations.admissionregistration.k8s.io",
    "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    "clusterkopfpeerings.kopf.dev",
)
NAMESPACED_KINDS = "deployments,services,serviceaccounts,secrets,configmaps,roles,rolebindings"


def get(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


def env(deployment: dict[str, Any]) -> dict[str, str]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def ours(cp: ControlPlane) -> list[str]:
    """Every object labelled with the release, cluster-wide and in its namespace."""
    sel = f"app.kubernetes.io/instance={NAME}"
    left = cp.kubectl("get", ",".join(CLUSTER_KINDS), "-l", sel, "-o", "name").stdout.split()
    left += cp.kubectl("get", NAMESPACED_KINDS, "-n", NS, "-l", sel, "-o", "name").stdout.split()
    left += cp.kubectl(
        "get", "secrets", "-n", NS, "--field-selector", "type=helm.sh/release.v1", "-o", "name"
    ).stdout.split()
    return left


def test_upgrade_changes_values_keeps_the_ca_and_uninstall_leaves_only_crds(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    cp.helm("install", NAME, str(CHART), "-n", NS, "--create-namespace", *VALUES)
    try:
        dep = get(cp, "deployment", NAME, "-n", NS)
        assert env(dep)["MODELROUTE_LOG_LEVEL"] == "info"
        ca = get(cp, "secret", f"{NAME}-webhook-tls", "-n", NS)["data"]["ca.crt"]
        vwc = get(cp, "validatingwebhookconfiguration", NAME)
        assert {w["clientConfig"]["caBundle"] for w in vwc["webhooks"]} == {ca}
        # the chart labels what it installs: the uninstall check below relies on it
        assert len(ours(cp)) >= 9, ours(cp)

        cp.helm(
            "upgrade", NAME, str(CHART), "-n", NS, *VALUES,
            "--set", "operator.logLevel=debug", "--set", "webhook.timeoutSeconds=7",
        )  # fmt: skip
        status = json.loads(cp.helm("status", NAME, "-n", NS, "-o", "json").stdout)
        assert status["version"] == 2 and status["info"]["status"] == "deployed"
        dep = get(cp, "deployment", NAME, "-n", NS)
        assert env(dep)["MODELROUTE_LOG_LEVEL"] == "debug"
        assert env(dep)["MODELROUTE_ADMISSION_TIMEOUT_SECONDS"] == "6"
        vwc = get(cp, "validatingwebhookconfiguration", NAME)
        assert {w["timeoutSeconds"] for w in vwc["webhooks"]} == {7}
        # the chart's `lookup` found the Secret on the real server: no CA rotation
        assert get(cp, "secret", f"{NAME}-webhook-tls", "-n", NS)["data"]["ca.crt"] == ca
        assert {w["clientConfig"]["caBundle"] for w in vwc["webhooks"]} == {ca}
        base64.b64decode(ca, validate=True)
    finally:
        cp.helm("uninstall", NAME, "-n", NS, "--wait", "--timeout=60s")
    assert ours(cp) == []
    # Helm's convention: CRDs from crds/ stay (deleting them would delete every route)
    for crd in ("modelroutes.modelroute.io", "failoverpolicies.modelroute.io"):
        assert get(cp, "crd", crd)["metadata"]["name"] == crd
