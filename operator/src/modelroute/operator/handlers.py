"""kopf handlers: thin translations of Kubernetes events into :class:`Service` calls.

Run with ``modelroute operator`` (or ``kopf run -m modelroute.operator.handlers``).
Options that kopf's CLI doesn't carry (webhook server, peering name) come from
:data:`OPTIONS`, which ``modelroute operator`` fills before starting kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web

from modelroute.proxy.kube_source import KubeConfig

from . import manifests
from .kube import API_FAILURES, ApiError, KubeApi
from .metrics import OperatorMetrics, ViewSyncedCollector
from .namespaces import NamespaceView, readiness_app
from .service import Service

log = logging.getLogger("modelroute.operator")

GROUP = "modelroute.io"
PREFIX = "modelroute.io"
POLICY_IDLE_SECONDS = 2.0
RESYNC_SECONDS_ENV = "MODELROUTE_RESYNC_SECONDS"
DEFAULT_RESYNC_SECONDS = 60.0


ADMISSION_TIMEOUT_ENV = "MODELROUTE_ADMISSION_TIMEOUT_SECONDS"
# Below the chart's webhook timeoutSeconds (5): kube-apiserver gives up at that point and
# kubectl would show a deadline error instead of our message.
DEFAULT_ADMISSION_TIMEOUT_SECONDS = 4.0


def _resync_seconds_from_env() -> float:
    return float(os.environ.get(RESYNC_SECONDS_ENV) or DEFAULT_RESYNC_SECONDS)


def _admission_timeout_from_env() -> float:
    return float(os.environ.get(ADMISSION_TIMEOUT_ENV) or DEFAULT_ADMISSION_TIMEOUT_SECONDS)


@dataclass
class Options:
    webhook_listen: str | None = None
    webhook_cert: str | None = None
    webhook_key: str | None = None
    peering: str = "modelroute"
    # HOST:PORT of /readyz (passes once this replica's namespace view is synced) and of the
    # operator's /metrics; None: off
    readiness_listen: str | None = None
    # How often every enrolled (and every formerly enrolled) namespace is reconciled
    # regardless of events: the safety net under the namespace event handler.
    resync_seconds: float = field(default_factory=_resync_seconds_from_env)
    # How long a validating review may wait for the API (reference checks); the chart sets
    # it one second under the webhook's timeoutSeconds.
    admission_timeout_seconds: float = field(default_factory=_admission_timeout_from_env)


OPTIONS = Options()

# The sidecar-injection webhook lives in its own module, owned separately; load it when present.
try:
    importlib.import_module("modelroute.operator.mutation")
except ModuleNotFoundError as exc:  # only "the module isn't there" is tolerated
    if exc.name != "modelroute.operator.mutation":
        raise


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Same credentials the rest of the operator uses, read at start-up (not at import)."""
    cfg = KubeConfig.resolve()
    return kopf.ConnectionInfo(
        server=cfg.server,
        ca_path=cfg.ca_file,
        ca_data=cfg.ca_data,
        insecure=cfg.insecure,
        scheme="Bearer" if cfg.token else None,
        token=cfg.token,
        default_namespace=cfg.namespace,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.peering.name = OPTIONS.peering
    settings.peering.clusterwide = True
    settings.posting.level = logging.WARNING
    settings.admission.managed = None  # the Helm chart owns the webhook configurations
    if OPTIONS.webhook_listen:
        host, _sep, port = OPTIONS.webhook_listen.rpartition(":")
        settings.admission.server = kopf.WebhookServer(
            addr=host or "0.0.0.0",
            port=int(port),
            certfile=OPTIONS.webhook_cert,
            pkeyfile=OPTIONS.webhook_key,
            insecure=OPTIONS.webhook_cert is None,
        )
    else:
        # kopf refuses to start with admission handlers and no server; without a configured
        # listener (local runs, tests) serve them on loopback only, on a free port.
        settings.admission.server = kopf.WebhookServer(addr="127.0.0.1", insecure=True)
    api = KubeApi(KubeConfig.resolve())
    await api.__aenter__()
    memo.api = api
    memo.metrics = OperatorMetrics()
    # pods may be listed only where the operator binds the chart's pod-reader role to itself
    memo.service = Service(
        api, metrics=memo.metrics, pod_reader=manifests.pod_reader_from_env(os.environ)
    )
    memo.resync = asyncio.create_task(
        _resync_forever(memo.service, OPTIONS.resync_seconds), name="modelroute namespace resync"
    )
    # the injector's namespaces: a watch of our own, which peering doesn't pause (namespaces.py)
    memo.namespaces = NamespaceView(api)
    memo.metrics.registry.register(ViewSyncedCollector(lambda: memo.namespaces.synced))
    memo.namespace_watch = asyncio.create_task(memo.namespaces.run(), name="namespace view")
    memo.readiness = None
    if OPTIONS.readiness_listen:
        host, _sep, port = OPTIONS.readiness_listen.rpartition(":")
        app = readiness_app(memo.namespaces, memo.metrics.registry)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
        memo.readiness = runner


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for name in ("resync", "namespace_watch"):
        task: asyncio.Task[None] | None = getattr(memo, name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    readiness: web.AppRunner | None = getattr(memo, "readiness", None)
    if readiness is not None:
        await readiness.cleanup()
    api: KubeApi | None = getattr(memo, "api", None)
    if api is not None:
        await api.close()


async def _resync_forever(service: Service, every: float) -> None:
    """Reconcile enrolled and formerly enrolled namespaces every ``every`` seconds.

    The namespace handler is an event handler (see :func:`namespace_event`), which
    kopf never retries; this loop is what makes a lost event (an API error while
    handling it, a label removed while the operator was down) heal within one
    period.  It is cheap on a settled cluster: two list calls plus the per-namespace
    reads, and :meth:`Service.reconcile_namespace` writes nothing when nothing changed.
    It runs beside kopf's peering, so a paused replica resyncs too; that is safe
    because every write is compared with the API first and derived from the API only.
    """
    while True:
        await asyncio.sleep(every)
        try:
            await service.resync()
        except API_FAILURES as exc:  # the API is down: try again next period
            log.warning("namespace resync: %s", exc)
        except Exception:  # a bug must not end the safety net silently
            log.exception("namespace resync failed")


async def _reconcile(memo: kopf.Memo, namespace: str | None) -> None:
    if not namespace:
        return
    service: Service = memo.service
    try:
        await service.reconcile_namespace(namespace)
    except ApiError as exc:
        raise kopf.TemporaryError(f"namespace {namespace}: {exc}", delay=2) from exc


# Routes and providers: any change re-compiles their namespace.
@kopf.on.resume(GROUP, "modelroutes")
@kopf.on.create(GROUP, "modelroutes")
@kopf.on.update(GROUP, "modelroutes")
@kopf.on.resume(GROUP, "modelproviders")
@kopf.on.create(GROUP, "modelproviders")
@kopf.on.update(GROUP, "modelproviders")
async def route_or_provider_changed(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(memo, namespace)


@kopf.on.event(GROUP, "modelroutes")
@kopf.on.event(GROUP, "modelproviders")
async def route_or_provider_deleted(
    type: str, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """Deletions need no finalizer: the table is rebuilt from what is left."""
    if type == "DELETED":
        await _reconcile(memo, namespace)


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(type: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Enrolment by label: gaining it writes table and RBAC, losing it removes them.

    An event handler, not resume/create/update: kopf's change-detection handlers
    store their diff-base and progress in annotations on the object, i.e. they
    would PATCH every namespace of the cluster (kube-system included), which the
    operator has no right to do and must not need.  Event handlers store nothing.
    Every event (the initial listing included) simply reconciles the namespace,
    which is idempotent.  kopf does not retry event handlers, so a failure is only
    logged here and the resync loop (:func:`_resync_forever`) repairs it.
    A deleted namespace takes its objects with it: nothing to do.
    """
    if type == "DELETED":
        return
    service: Service = memo.service
    try:
        await service.reconcile_namespace(name)
    except API_FAILURES as exc:
        log.warning("namespace %s: %s (the next resync retries)", name, exc)


@kopf.daemon(GROUP, "failoverpolicies")
async def policy_rollout(name: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Drive the policy's rollout; re-reads the policy each step, so an edit restarts it."""
    service: Service = memo.service
    try:
        while not stopped:
            try:
                delay = await service.rollout_step(name)
            except ApiError as exc:
                log.warning("failover policy %s: %s", name, exc)
                delay = POLICY_IDLE_SECONDS
            await stopped.wait(POLICY_IDLE_SECONDS if delay is None else max(delay, 0.05))
    finally:  # deleted, or paused by peering: the replica that drives it reports it
        service.rollout_stopped(name)


@kopf.on.event(GROUP, "failoverpolicies")
async def policy_deleted(type: str, memo: kopf.Memo, **_: Any) -> None:
    """A deleted policy leaves the tables it governed: re-compile every enrolled namespace."""
    if type == "DELETED":
        service: Service = memo.service
        await service.reconcile_all()


async def _admit(memo: kopf.Memo, body: kopf.Body) -> None:
    service: Service = memo.service
    timeout = OPTIONS.admission_timeout_seconds
    try:
        errors = await asyncio.wait_for(service.validate(dict(body)), timeout=timeout)
    except TimeoutError as exc:
        raise kopf.AdmissionError(
            f"could not check references: the Kubernetes API did not answer within {timeout:g}s",
            code=503,
        ) from exc
    except API_FAILURES as exc:
        raise kopf.AdmissionError(f"could not check references: {exc}", code=503) from exc
    if errors:
        raise kopf.AdmissionError("; ".join(errors), code=422)


@kopf.on.validate(GROUP, "modelroutes", id="validate-modelroute")
async def validate_route(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _admit(memo, body)


@kopf.on.validate(GROUP, "modelproviders", id="validate-modelprovider")
async def validate_provider(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _admit(memo, body)


@kopf.on.validate(GROUP, "failoverpolicies", id="validate-failoverpolicy")
async def validate_policy(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _admit(memo, body)
