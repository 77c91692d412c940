"""The sidecar process: the OpenAI-compatible API on one port, the admin endpoints on another.

:class:`Proxy` owns the long-lived state (route table, health book, one
connection pool per provider, budgets, observers) and builds the API
application; :mod:`~modelroute.proxy.process` binds it and the admin side
(which reads this state, so it imports this module, never the reverse).

Every error a client sees passes through :func:`error_middleware`, the one
place :class:`~modelroute.proxy.errors.ModelRouteError` becomes OpenAI's
error shape – including aiohttp's own (body too large, bad method).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from . import errors
from .budget import BudgetBook
from .credentials import DEFAULT_SECRETS_DIR, Credentials
from .dispatch import RESPONSE_STARTED, Dispatcher
from .endpoints import endpoints_in, settings_of
from .events import AttemptRecord, Observers, RequestRecord, ShadowRecord, idle_hook
from .followups import FollowUps
from .health import HealthBook, RollingCounts
from .keys import candidate_key
from .kube_source import KubeTableSource
from .metrics import PrometheusObserver, StateCollector
from .outcomes import RequestOutcome
from .probes import PROBE_CONCURRENCY, Prober
from .request import Endpoint
from .responses import ResponseIds, response_id_key
from .sources import ConfigError, RouteFilesSource, TableFileSource
from .table import CompiledTable
from .tablestore import TableStore
from .tail_sampling import TailConfigError
from .tracing import tracing_from_env
from .upstream import EgressConfigError, EgressPolicy, UpstreamPool

log = logging.getLogger("modelroute.proxy")

DEFAULT_MAX_BODY = 32 * 1024 * 1024  # embedding batches and long prompts are real


@dataclass
class ProxyConfig:
    listen: tuple[str, int] = ("127.0.0.1", 15400)
    admin: tuple[str, int] | None = ("127.0.0.1", 15401)
    # /explain's own listener (loopback); without one, /explain is on the admin listener
    # only when that is loopback too (admin.py, docs/security.md)
    explain: tuple[str, int] | None = None
    route_files: list[Path] = field(default_factory=list)
    table_file: Path | None = None
    kube: bool = False
    namespace: str | None = None
    kubeconfig: str | None = None
    secrets_dir: Path = DEFAULT_SECRETS_DIR
    redis_url: str | None = None
    redis_password: str | None = None  # the CLI reads it from $MODELROUTE_REDIS_PASSWORD only
    redis_ca_file: Path | None = None  # a private CA for a rediss:// URL (docs/budgets.md)
    max_body_bytes: int = DEFAULT_MAX_BODY
    drain_seconds: float = 25.0
    reload_seconds: float = 1.0
    reuse_port: bool = False
    # active health probes out at once (probes.py); each endpoint has at most one
    probe_concurrency: int = PROBE_CONCURRENCY
    tracing: bool = True  # still only on when OTEL_* variables configure an exporter
    on_stop: Callable[[], None] | None = None  # called the moment SIGTERM/SIGINT arrives
    # signs the response ids the app sees (responses.py); made before --workers fork, so
    # every worker accepts the others' ids
    response_id_key: bytes = field(default_factory=response_id_key, repr=False)

    def check(self) -> None:
        if not (self.route_files or self.table_file or self.kube):
            raise ConfigError(
                "no route table source: pass --routes FILE (local mode), --table-file FILE "
                "or --kube (in a cluster)"
            )
        if self.route_files and (self.table_file or self.kube):
            raise ConfigError("--routes (local mode) can't be combined with --table-file/--kube")
        if self.redis_ca_file is not None and not (self.redis_url or "").startswith("rediss://"):
            # a CA for a plain-text connection would be ignored: the counters would travel
            # unencrypted while the configuration says TLS
            raise ConfigError(
                "--redis-ca-file (MODELROUTE_REDIS_CA_FILE) is for TLS: the Redis URL must be "
                f"rediss://..., not {(self.redis_url or '(none)').split('://')[0]}://"
            )


class _Health:
    """Recent request outcomes for ``/status`` (the operator's rollout gate reads ``errorRate``)."""

    def __init__(self) -> None:
        self.recent = RollingCounts(60.0)
        self.requests = 0
        self.errors = 0

    @idle_hook
    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        pass

    @idle_hook
    def attempt_started(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        pass

    @idle_hook
    def attempt_finished(self, record: RequestRecord, attempt: AttemptRecord) -> None:
        pass

    def request_finished(self, record: RequestRecord) -> None:
        failed = record.status >= 500 or record.outcome == RequestOutcome.STREAM_ERROR
        self.requests += 1
        self.errors += failed
        self.recent.add(not failed, time.monotonic())

    @idle_hook
    def shadow_finished(self, record: ShadowRecord) -> None:
        pass


class Proxy:
    def __init__(self, config: ProxyConfig) -> None:
        config.check()
        self.config = config
        self.store = TableStore()
        self.health = HealthBook()
        self.credentials = Credentials(config.secrets_dir)
        try:
            egress = EgressPolicy.from_environ(os.environ)
        except EgressConfigError as exc:
            raise ConfigError(str(exc)) from None
        self.pool = UpstreamPool(egress, self.credentials)
        self.budgets = BudgetBook(
            config.redis_url,
            namespace=config.namespace or "local",
            redis_password=config.redis_password,
            redis_ca_file=str(config.redis_ca_file) if config.redis_ca_file else None,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = PrometheusObserver(self.registry)
        self.registry.register(
            StateCollector(self.health, self.store, self.budgets.remaining, pools=self.pool.state)
        )
        self.status_counts = _Health()
        self.observers = Observers([self.metrics, self.status_counts])
        try:
            self.tracing = tracing_from_env() if config.tracing else None
        except TailConfigError as exc:  # MODELROUTE_TRACES_TAIL_RATIO: say what to set, no trace
            raise ConfigError(str(exc)) from None
        if self.tracing is not None:
            self.observers.add(self.tracing)
        self.dispatcher = Dispatcher(
            self.store, self.health, self.pool, self.credentials, self.observers, self.budgets
        )
        self.dispatcher.response_ids = ResponseIds(config.response_id_key)
        self.follow_ups = FollowUps(
            self.store, self.pool, self.credentials, self.dispatcher.response_ids
        )
        self.prober = Prober(
            self.health.endpoints,
            self.pool,
            self.credentials,
            concurrency=config.probe_concurrency,
            rng=self.dispatcher.rng,
            on_probe=self.metrics.probe_finished,
        )
        self.started_at = time.time()
        self.draining = False
        self.store.subscribe(self._table_applied)
        self._route_files = (
            RouteFilesSource(self.store, config.route_files, config.reload_seconds)
            if config.route_files
            else None
        )
        kube = self._kube = (
            KubeTableSource(self.store, namespace=config.namespace, kubeconfig=config.kubeconfig)
            if config.kube
            else None
        )
        # the mounted copy lags the API by up to a minute: while the watch delivers, a
        # late file change must not undo what the API already said (e.g. a rollback)
        self._table_file = (
            TableFileSource(
                self.store,
                config.table_file,
                config.reload_seconds,
                defer_to=(lambda: kube.connected) if kube is not None else None,
            )
            if config.table_file
            else None
        )

    @property
    def kube_source(self) -> KubeTableSource | None:
        """The API watch in ``--kube`` mode (its state is on ``/status``), else None."""
        return self._kube

    # -- lifecycle ------------------------------------------------------------------------

    def _table_applied(self, table: CompiledTable) -> None:
        self.pool.table_applied(table)
        # /status errorRate is the operator's rollout gate for *this* table: errors
        # under the previous one must not fail (or pass) the new one
        self.status_counts.recent.reset()
        failover = table.failover
        self.health.configure(
            failover.ejection if failover else None,
            failover.failback_delay_seconds if failover else 60.0,
        )
        endpoints = endpoints_in(table)
        self.health.endpoints.configure(
            ((key, settings_of(provider, region)) for key, (provider, region) in endpoints.items()),
            time.monotonic(),
            self.dispatcher.rng,
        )
        self.prober.table_applied(table)  # probes follow the endpoints the table uses
        self.metrics.endpoints_applied(set(endpoints))
        self.health.forget_routes_except({r.name for r in table.routes})
        targets = {t.key for r in table.routes for t in r.targets}
        candidates = {
            candidate_key(t.provider, t.model, region)
            for r in table.routes
            for t in r.targets
            for region in t.regions
        }
        self.health.prune(targets, candidates, time.monotonic())
        self.budgets.observe(table.routes)

    async def start_sources(self) -> None:
        """Load the first table (a bad local file stops here with the reason), then watch."""
        if self._route_files is not None:
            self._route_files.load_initial()
            await self._route_files.start()
        if self._table_file is not None:
            self._table_file.load_initial()
            await self._table_file.start()
        if self._kube is not None:
            await self._kube.start()
        await self.budgets.start()
        self.prober.start()

    async def close(self) -> None:
        await self.prober.stop()
        for source in (self._route_files, self._table_file, self._kube):
            if source is not None:
                await source.stop()
        await self.dispatcher.mirror.close()
        await self.budgets.close()
        await self.pool.close()
        if self.tracing is not None:
            # the exporter's last flush is a blocking HTTP call: keep it off the loop
            await asyncio.to_thread(self.tracing.shutdown)

    async def drain(self, seconds: float) -> int:
        """Stop being ready and wait for in-flight requests; returns how many were left."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.dispatcher.idle.wait()
        return self.dispatcher.in_flight

    # -- the API app -------------------------------------------------------------------------

    def api_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[error_middleware]
        )
        for endpoint in Endpoint:
            app.router.add_post("/v1" + endpoint.path, self._handler(endpoint))
            app.router.add_post(endpoint.path, self._handler(endpoint))  # base URL without /v1
        self.follow_ups.add_routes(app)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/models", self.models)
        # an alias may hold a slash (``org/model``): the id is the rest of the path
        app.router.add_get("/v1/models/{id:.+}", self.model)
        app.router.add_get("/models/{id:.+}", self.model)
        return app

    def _handler(
        self, endpoint: Endpoint
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            if (
                request.content_length is not None
                and request.content_length > self.config.max_body_bytes
            ):
                raise _too_large(request.content_length, self.config.max_body_bytes)
            return await self.dispatcher.handle(request, endpoint)

        return handle

    def _table(self) -> CompiledTable:
        if not self.store.loaded:
            raise errors.NotReady("no route table loaded yet")
        return self.store.current

    def _model_object(self, table: CompiledTable, alias: str) -> dict[str, object]:
        return {
            "id": alias,
            "object": "model",
            "created": int(self.started_at),
            "owned_by": "modelroute",
            "modelroute": {"routes": [r.name for r in table.routes if alias in r.aliases]},
        }

    async def models(self, request: web.Request) -> web.Response:
        """The aliases routes capture, in OpenAI's list shape (what apps may send in ``model``)."""
        table = self._table()
        return _json(
            {"object": "list", "data": [self._model_object(table, a) for a in table.aliases()]}
        )

    async def model(self, request: web.Request) -> web.Response:
        """One alias (the SDK's ``models.retrieve``); a name no route captures is OpenAI's 404."""
        table = self._table()
        alias = request.match_info["id"]
        if alias not in table.aliases():
            raise errors.UnknownModel(
                f"The model {alias!r} does not exist: no ModelRoute captures it "
                f"(GET /v1/models lists the {len(table.aliases())} served aliases)",
            )
        return _json(self._model_object(table, alias))


def _too_large(size: int | None, limit: int) -> errors.BodyTooLarge:
    got = f"{size} bytes" if size is not None else "the body"
    return errors.BodyTooLarge(
        f"request body too large: {got} is over the {limit}-byte limit "
        "(raise it with --max-body-bytes)"
    )


def _json(doc: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc), status=status, content_type="application/json", headers=headers
    )


def error_response(exc: errors.ModelRouteError) -> web.Response:
    return _json(exc.body(), status=exc.status, headers=exc.headers or None)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ModelRouteError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(_too_large(None, request.client_max_size))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"{request.method} {request.path}: {exc.reason}"
        if exc.status == 404:
            return error_response(errors.NotFound(message))
        return error_response(errors.HTTPRefused(message, status=exc.status))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        if request.get(RESPONSE_STARTED):
            # a stream's headers already went out: a second response can't follow them,
            # and leaving the connection open would leave the client waiting forever
            if request.transport is not None:
                request.transport.close()
            raise
        return error_response(
            errors.ModelRouteError(
                "internal error in modelroute (logged); the request was not sent"
            )
        )
