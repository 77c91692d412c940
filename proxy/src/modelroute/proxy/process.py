"""Running the sidecar: bind the API and admin apps, serve until a signal, drain, stop.

:func:`start_proxy` binds both apps (tests and the demo use it directly);
:func:`serve` runs until SIGTERM/SIGINT and then drains: readiness goes false
first, in-flight requests get ``drainSeconds`` to finish, and only then are
the upstream pools closed.  It sits above both :mod:`~modelroute.proxy.server`
and :mod:`~modelroute.proxy.admin`, so neither of those imports the other's
importer: the admin side reads the proxy, the proxy never knows the admin side.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from dataclasses import dataclass

from aiohttp import web

from .admin import admin_app, explain_app, is_loopback
from .server import Proxy, ProxyConfig

log = logging.getLogger("modelroute.proxy")


@dataclass
class RunningProxy:
    proxy: Proxy
    api: web.AppRunner
    admin: web.AppRunner | None
    api_url: str
    admin_url: str | None
    explain_runner: web.AppRunner | None = None
    explain_url: str | None = None

    @property
    def base_url(self) -> str:
        return self.api_url + "/v1"

    async def stop(self, drain: float = 0.0) -> None:
        """Drain for up to ``drain`` seconds, end what is left with a reason, then close."""
        if drain:
            await self.proxy.drain(drain)
        await self.proxy.dispatcher.cut_in_flight(1.0)
        await self.api.cleanup()
        if self.admin is not None:
            await self.admin.cleanup()
        if self.explain_runner is not None:
            await self.explain_runner.cleanup()
        await self.proxy.close()


def _bound_port(runner: web.AppRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("site not bound")


async def start_proxy(config: ProxyConfig) -> RunningProxy:
    """Build, load and bind the proxy (port 0 picks a free port); raises ConfigError on bad config."""
    proxy = Proxy(config)
    try:
        await proxy.start_sources()
    except BaseException:
        await proxy.close()
        raise
    api = web.AppRunner(
        proxy.api_app(),
        handler_cancellation=True,  # a client that goes away cancels its upstream request
        access_log=None,
        # serve() has already waited drain_seconds for in-flight requests (drain());
        # this only closes what is left, it must not wait the same time again
        shutdown_timeout=1.0,
    )
    await api.setup()
    host, port = config.listen
    await web.TCPSite(api, host, port, reuse_port=config.reuse_port or None).start()
    api_url = f"http://{host}:{_bound_port(api)}"
    admin_runner: web.AppRunner | None = None
    admin_url = None
    explain_runner: web.AppRunner | None = None
    explain_url = None
    if config.admin is not None:
        ahost, aport = config.admin
        on_admin = config.explain is None and is_loopback(ahost)
        admin_runner = web.AppRunner(admin_app(proxy, explain=on_admin), access_log=None)
        await admin_runner.setup()
        await web.TCPSite(admin_runner, ahost, aport, reuse_port=config.reuse_port or None).start()
        admin_url = f"http://{ahost}:{_bound_port(admin_runner)}"
        if config.explain is not None:
            ehost, eport = config.explain
            explain_runner = web.AppRunner(explain_app(proxy), access_log=None)
            await explain_runner.setup()
            await web.TCPSite(explain_runner, ehost, eport).start()
            explain_url = f"http://{ehost}:{_bound_port(explain_runner)}"
        elif on_admin:
            explain_url = admin_url
    log.info("modelroute proxy listening on %s (admin %s)", api_url, admin_url or "off")
    return RunningProxy(proxy, api, admin_runner, api_url, admin_url, explain_runner, explain_url)


GC_GEN0_THRESHOLD = 10_000
GIL_SWITCH_INTERVAL = 0.0001  # seconds; CPython's default is 0.005 (see tune_gil)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path's bill (once, after start-up).

    Everything loaded at start-up (modules, pydantic models, the route table)
    lives as long as the process; ``gc.freeze()`` moves it out of the
    collector's generations, so no collection walks it again.  Each request
    allocates a few hundred container objects, so at the default gen-0
    threshold (700) nearly every request paid for a collection; 10,000 makes
    that a tenth as often for the same garbage.  Measured on `make bench`'s
    route: ~40 µs less CPU per request (~10 %).  Only for the serving process
    (``serve``), not for tests that start many proxies in one interpreter.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def tune_gil() -> None:
    """Let the event loop win the GIL back within 0.1 ms, not CPython's default 5 ms.

    The sidecar's only other busy thread is the OpenTelemetry batch exporter,
    which encodes spans as protobuf in Python.  While it runs, a request that
    becomes ready waits for the GIL up to the switch interval, so at the
    default every exported batch could add up to 5 ms to the requests in
    flight.  Measured on `make bench`'s route with every span exported, 20
    connections: p99 over the bare pass-through +8.8 ms → +2.6 ms, CPU per
    request unchanged.  Only for the serving process (``serve``).
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


async def serve(config: ProxyConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain in-flight requests and stop."""
    running = await start_proxy(config)
    tune_gc()
    tune_gil()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if config.on_stop is not None:
        config.on_stop()
    log.info("stopping: draining %d in-flight request(s)", running.proxy.dispatcher.in_flight)
    left = await running.proxy.drain(config.drain_seconds)
    if left:
        log.warning("%d request(s) still in flight after %gs; closing", left, config.drain_seconds)
    await running.stop()
