"""What the operator does, independent of kopf: compile, write, report, roll out.

The kopf handlers (``handlers.py``) only translate events into calls here, the
same split as gafaelfawr's operator (handlers → services → storage): this module
decides what to write and when, ``manifests.py`` and ``conditions.py`` say what
the objects look like, ``probe.py`` asks the sidecars, and ``kube.py`` is the
only one that talks to the API.  Every write compares with what is in the API
first, so re-running on an unchanged world writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from modelroute.proxy.compiler import RouteOutcome, compile_table, select_policy
from modelroute.proxy.table import CompiledFailover, CompiledTable
from modelroute.resources import (
    FailoverPolicy,
    ModelProvider,
    ModelRoute,
    Problem,
    Reason,
    ResourceSet,
    parse_manifest,
)
from modelroute.resources.egress_rules import ALLOWED_HOSTS_ANNOTATION

from . import admission, conditions, manifests, objects, probe, rollout
from .kube import API_FAILURES, ApiError, KubeApi, core, custom, rbac
from .manifests import HASH_ANNOTATION, OPERATOR_PODS_RBAC, SIDECAR_RBAC, TABLE_CONFIGMAP
from .metrics import Kind, OperatorMetrics, Review

log = logging.getLogger("modelroute.operator")

NAMESPACES = "/api/v1/namespaces"


class Service:
    def __init__(
        self,
        api: KubeApi,
        prober: probe.Prober | None = None,
        metrics: OperatorMetrics | None = None,
        pod_reader: manifests.PodReader | None = None,
    ) -> None:
        self.api = api
        # what the work below did, counted here where the outcome is known (never in the
        # kopf handlers, which only see "returned" or "raised")
        self.metrics = metrics or OperatorMetrics()
        self.prober: probe.Prober = prober or self.probe_sidecars
        # Whom to grant pod list in each enrolled namespace (RoleBinding modelroute-operator-pods):
        # the operator holds no cluster-wide pods right; None binds nothing (a local run).
        self.pod_reader = pod_reader
        self.clock: Callable[[], float] = time.time
        # One reconcile per namespace at a time: several handlers fire for one change.
        self._locks: dict[str, asyncio.Lock] = {}

    # ---- reading the world -------------------------------------------------

    async def namespace(self, ns: str) -> dict[str, Any] | None:
        return await self.api.get(f"{NAMESPACES}/{ns}")

    async def enrolled_namespaces(self) -> list[dict[str, Any]]:
        return [n for n in await self.api.list(NAMESPACES) if manifests.enrolled(n)]

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
            r for r in await self.api.list(custom("modelroutes", ns)) if objects.namespace(r) == ns
        ]
        for raw in await self.api.list(custom("modelproviders", ns)):
            if objects.namespace(raw) != ns:
                continue
            parsed = parse_manifest(raw, "ModelProvider")
            if isinstance(parsed, list):
                rs.problems.extend(parsed)
            else:
                rs.add(parsed)
        for raw in raw_routes:
            parsed = parse_manifest(raw, "ModelRoute")
            if isinstance(parsed, list):
                parse_problems[objects.name(raw)] = parsed
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
        if state is not None and state.policy_hash == rollout.spec_hash(objects.spec(raw)):
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
            with self.metrics.reconciling(Kind.NAMESPACE):
                return await self._reconcile_namespace(ns)

    async def _reconcile_namespace(self, ns: str) -> str | None:
        nsobj = await self.namespace(ns)
        if manifests.terminating(nsobj):
            # the namespace controller is deleting everything in it, and the API refuses
            # new content there (403 NamespaceTerminating): nothing to write or remove
            self.metrics.set_routes_not_ready(ns, 0)
            return None
        if not manifests.enrolled(nsobj):
            await self.remove_namespace(ns)
            self.metrics.set_routes_not_ready(ns, 0)
            return None
        rs, parse_problems, raw_routes = await self.resources(ns)

        cm = await self.api.get(core(ns, "configmaps", TABLE_CONFIGMAP))
        deployed, previous = manifests.deployed_table(cm)
        failover, rolled_back = await self._failover_for(
            ns, objects.labels(nsobj), deployed, previous
        )
        result = compile_table(rs, ns)
        table = result.table.model_copy(update={"failover": failover, "hash": ""}).sealed()
        await self._write_table(ns, cm, table, deployed, keep_previous=rolled_back)
        await self._ensure(
            rbac(ns, "roles", SIDECAR_RBAC),
            rbac(ns, "roles"),
            manifests.sidecar_role(ns),
            ("rules",),
        )
        await self._ensure_binding(manifests.sidecar_binding(ns))
        if self.pod_reader is not None:
            await self._ensure_binding(manifests.operator_pods_binding(ns, self.pod_reader))
        not_ready = 0
        for raw in raw_routes:
            name = objects.name(raw)
            ready = await self._route_status(
                raw, result.routes.get((ns, name)), parse_problems.get(name, []), table.hash
            )
            not_ready += not ready
        self.metrics.set_routes_not_ready(ns, not_ready)
        return table.hash

    async def _write_table(
        self,
        ns: str,
        cm: dict[str, Any] | None,
        table: CompiledTable,
        deployed: CompiledTable | None,
        keep_previous: bool = False,
    ) -> bool:
        """Write the table if it changed (True when written); see :func:`manifests.table_annotations`."""
        if cm is not None and objects.annotations(cm).get(HASH_ANNOTATION) == table.hash:
            return False  # unchanged world, no write
        ann = manifests.table_annotations(
            table, deployed.failover if deployed else None, keep_previous=keep_previous
        )
        body = manifests.table_configmap(ns, table, ann)
        if cm is None:
            await self.api.create(core(ns, "configmaps"), body)
        else:
            await self.api.merge_patch(
                core(ns, "configmaps", TABLE_CONFIGMAP),
                {"metadata": {"annotations": ann}, "data": body["data"]},
            )
        self.metrics.count_table_applied()
        log.info("namespace %s: table %s written", ns, table.short_hash)
        return True

    async def _ensure(
        self, path: str, collection: str, body: dict[str, Any], fields: tuple[str, ...]
    ) -> None:
        current = await self.api.get(path)
        if current is None:
            await self.api.create(collection, body)
        elif any(current.get(f) != body[f] for f in fields):
            await self.api.merge_patch(path, {f: body[f] for f in fields})

    async def _ensure_binding(self, body: dict[str, Any]) -> None:
        """Create, repair or replace one of our RoleBindings.

        ``roleRef`` can't be changed on a RoleBinding (the API refuses the patch), so one
        naming another role (a renamed release's pod reader, a hand edit) is deleted and
        created again; edited subjects are patched back.
        """
        ns, name = objects.namespace(body), objects.name(body)
        path = rbac(ns, "rolebindings", name)
        current = await self.api.get(path)
        if current is not None and current.get("roleRef") != body["roleRef"]:
            await self.api.delete(path)
            current = None
        if current is None:
            await self.api.create(rbac(ns, "rolebindings"), body)
        elif current.get("subjects") != body["subjects"]:
            await self.api.merge_patch(path, {"subjects": body["subjects"]})

    async def _route_status(
        self,
        raw: dict[str, Any],
        outcome: RouteOutcome | None,
        parse_problems: list[Problem],
        table_hash: str,
    ) -> bool:
        """Write the route's status if it changed; returns whether the route is Ready."""
        spec = objects.spec(raw)
        old = objects.status(raw)
        conds = conditions.route_conditions(outcome, parse_problems)
        targets = sorted(spec.get("targets") or [], key=lambda t: t.get("tier", 0))
        wanted = {
            "observedGeneration": objects.metadata(raw).get("generation"),
            "hash": table_hash,
            "models": ",".join(str(m) for m in spec.get("models") or []),
            "primaryTarget": f"{targets[0].get('provider')}/{targets[0].get('model')}"
            if targets
            else "",
        }
        old_conds = old.get("conditions") or []
        ready = conds[-1]
        if conditions.same_conditions(old_conds, conds) and all(
            old.get(k) == v for k, v in wanted.items()
        ):
            return bool(ready["status"] == "True")
        status = {**wanted, "conditions": conditions.with_times(old_conds, conds, conditions.now())}
        path = custom("modelroutes", objects.namespace(raw), objects.name(raw)) + "/status"
        await self.api.merge_patch(path, {"status": status})
        was_ready: Mapping[str, Any] = next((c for c in old_conds if c.get("type") == "Ready"), {})
        if ready["status"] == "False" and was_ready.get("message") != ready["message"]:
            failing = next(c for c in conds if c["status"] == "False")
            await self.event(raw, failing["reason"], failing["message"] or ready["message"])
        return bool(ready["status"] == "True")

    async def event(
        self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Warning"
    ) -> None:
        """Post a Kubernetes event about ``obj``; a failure is logged, never raised.

        Named the way client-go's recorder names them (``<object>.<unix ns in hex>``)
        rather than by ``generateName``: unique, sortable, and no second round trip.
        An event is a courtesy to the person reading ``kubectl describe``; failing to
        post one must not fail the reconcile or rollout step that had something to say.
        """
        ns = objects.namespace(obj) or "default"
        name = f"{objects.name(obj) or 'modelroute'}.{time.time_ns():x}"
        body = manifests.event(obj, name, reason, message, type_, conditions.now())
        try:
            await self.api.create(core(ns, "events"), body)
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, ns, objects.name(obj), exc)

    async def remove_namespace(self, ns: str) -> None:
        """A namespace that left (or never joined) holds no table and no RBAC of ours.

        The operator's own pod-list binding goes first (it may read the pods of enrolled
        namespaces only), the table ConfigMap last: it is created first and removed last,
        so while anything is left over the ConfigMap is too, and :meth:`namespaces_with_table`
        finds the namespace for :meth:`resync` to finish the job.
        """
        for path in (
            rbac(ns, "rolebindings", OPERATOR_PODS_RBAC),
            rbac(ns, "rolebindings", SIDECAR_RBAC),
            rbac(ns, "roles", SIDECAR_RBAC),
            core(ns, "configmaps", TABLE_CONFIGMAP),
        ):
            found = await self.api.get(path)
            if found is not None and manifests.ours(found):  # never a namesake of someone else's
                await self.api.delete(path)

    async def reconcile_all(self) -> None:
        for nsobj in await self.enrolled_namespaces():
            await self.reconcile_namespace(objects.name(nsobj))

    async def namespaces_with_table(self) -> set[str]:
        """Namespaces holding our table ConfigMap, enrolled or not: one cluster-wide list."""
        path = f"/api/v1/configmaps?fieldSelector=metadata.name%3D{TABLE_CONFIGMAP}"
        return {
            objects.namespace(cm)
            for cm in await self.api.list(path)
            if objects.name(cm) == TABLE_CONFIGMAP and objects.namespace(cm) and manifests.ours(cm)
        }

    async def resync(self) -> None:
        """Reconcile every enrolled namespace and clean every one that left but kept our objects.

        The periodic safety net under the namespace event handler, which kopf does not
        retry.  One namespace's failure is logged and does not stop the others.
        """
        wanted = {objects.name(n) for n in await self.enrolled_namespaces()}
        for ns in sorted(wanted | await self.namespaces_with_table()):
            try:
                await self.reconcile_namespace(ns)
            except API_FAILURES as exc:
                log.warning("resync of namespace %s: %s", ns, exc)

    # ---- rollout -------------------------------------------------------------

    async def probe_sidecars(self, ns: str, expected_hash: str, gate: probe.Gate) -> rollout.Health:
        """The default prober: ask the namespace's sidecars over HTTP (:mod:`.probe`)."""
        return await probe.probe_sidecars(self.api, ns, expected_hash, gate)

    async def rollout_step(self, name: str) -> float | None:
        """Advance one FailoverPolicy's rollout; returns when to call again (None: idle)."""
        with self.metrics.reconciling(Kind.FAILOVER_POLICY):
            return await self._rollout_step(name)

    def rollout_stopped(self, name: str) -> None:
        """This replica no longer drives the policy (deleted, or peering paused the daemon).

        Its rollout series go with it, so the replica that drives it is the one that
        reports it, and a halted rollout's alert ends when the policy is deleted.
        """
        self.metrics.forget_rollout(name)

    async def _rollout_step(self, name: str) -> float | None:
        raw = await self.api.get(custom("failoverpolicies", name=name))
        if raw is None:
            self.metrics.forget_rollout(name)
            return None
        policies = await self.policies()
        mine = next((p for p, r in policies if p.metadata.name == name), None)
        if mine is None:
            self.metrics.forget_rollout(name)
            return None
        spec = mine.spec.rollout
        gate = probe.Gate(max_error_rate=spec.max_error_rate, min_requests=spec.min_requests)
        targets = [
            objects.name(n)
            for n in await self.enrolled_namespaces()
            if select_policy([p for p, _ in policies], objects.labels(n)) is mine
        ]
        h = rollout.spec_hash(objects.spec(raw))
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
                expected = objects.annotations(cm).get(HASH_ANNOTATION, "")
                health[n.namespace] = await self.prober(n.namespace, expected, gate)
        new, actions = rollout.step(
            state,
            self.clock(),
            health,
            pause_seconds=spec.pause_seconds,
            health_timeout_seconds=spec.health_timeout_seconds,
            auto_rollback=spec.auto_rollback,
        )
        await self._policy_status(raw, new)
        self.metrics.set_rollout(name, new)
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
        old = objects.status(raw)
        cond = conditions.policy_condition(state)
        status = {
            **rollout.to_status(state),
            "observedGeneration": objects.metadata(raw).get("generation"),
        }
        old_conds = old.get("conditions") or []
        if all(old.get(k) == v for k, v in status.items()) and conditions.same_conditions(
            old_conds, [cond]
        ):
            return
        status["conditions"] = conditions.with_times(old_conds, [cond], conditions.now())
        await self.api.merge_patch(
            custom("failoverpolicies", name=objects.name(raw)) + "/status", {"status": status}
        )
        raw["status"] = status

    # ---- admission -------------------------------------------------------------

    async def validate(self, body: Mapping[str, Any]) -> list[str]:
        """The errors ``kubectl apply`` shows: the same parser and compiler as ``validate``.

        Counted by answer; a cancel (the handler's deadline) or an API failure is a
        review that could not be checked, which the webhook answers with a 503.
        """
        kind = str(body.get("kind") or "")
        try:
            errors = await self._validate(kind, body)
        except (asyncio.CancelledError, *API_FAILURES):
            self.metrics.count_review(kind, Review.UNAVAILABLE)
            raise
        self.metrics.count_review(kind, Review.REFUSED if errors else Review.ALLOWED)
        return errors

    async def _validate(self, kind: str, body: Mapping[str, Any]) -> list[str]:
        ns_name = objects.namespace(body)
        parsed = parse_manifest(
            dict(body), f"{kind} {ns_name}/{objects.metadata(body).get('name')}"
        )
        if isinstance(parsed, list):
            return [str(p) for p in parsed if p.is_error]
        ns = ns_name or "default"
        if isinstance(parsed, ModelProvider):
            allowed = objects.annotations(await self.namespace(ns)).get(
                ALLOWED_HOSTS_ANNOTATION, ""
            )
            return admission.provider_host_errors(parsed, ns, allowed)
        if not isinstance(parsed, ModelRoute):
            return []
        rs, _, _ = await self.resources(ns)
        rs.routes = [r for r in rs.routes if r.metadata.name != parsed.metadata.name] + [parsed]
        result = compile_table(rs, ns)
        outcome = result.routes.get((ns, parsed.metadata.name))
        return [
            admission.without_names(str(p)) if p.reason is Reason.UNKNOWN_PROVIDER else str(p)
            for p in (outcome.problems if outcome else [])
            if p.is_error
        ]
