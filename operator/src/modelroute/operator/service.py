"""What the operator does, independent of kopf: compile, write, report, roll out.

The kopf handlers (``handlers.py``) only translate events into calls here, the
same split as gafaelfawr's operator.  Every write compares with what is in the
API first, so re-running on an unchanged world writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from modelroute.proxy.compiler import RouteOutcome, compile_table, select_policy
from modelroute.proxy.table import CompiledFailover, CompiledTable, TableError
from modelroute.resources import (
    FailoverPolicy,
    ModelProvider,
    ModelRoute,
    Problem,
    Reason,
    ResourceSet,
    parse_manifest,
)
from modelroute.resources.egress_rules import (
    ALLOWED_HOSTS_ANNOTATION,
    host_allowed,
    parse_allowed_hosts,
)

from . import rollout
from .injection import ADMIN_PORT_ANNOTATION, INJECTED_ANNOTATION
from .kube import API_FAILURES, ApiError, KubeApi, core, custom, rbac

log = logging.getLogger("modelroute.operator")

ENROLL_LABEL = "modelroute.io/enabled"
HASH_ANNOTATION = "modelroute.io/hash"
PREVIOUS_FAILOVER_ANNOTATION = "modelroute.io/previous-failover"
DEFAULT_ADMIN_PORT = 15401
TABLE_CONFIGMAP = "modelroute-table"
TABLE_KEY = "table.json"
SIDECAR_RBAC = "modelroute-sidecar"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelroute-operator"}
REF_REASONS = {Reason.UNKNOWN_PROVIDER, Reason.UNKNOWN_MODEL, Reason.UNKNOWN_REGION}

Prober = Callable[[str, str], Awaitable[rollout.Health]]


def enrolled(namespace: Mapping[str, Any] | None) -> bool:
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(ENROLL_LABEL) == "true"


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


def _condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }


def route_conditions(
    outcome: RouteOutcome | None, parse_problems: list[Problem]
) -> list[dict[str, Any]]:
    """Accepted / ResolvedRefs / Ready from the compiler's verdict, phrased to be acted on."""
    problems = list(parse_problems) + (list(outcome.problems) if outcome else [])
    errors = [p for p in problems if p.is_error]
    ref_errors = [p for p in errors if p.reason in REF_REASONS]
    spec_errors = [p for p in errors if p.reason not in REF_REASONS]
    accepted = not spec_errors and (outcome is None or outcome.accepted) and not parse_problems
    resolved = not ref_errors and (outcome is None or outcome.resolved_refs)

    def text(ps: list[Problem]) -> str:
        return "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in ps)

    conds = [
        _condition(
            "Accepted",
            accepted,
            "Accepted" if accepted else spec_errors[0].reason.value if spec_errors else "Rejected",
            "" if accepted else text(spec_errors),
        ),
        _condition(
            "ResolvedRefs",
            resolved,
            "ResolvedRefs"
            if resolved
            else ref_errors[0].reason.value
            if ref_errors
            else "UnresolvedRefs",
            "" if resolved else text(ref_errors),
        ),
    ]
    ready = accepted and resolved
    conds.append(
        _condition(
            "Ready",
            ready,
            "Compiled" if ready else "NotCompiled",
            "route is in the namespace table" if ready else "not in the table: " + text(errors),
        )
    )
    return conds


def _same_conditions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in old]
    return strip == new


