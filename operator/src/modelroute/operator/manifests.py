"""The objects the operator writes, built as plain dicts, and how it recognises them.

Pure functions only (no kopf, no HTTP, no clock of their own): the service layer
decides *whether* to write, these say *what*.  Kept apart so each manifest is
unit-tested as data, and so the chart's RBAC test can check the sidecar Role
against the ClusterRole without starting anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from modelroute.proxy.table import CompiledFailover, CompiledTable, TableError

from . import objects

ENROLL_LABEL = "modelroute.io/enabled"
HASH_ANNOTATION = "modelroute.io/hash"
PREVIOUS_FAILOVER_ANNOTATION = "modelroute.io/previous-failover"
TABLE_CONFIGMAP = "modelroute-table"
TABLE_KEY = "table.json"
SIDECAR_RBAC = "modelroute-sidecar"
OPERATOR_PODS_RBAC = "modelroute-operator-pods"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelroute-operator"}
EVENT_MESSAGE_LIMIT = 1000


def enrolled(namespace: objects.Obj | None) -> bool:
    """The namespace carries ``modelroute.io/enabled: "true"``."""
    return objects.labels(namespace).get(ENROLL_LABEL) == "true"


def terminating(namespace: objects.Obj | None) -> bool:
    """Being deleted: ``deletionTimestamp`` set (phase Terminating follows it)."""
    return (
        objects.being_deleted(namespace) or objects.status(namespace).get("phase") == "Terminating"
    )


def ours(obj: objects.Obj) -> bool:
    """Written by this operator (its managed-by label), not a hand-made namesake."""
    found = objects.labels(obj)
    return all(found.get(k) == v for k, v in MANAGED_BY.items())


def sidecar_role(ns: str) -> dict[str, Any]:
    """Sidecars may read their namespace's table ConfigMap, and nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": SIDECAR_RBAC, "namespace": ns, "labels": MANAGED_BY},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [TABLE_CONFIGMAP],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }


def sidecar_binding(ns: str) -> dict[str, Any]:
    """Bound to every service account of the namespace: the sidecar runs as the pod's own SA."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": SIDECAR_RBAC, "namespace": ns, "labels": MANAGED_BY},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SIDECAR_RBAC},
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": f"system:serviceaccounts:{ns}",
            }
        ],
    }


@dataclass(frozen=True)
class PodReader:
    """Who may list an enrolled namespace's pods: the operator's own ServiceAccount.

    The chart ships ClusterRole ``cluster_role`` (pods: list) bound nowhere and lets the
    operator ``bind`` that one role by name; the operator binds it in each namespace it
    enrols (:func:`operator_pods_binding`), so the rollout's health gate can list pods
    there and nowhere else, kube-system included.  The names come from the Deployment's
    environment (:func:`pod_reader_from_env`), so the chart's values are the one source.
    """

    cluster_role: str
    service_account: str
    namespace: str


POD_READER_ENV = "MODELROUTE_POD_READER_CLUSTERROLE"
SERVICE_ACCOUNT_ENV = "MODELROUTE_SERVICE_ACCOUNT"
NAMESPACE_ENV = "POD_NAMESPACE"


def pod_reader_from_env(env: Mapping[str, str]) -> PodReader | None:
    """The chart's pod-reader settings; None when any is missing (a local run off-cluster).

    Without them the operator binds nothing and its rollout gate lists pods with whatever
    the credentials it runs with allow.
    """
    role, account, namespace = (
        env.get(POD_READER_ENV, ""),
        env.get(SERVICE_ACCOUNT_ENV, ""),
        env.get(NAMESPACE_ENV, ""),
    )
    if not (role and account and namespace):
        return None
    return PodReader(cluster_role=role, service_account=account, namespace=namespace)


def operator_pods_binding(ns: str, reader: PodReader) -> dict[str, Any]:
    """RoleBinding ``modelroute-operator-pods``: the pod-reader ClusterRole, in ``ns`` only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": OPERATOR_PODS_RBAC, "namespace": ns, "labels": MANAGED_BY},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": reader.cluster_role,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": reader.service_account,
                "namespace": reader.namespace,
            }
        ],
    }


def table_annotations(
    table: CompiledTable, replaced: CompiledFailover | None, *, keep_previous: bool
) -> dict[str, str]:
    """The table ConfigMap's annotations: its hash, and the failover block a rollback returns to.

    ``replaced`` is the failover block of the table being overwritten.  When the new
    table changes it, it is remembered, unless ``keep_previous``: a rolled-back
    namespace's "previous" block must stay the one it rolled back *to*; overwriting it
    with the bad block just replaced would make the next reconcile put the bad block back.
    """
    ann = {HASH_ANNOTATION: table.hash}
    if replaced != table.failover and not keep_previous:
        ann[PREVIOUS_FAILOVER_ANNOTATION] = (
            orjson.dumps(replaced.model_dump(by_alias=True, mode="json")).decode()
            if replaced
            else "null"
        )
    return ann


def table_configmap(
    ns: str, table: CompiledTable, annotations: Mapping[str, str]
) -> dict[str, Any]:
    """ConfigMap ``modelroute-table``: the sealed table as JSON, the sidecars' one input."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": TABLE_CONFIGMAP,
            "namespace": ns,
            "labels": MANAGED_BY,
            "annotations": dict(annotations),
        },
        "data": {TABLE_KEY: table.to_json().decode()},
    }


def deployed_table(
    cm: objects.Obj | None,
) -> tuple[CompiledTable | None, CompiledFailover | None]:
    """What a table ConfigMap holds: the table (None if unreadable) and its previous failover block.

    A ConfigMap written before the previous-failover annotation existed has none; then
    the table's own block is what a rollback would return to.
    """
    if cm is None:
        return None, None
    table: CompiledTable | None
    data = cm.get("data")
    try:
        table = CompiledTable.from_json(
            (data if isinstance(data, Mapping) else {}).get(TABLE_KEY) or ""
        )
    except (TableError, ValueError):
        table = None
    raw_prev = objects.annotations(cm).get(PREVIOUS_FAILOVER_ANNOTATION)
    previous = None
    if raw_prev and raw_prev != "null":
        try:
            previous = CompiledFailover.model_validate(orjson.loads(raw_prev))
        except ValueError:
            previous = None
    elif raw_prev is None and table is not None:
        previous = table.failover
    return table, previous


def event(
    obj: objects.Obj, name: str, reason: str, message: str, type_: str, now: str
) -> dict[str, Any]:
    """A core/v1 Event about ``obj``, the way client-go's recorder writes one."""
    ns = objects.namespace(obj) or "default"
    meta = objects.metadata(obj)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "type": type_,
        "source": {"component": "modelroute-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
