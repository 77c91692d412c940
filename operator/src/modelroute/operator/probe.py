"""The rollout's health gate: ask a namespace's sidecars which table they serve and how they fare.

:func:`probe_sidecars` lists the namespace's injected pods and asks each
sidecar's admin port for ``/status``; :func:`verdict` judges one answer against
the :class:`Gate` the policy's ``spec.rollout`` sets.  The gate is an argument,
not state: one operator drives several policies' rollouts at once, each with
its own ceiling, so nothing here may remember the last policy it was asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from . import objects, rollout
from .injection import ADMIN_PORT_ANNOTATION, INJECTED_ANNOTATION
from .kube import ApiError, core
from .manifests import OPERATOR_PODS_RBAC

DEFAULT_ADMIN_PORT = 15401
PROBE_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Gate:
    """When a batch counts as healthy (``FailoverPolicy.spec.rollout``)."""

    max_error_rate: float = 0.05
    # the error rate is judged only over at least this many recent requests:
    # one failed request out of one is not a regression
    min_requests: int = 10


# What the rollout asks about one namespace: (namespace, expected table hash, gate).
Prober = Callable[[str, str, Gate], Awaitable[rollout.Health]]


class PodLister(Protocol):
    """The one API call the probe makes (:class:`~.kube.KubeApi` is one)."""

    async def list(self, path: str) -> list[dict[str, Any]]: ...


def running(pod: objects.Obj) -> bool:
    """Is the pod's sidecar worth asking about a rollout?

    A pod being deleted drains (its sidecar reports not ready) and one not yet
    or no longer running has nothing to say about the new table: counting either
    would roll a batch back for an ordinary Deployment rollout happening at the
    same time.
    """
    if objects.being_deleted(pod):
        return False
    return bool(objects.status(pod).get("phase", "Running") == "Running")


def verdict(doc: object, expected_hash: str, gate: Gate) -> rollout.Health:
    """One sidecar's ``/status`` answer judged against the gate (not an object: still waiting)."""
    if not isinstance(doc, Mapping):
        return rollout.Health.WAITING
    health = doc.get("health") or {}
    judged = int(health.get("recentRequests") or 0) >= gate.min_requests
    error_rate = float(health.get("errorRate") or 0) if judged else 0.0
    if not health.get("ready", False) or error_rate > gate.max_error_rate:
        return rollout.Health.REGRESSED
    if (doc.get("table") or {}).get("hash") != expected_hash:
        return rollout.Health.WAITING
    return rollout.Health.CONVERGED


def combine(verdicts: list[rollout.Health]) -> rollout.Health:
    """The namespace's verdict: any regression wins, then any sidecar still waiting."""
    if rollout.Health.REGRESSED in verdicts:
        return rollout.Health.REGRESSED
    if rollout.Health.WAITING in verdicts:
        return rollout.Health.WAITING
    return rollout.Health.CONVERGED


async def list_pods(api: PodLister, ns: str) -> list[dict[str, Any]]:
    """The namespace's pods, or an error that says why the operator may not list them.

    The operator holds no cluster-wide pods right: it lists pods only where it bound the
    chart's pod-reader ClusterRole to itself (RoleBinding ``modelroute-operator-pods``,
    written when it enrols a namespace).  A 403 therefore means the namespace is not
    enrolled, or the binding is missing until the next resync puts it back.
    """
    try:
        return await api.list(core(ns, "pods"))
    except ApiError as exc:
        if exc.status != 403:
            raise
        raise ApiError(
            403,
            f"may not list pods in namespace {ns}: the rollout's health gate reads only "
            f"enrolled namespaces, through RoleBinding {OPERATOR_PODS_RBAC} there "
            f"(the next resync writes it if it is missing)",
        ) from exc


async def probe_sidecars(api: PodLister, ns: str, expected_hash: str, gate: Gate) -> rollout.Health:
    """Ask every injected, running sidecar of ``ns``; a namespace without any has converged."""
    verdicts = []
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
    pods = await list_pods(api, ns)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for pod in pods:
            ann = objects.annotations(pod)
            ip = objects.status(pod).get("podIP")
            if ann.get(INJECTED_ANNOTATION) != "true" or objects.namespace(pod) != ns or not ip:
                continue
            if not running(pod):
                continue
            port = ann.get(ADMIN_PORT_ANNOTATION, str(DEFAULT_ADMIN_PORT))
            try:
                async with http.get(f"http://{ip}:{port}/status") as resp:
                    doc = await resp.json(loads=orjson.loads, content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                verdicts.append(rollout.Health.WAITING)
                continue
            verdicts.append(verdict(doc, expected_hash, gate))
    return combine(verdicts)