def _with_times(
    old: list[dict[str, Any]], new: list[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Keep ``lastTransitionTime`` where the status of a condition did not change."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prev = before.get(c["type"])
        ts = prev.get("lastTransitionTime") if prev and prev.get("status") == c["status"] else None
        out.append({**c, "lastTransitionTime": ts or now})
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Service:
    def __init__(self, api: KubeApi, prober: Prober | None = None) -> None:
        self.api = api
        self.prober: Prober = prober or self.probe_sidecars
        self.clock: Callable[[], float] = time.time
        # One reconcile per namespace at a time: several handlers fire for one change.
        self._locks: dict[str, asyncio.Lock] = {}

    # ---- reading the world -------------------------------------------------

    async def namespace(self, ns: str) -> dict[str, Any] | None:
        return await self.api.get(f"/api/v1/namespaces/{ns}")

    async def enrolled_namespaces(self) -> list[dict[str, Any]]:
        return [n for n in await self.api.list("/api/v1/namespaces") if enrolled(n)]

    async def policies(self) -> list[tuple[FailoverPolicy, dict[str, Any]]]:
        out = []
        for raw in await self.api.list(custom("failoverpolicies")):
            parsed = parse_manifest(raw, "FailoverPolicy")
            if isinstance(parsed, FailoverPolicy):
                out.append((parsed, raw))
        return out

    async def resources(
        self, ns: str
    ) -> tuple[ResourceSet, dict[str, list[Problem]], list[dict[str, Any]]]:
        """Providers and routes of one namespace; parse problems per route name; raw routes."""
        rs = ResourceSet()
        parse_problems: dict[str, list[Problem]] = {}
        raw_routes = [
            r
            for r in await self.api.list(custom("modelroutes", ns))
            if (r.get("metadata") or {}).get("namespace") == ns
        ]
        for raw in await self.api.list(custom("modelproviders", ns)):
            if (raw.get("metadata") or {}).get("namespace") != ns:
                continue
            parsed = parse_manifest(raw, "ModelProvider")
            if isinstance(parsed, list):
                rs.problems.extend(parsed)
            else:
                rs.add(parsed)
        for raw in raw_routes:
            parsed = parse_manifest(raw, "ModelRoute")
            if isinstance(parsed, list):
                parse_problems[(raw.get("metadata") or {}).get("name", "")] = parsed
            else:
                rs.add(parsed)
        return rs, parse_problems, raw_routes

    # ---- one namespace -------------------------------------------------------

    async def _failover_for(
        self,
        ns: str,
        labels: Mapping[str, str],
        deployed: CompiledTable | None,
        previous: CompiledFailover | None,
    ) -> tuple[CompiledFailover | None, bool]:
        """Which failover block this namespace's table carries right now, and whether rolled back.

        A policy reaches a namespace only when its rollout got there: until then the
        deployed block stays; a rolled-back namespace carries the block from before
        (and keeps remembering the bad one it replaced, see ``_write_table``).
        """
        policies = await self.policies()
        chosen = select_policy([p for p, _ in policies], labels)
        if chosen is None:
            return None, False
        raw = next(r for p, r in policies if p is chosen)
        state = rollout.from_status(raw.get("status"))
        if state is not None and state.policy_hash == rollout.spec_hash(raw.get("spec") or {}):
            where = state.state_of(ns)
            if where in (rollout.NsState.APPLIED, rollout.NsState.HEALTHY):
                return compile_table(ResourceSet(), ns, chosen).table.failover, False
            if where is rollout.NsState.ROLLED_BACK:
                return previous, True
        return (deployed.failover if deployed else None), False

    async def reconcile_namespace(self, ns: str) -> str | None:
        """Compile and write one namespace's table, RBAC and route statuses; returns the hash."""
        lock = self._locks.setdefault(ns, asyncio.Lock())
        async with lock:
            return await self._reconcile_namespace(ns)

    async def _reconcile_namespace(self, ns: str) -> str | None:
        nsobj = await self.namespace(ns)
        if _terminating(nsobj):
            # the namespace controller is deleting everything in it, and the API refuses
            # new content there (403 NamespaceTerminating): nothing to write or remove
            return None
        if not enrolled(nsobj):
            await self.remove_namespace(ns)
            return None
        labels = ((nsobj or {}).get("metadata") or {}).get("labels") or {}
        rs, parse_problems, raw_routes = await self.resources(ns)

        cm = await self.api.get(core(ns, "configmaps", TABLE_CONFIGMAP))
        deployed, previous = _deployed(cm)
        failover, rolled_back = await self._failover_for(ns, labels, deployed, previous)
        result = compile_table(rs, ns)
        table = result.table.model_copy(update={"failover": failover, "hash": ""}).sealed()
        await self._write_table(ns, cm, table, deployed, keep_previous=rolled_back)
        await self._ensure(
            rbac(ns, "roles", SIDECAR_RBAC), rbac(ns, "roles"), sidecar_role(ns), ("rules",)
        )
        await self._ensure(
            rbac(ns, "rolebindings", SIDECAR_RBAC),
            rbac(ns, "rolebindings"),
            sidecar_binding(ns),
            ("roleRef", "subjects"),
        )
        for raw in raw_routes:
            name = (raw.get("metadata") or {}).get("name", "")
            await self._route_status(
                raw, result.routes.get((ns, name)), parse_problems.get(name, []), table.hash
            )
        return table.hash

    async def _write_table(
        self,
        ns: str,
        cm: dict[str, Any] | None,
        table: CompiledTable,
        deployed: CompiledTable | None,
        keep_previous: bool = False,
    ) -> None:
        """Write the table if it changed; remember the failover block it replaces.

        ``keep_previous``: a rolled-back namespace's "previous" block must stay the one
        it rolled back *to*; overwriting it with the bad block just replaced would make
        the next reconcile (resync, route edit) put the bad block back.
        """
        annotations = ((cm or {}).get("metadata") or {}).get("annotations") or {}
        if cm is not None and annotations.get(HASH_ANNOTATION) == table.hash:
            return  # unchanged world, no write
        ann = {HASH_ANNOTATION: table.hash}
        old_failover = deployed.failover if deployed else None
        if old_failover != table.failover and not keep_previous:  # what a rollback returns to
            ann[PREVIOUS_FAILOVER_ANNOTATION] = (
                orjson.dumps(old_failover.model_dump(by_alias=True, mode="json")).decode()
                if old_failover
                else "null"
            )
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": TABLE_CONFIGMAP,
                "namespace": ns,
                "labels": MANAGED_BY,
                "annotations": ann,
            },
            "data": {TABLE_KEY: table.to_json().decode()},
        }
        if cm is None:
            await self.api.create(core(ns, "configmaps"), body)
        else:
            await self.api.merge_patch(
                core(ns, "configmaps", TABLE_CONFIGMAP),
                {"metadata": {"annotations": ann}, "data": body["data"]},
            )
        log.info("namespace %s: table %s written", ns, table.short_hash)

    async def _ensure(
        self, path: str, collection: str, body: dict[str, Any], fields: tuple[str, ...]
    ) -> None:
        current = await self.api.get(path)
        if current is None:
            await self.api.create(collection, body)
        elif any(current.get(f) != body[f] for f in fields):
            await self.api.merge_patch(path, {f: body[f] for f in fields})

    async def _route_status(
        self,
        raw: dict[str, Any],
        outcome: RouteOutcome | None,
        parse_problems: list[Problem],
        table_hash: str,
    ) -> None:
        meta = raw.get("metadata") or {}
        spec = raw.get("spec") or {}
        old = raw.get("status") or {}
        conds = route_conditions(outcome, parse_problems)
        targets = sorted(spec.get("targets") or [], key=lambda t: t.get("tier", 0))
        wanted = {
            "observedGeneration": meta.get("generation"),
            "hash": table_hash,
            "models": ",".join(str(m) for m in spec.get("models") or []),
            "primaryTarget": f"{targets[0].get('provider')}/{targets[0].get('model')}"
            if targets
            else "",
        }
        if _same_conditions(old.get("conditions") or [], conds) and all(
            old.get(k) == v for k, v in wanted.items()
        ):
            return
        status = {**wanted, "conditions": _with_times(old.get("conditions") or [], conds, _now())}
        path = custom("modelroutes", meta["namespace"], meta["name"]) + "/status"
        await self.api.merge_patch(path, {"status": status})
        ready = conds[-1]
        was_ready: dict[str, Any] = next(
            (c for c in old.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        if ready["status"] == "False" and was_ready.get("message") != ready["message"]:
            failing = next(c for c in conds if c["status"] == "False")
            await self.event(raw, failing["reason"], failing["message"] or ready["message"])

    async def event(
        self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Warning"
    ) -> None:
        """Post a Kubernetes event about ``obj``; a failure is logged, never raised.

        Named the way client-go's recorder names them (``<object>.<unix ns in hex>``)
        rather than by ``generateName``: unique, sortable, and no second round trip.
        An event is a courtesy to the person reading ``kubectl describe``; failing to
        post one must not fail the reconcile or rollout step that had something to say.
        """
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        now = _now()
        name = f"{meta.get('name', 'modelroute')}.{time.time_ns():x}"
        try:
            await self._post_event(ns, name, obj, reason, message, type_, now)
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, ns, meta.get("name"), exc)

    async def _post_event(
        self,
        ns: str,
        name: str,
        obj: Mapping[str, Any],
        reason: str,
        message: str,
        type_: str,
        now: str,
    ) -> None:
        meta = obj.get("metadata") or {}
        await self.api.create(
            core(ns, "events"),
            {
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
                "message": message[:1000],
                "type": type_,
                "source": {"component": "modelroute-operator"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )

    async def remove_namespace(self, ns: str) -> None:
        """A namespace that left (or never joined) holds no table and no sidecar RBAC of ours.

        The table ConfigMap goes last: it is created first and removed last, so while
        any of the three is left over the ConfigMap is too, and :meth:`namespaces_with_table`
        finds the namespace for :meth:`resync` to finish the job.
        """
        for path in (
            rbac(ns, "rolebindings", SIDECAR_RBAC),
            rbac(ns, "roles", SIDECAR_RBAC),
            core(ns, "configmaps", TABLE_CONFIGMAP),
        ):
            found = await self.api.get(path)
            if found is not None and _ours(found):  # never someone else's of the same name
                await self.api.delete(path)

    async def reconcile_all(self) -> None:
        for nsobj in await self.enrolled_namespaces():
            await self.reconcile_namespace(nsobj["metadata"]["name"])

    async def namespaces_with_table(self) -> set[str]:
        """Namespaces holding our table ConfigMap, enrolled or not: one cluster-wide list."""
        path = f"/api/v1/configmaps?fieldSelector=metadata.name%3D{TABLE_CONFIGMAP}"
        return {
            meta["namespace"]
            for cm in await self.api.list(path)
            if (meta := cm.get("metadata") or {}).get("name") == TABLE_CONFIGMAP
            and meta.get("namespace")
            and _ours(cm)
        }

    async def resync(self) -> None:
        """Reconcile every enrolled namespace and clean every one that left but kept our objects.

        The periodic safety net under the namespace event handler, which kopf does not
        retry.  One namespace's failure is logged and does not stop the others.
        """
        wanted = {n["metadata"]["name"] for n in await self.enrolled_namespaces()}
        for ns in sorted(wanted | await self.namespaces_with_table()):
            try:
                await self.reconcile_namespace(ns)
            except API_FAILURES as exc:
                log.warning("resync of namespace %s: %s", ns, exc)

    # ---- rollout -------------------------------------------------------------

    async def probe_sidecars(self, ns: str, expected_hash: str) -> rollout.Health:
        """Ask every injected sidecar of the namespace which table it serves and how it fares."""
        max_rate, min_requests = self._max_error_rate, self._min_requests
        verdicts = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            for pod in await self.api.list(core(ns, "pods")):
                meta = pod.get("metadata") or {}
                ann = meta.get("annotations") or {}
                ip = (pod.get("status") or {}).get("podIP")
                if ann.get(INJECTED_ANNOTATION) != "true" or meta.get("namespace") != ns or not ip:
                    continue
                if not _running(pod):
                    continue
                port = ann.get(ADMIN_PORT_ANNOTATION, str(DEFAULT_ADMIN_PORT))
                try:
                    async with http.get(f"http://{ip}:{port}/status") as resp:
                        doc = await resp.json(loads=orjson.loads, content_type=None)
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    verdicts.append(rollout.Health.WAITING)
                    continue
                health = doc.get("health") or {}
                judged = int(health.get("recentRequests") or 0) >= min_requests
                error_rate = float(health.get("errorRate") or 0) if judged else 0.0
                if not health.get("ready", False) or error_rate > max_rate:
                    verdicts.append(rollout.Health.REGRESSED)
                elif (doc.get("table") or {}).get("hash") != expected_hash:
                    verdicts.append(rollout.Health.WAITING)
                else:
                    verdicts.append(rollout.Health.CONVERGED)
        if rollout.Health.REGRESSED in verdicts:
            return rollout.Health.REGRESSED
        if rollout.Health.WAITING in verdicts:
            return rollout.Health.WAITING
        return rollout.Health.CONVERGED

    _max_error_rate = 0.05
    _min_requests = 10

    async def rollout_step(self, name: str) -> float | None:
        """Advance one FailoverPolicy's rollout; returns when to call again (None: idle)."""
        raw = await self.api.get(custom("failoverpolicies", name=name))
        if raw is None:
            return None
        policies = await self.policies()
        mine = next((p for p, r in policies if p.metadata.name == name), None)
        if mine is None:
            return None
        spec = mine.spec.rollout
        self._max_error_rate = spec.max_error_rate
        self._min_requests = spec.min_requests
        targets = [
            n["metadata"]["name"]
            for n in await self.enrolled_namespaces()
            if select_policy([p for p, _ in policies], (n["metadata"].get("labels") or {})) is mine
        ]
        h = rollout.spec_hash(raw.get("spec") or {})
        state = rollout.from_status(raw.get("status"))
        if state is None or state.policy_hash != h:
            state = rollout.plan(h, targets, spec.batch_size)  # a changed policy starts afresh
        else:
            state = rollout.extend(state, targets, spec.batch_size)
        health: dict[str, rollout.Health] = {}
        for n in state.batch(state.current_batch):
            if n.namespace not in targets:
                # it stopped matching the policy: it doesn't carry the block, so its
                # sidecars' own troubles say nothing about it and must not halt the rollout
                health[n.namespace] = rollout.Health.CONVERGED
                continue
            if n.state in (rollout.NsState.APPLIED, rollout.NsState.HEALTHY):
                cm = await self.api.get(core(n.namespace, "configmaps", TABLE_CONFIGMAP))
                expected = (
                    ((cm or {}).get("metadata") or {})
                    .get("annotations", {})
                    .get(HASH_ANNOTATION, "")
                )
                health[n.namespace] = await self.prober(n.namespace, expected)
        new, actions = rollout.step(
            state,
            self.clock(),
            health,
            pause_seconds=spec.pause_seconds,
            health_timeout_seconds=spec.health_timeout_seconds,
            auto_rollback=spec.auto_rollback,
        )
        await self._policy_status(raw, new)
        for ns in (*actions.apply, *actions.roll_back):
            await self.reconcile_namespace(ns)
        for message in actions.events:
            await self.event(
                raw, "Rollout", message, "Warning" if "halted" in message else "Normal"
            )
        if new.phase is not rollout.Phase.PROGRESSING:
            return None
        return actions.requeue

    async def _policy_status(self, raw: dict[str, Any], state: rollout.RolloutState) -> None:
        old = raw.get("status") or {}
        ok = state.phase is rollout.Phase.COMPLETE
        cond = _condition("Ready", ok, state.phase.value, state.message)
        status = {
            **rollout.to_status(state),
            "observedGeneration": (raw.get("metadata") or {}).get("generation"),
        }
        if all(old.get(k) == v for k, v in status.items()) and _same_conditions(
            old.get("conditions") or [], [cond]
        ):
            return
        status["conditions"] = _with_times(old.get("conditions") or [], [cond], _now())
        name = raw["metadata"]["name"]
        await self.api.merge_patch(
            custom("failoverpolicies", name=name) + "/status", {"status": status}
        )
        raw["status"] = status

    # ---- admission -------------------------------------------------------------

    async def _provider_hosts_allowed(self, provider: ModelProvider, ns: str) -> list[str]:
        """The namespace's ``modelroute.io/allowed-provider-hosts``, if a cluster admin set one."""
        nsobj = await self.namespace(ns)
        text = (((nsobj or {}).get("metadata") or {}).get("annotations") or {}).get(
            ALLOWED_HOSTS_ANNOTATION, ""
        )
        allowed = parse_allowed_hosts(text)
        errors = []
        for i, endpoint in enumerate(provider.spec.endpoints):
            host = urlsplit(endpoint.base_url).hostname or ""
            if not host_allowed(host, allowed):
                errors.append(
                    f"spec.endpoints[{i}].baseURL: {host} is not among namespace {ns}'s "
                    f"{ALLOWED_HOSTS_ANNOTATION} ({text}); ask a cluster admin to add it"
                )
        return errors

    async def validate(self, body: Mapping[str, Any]) -> list[str]:
        """The errors ``kubectl apply`` shows: the same parser and compiler as ``validate``."""
        kind = str(body.get("kind") or "")
        meta = body.get("metadata") or {}
        parsed = parse_manifest(
            dict(body), f"{kind} {meta.get('namespace') or ''}/{meta.get('name')}"
        )
        if isinstance(parsed, list):
            return [str(p) for p in parsed if p.is_error]
        ns = meta.get("namespace") or "default"
        if isinstance(parsed, ModelProvider):
            return await self._provider_hosts_allowed(parsed, ns)
        if not isinstance(parsed, ModelRoute):
            return []
        rs, _, _ = await self.resources(ns)
        rs.routes = [r for r in rs.routes if r.metadata.name != parsed.metadata.name] + [parsed]
        result = compile_table(rs, ns)
        outcome = result.routes.get((ns, parsed.metadata.name))
        return [
            _no_names(str(p)) if p.reason is Reason.UNKNOWN_PROVIDER else str(p)
            for p in (outcome.problems if outcome else [])
            if p.is_error
        ]


# The webhook's HTTPS port takes reviews from anyone who can reach it (kopf does not
# authenticate the API server), so its answers must not enumerate what a namespace
# holds: suggestions and "known:" lists stay in the route's status, which only those
# who may read the route see.
_NAME_LISTS = re.compile(r"; did you mean [^?]*\?| \(known: [^)]*\)")


def _no_names(message: str) -> str:
    return _NAME_LISTS.sub("", message)


def _deployed(cm: Mapping[str, Any] | None) -> tuple[CompiledTable | None, CompiledFailover | None]:
    if cm is None:
        return None, None
    table: CompiledTable | None
    try:
        table = CompiledTable.from_json((cm.get("data") or {}).get(TABLE_KEY) or "")
    except (TableError, ValueError):
        table = None
    raw_prev = ((cm.get("metadata") or {}).get("annotations") or {}).get(
        PREVIOUS_FAILOVER_ANNOTATION
    )
    previous = None
    if raw_prev and raw_prev != "null":
        try:
            previous = CompiledFailover.model_validate(orjson.loads(raw_prev))
        except ValueError:
            previous = None
    elif raw_prev is None and table is not None:
        previous = table.failover
    return table, previous


def _terminating(namespace: Mapping[str, Any] | None) -> bool:
    """Being deleted: ``deletionTimestamp`` set (phase Terminating follows it)."""
    meta = (namespace or {}).get("metadata") or {}
    phase = ((namespace or {}).get("status") or {}).get("phase")
    return bool(meta.get("deletionTimestamp")) or phase == "Terminating"


def _running(pod: dict[str, Any]) -> bool:
    """Is the pod's sidecar worth asking about a rollout?

    A pod being deleted drains (its sidecar reports not ready) and one not yet
    or no longer running has nothing to say about the new table: counting either
    would roll a batch back for an ordinary Deployment rollout happening at the
    same time.
    """
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    phase = (pod.get("status") or {}).get("phase", "Running")
    return bool(phase == "Running")


def _ours(obj: Mapping[str, Any]) -> bool:
    """Written by this operator (its managed-by label), not a hand-made namesake."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())
