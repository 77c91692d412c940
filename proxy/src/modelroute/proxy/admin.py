"""The admin port: probes, metrics, and what the sidecar is doing right now.

* ``/healthz`` – the process answers (liveness).
* ``/readyz`` – a route table is loaded and the sidecar isn't draining (readiness).
* ``/metrics`` – Prometheus exposition.
* ``/status`` – the contract with the operator's rollout gate: ``table.hash``
  (which table is served) and ``health.ready``/``health.errorRate`` (is it
  fine), plus circuits, regions and the last refused table for people.
* ``/explain`` – the last requests with the route, category, candidates and
  why each was kept or dropped (``?n=20``).

Kept off the API port so an app can never reach it through its base URL.
``/explain`` shows route names, base URLs and upstream error details, which
only a person at the pod needs: it is served here only when this listener is
on loopback; with ``--explain HOST:PORT`` (the injector's ``127.0.0.1:15402``)
it has a loopback listener of its own while the probes, ``/metrics`` and
``/status`` the kubelet, Prometheus and the operator read stay on the pod's
address (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .endpoints import EndpointHealth
from .explain import describe_live
from .health import CircuitState
from .keys import split_endpoint
from .metrics import render
from .probes import ProbeState
from .server import Proxy


def is_loopback(host: str) -> bool:
    """Does a listener on ``host`` only take connections from inside the pod?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def explain_app(proxy: Proxy) -> web.Application:
    """``/explain`` on a listener of its own (loopback)."""
    app = web.Application()
    app.router.add_get("/explain", _explain_handler(proxy))
    return app


def _explain_handler(proxy: Proxy) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def explain(request: web.Request) -> web.Response:
        try:
            n = max(
                1, min(int(request.query.get("n", "20")), proxy.dispatcher.recent.maxlen or 100)
            )
        except ValueError:
            return _json({"error": {"message": "n must be an integer"}}, status=400)
        recent = list(proxy.dispatcher.recent)[-n:]
        now = time.monotonic()
        return _json(
            {
                "requests": [describe_live(r.record, r.plan) for r in reversed(recent)],
                # why a candidate was dropped as endpoint_ejected, in full
                "endpoints": [
                    endpoint_status(key, e, now, proxy.prober.states.get(key))
                    for key, e in sorted(proxy.health.endpoints.endpoints.items())
                ],
            }
        )

    return explain


def admin_app(proxy: Proxy, *, explain: bool = True) -> web.Application:
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if proxy.draining:
            return web.Response(status=503, text="draining\n")
        if not proxy.store.loaded:
            return web.Response(status=503, text="no route table loaded yet\n")
        return web.Response(text="ready\n")

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = render(proxy.registry, request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def status(request: web.Request) -> web.Response:
        return _json(status_document(proxy))

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    if explain:
        app.router.add_get("/explain", _explain_handler(proxy))
    return app


def status_document(proxy: Proxy) -> dict[str, Any]:
    now = time.monotonic()
    store = proxy.store
    table: dict[str, Any] = {"loaded": store.loaded}
    if store.loaded:
        current = store.current
        table.update(
            hash=current.hash,
            namespace=current.namespace,
            routes=[r.name for r in current.routes],
            source=store.source,
            appliedAt=store.applied_at,
            reloads=store.reloads,
        )
    if store.last_rejected is not None:
        table["lastRejected"] = {
            "source": store.last_rejected.source,
            "reason": store.last_rejected.reason,
            "at": store.last_rejected.at,
        }
    kube = proxy.kube_source
    if kube is not None:  # is the API answering, or is the mounted copy all there is?
        table["kube"] = {"connected": kube.connected, "lastError": kube.last_error}
    counts = proxy.status_counts
    recent_requests, recent_errors = counts.recent.totals(now)
    health = {
        "ready": store.loaded and not proxy.draining,
        "draining": proxy.draining,
        "inFlight": proxy.dispatcher.in_flight,
        "requests": counts.requests,
        "errors": counts.errors,
        "recentRequests": recent_requests,
        "errorRate": (recent_errors / recent_requests) if recent_requests else 0.0,
    }
    circuits = [
        {
            "route": route,
            "candidate": candidate,
            "state": breaker.state_at(now).name.lower().replace("_", "-"),
            "trips": breaker.trips,
        }
        for (route, candidate), breaker in sorted(proxy.health.breakers.items())
        if breaker.state_at(now) is not CircuitState.CLOSED or breaker.trips
    ]
    regions = [
        {
            "region": key,
            "ejected": state.ejected_at is not None,
            "reason": state.ejected_reason,
            "ejections": state.ejections,
        }
        for key, state in sorted(proxy.health.regions.items())
    ]
    endpoints = [
        endpoint_status(key, e, now, proxy.prober.states.get(key))
        for key, e in sorted(proxy.health.endpoints.endpoints.items())
    ]
    holds = {k: round(v - now, 3) for k, v in proxy.health.holds.items() if v > now}
    return {
        "table": table,
        "health": health,
        "circuits": circuits,
        "regions": regions,
        "endpoints": endpoints,
        "retryAfterHolds": holds,
        "budgets": {
            "shared": proxy.budgets.redis_connected,
            "redisError": proxy.budgets.redis_error,
            "routes": [
                {
                    "route": s.route,
                    "window": s.window,
                    "limitUSD": s.limit_usd,
                    "spentUSD": round(s.spent_usd, 6),
                    "remainingUSD": round(s.remaining_usd, 6),
                    "action": str(s.action),
                    "exhausted": s.exhausted,
                    "resetsAt": s.resets_at,
                }
                for s in proxy.budgets.states()
            ],
        },
        "uptimeSeconds": round(time.time() - proxy.started_at, 3),
    }


def endpoint_status(
    key: str, e: EndpointHealth, now: float, probe: ProbeState | None = None
) -> dict[str, Any]:
    """One endpoint on ``/status``: in rotation or not, and why (endpoints.py, probes.py)."""
    e.settle(now)
    provider, region = split_endpoint(key)
    check = e.settings.check
    probed = e.probed and check.enabled
    return {
        "endpoint": key,
        "provider": provider,
        "region": region,
        "state": "ejected" if e.ejected else "healthy",
        "reason": e.reason,
        "ejections": e.ejections,
        "ejectedForSeconds": round(max(0.0, e.ejected_until - now), 3) if e.ejected else 0.0,
        "consecutiveFailures": e.consecutive,
        "lastError": str(e.last_error) if e.last_error else None,
        "lastErrorDetail": e.last_error_detail or None,
        "lastErrorSecondsAgo": (
            round(now - e.last_error_at, 3) if e.last_error_at is not None else None
        ),
        "probed": probed,
        "probe": (f"GET {check.http.path}" if check.http else "connect") if probed else None,
        "probes": e.probes,
        "probeFailures": e.probe_errors,
        "probesNotSent": e.probes_not_sent,
        "probeFailuresInARow": e.probe_failures,
        "probeSuccessesInARow": e.probe_successes,
        # probe successes still needed before an ejected endpoint is back (and the time left)
        "successesToReadmit": (
            max(0, check.healthy_threshold - e.probe_successes) if e.ejected and probed else 0
        ),
        "nextProbeInSeconds": (
            round(max(0.0, e.next_probe_at - now), 3) if probed and not e.probing else None
        ),
        "lastProbe": _last_probe(probe, now) if probed else None,
    }


def _last_probe(probe: ProbeState | None, now: float) -> dict[str, Any] | None:
    if probe is None or probe.result is None or probe.at is None:
        return None
    return {
        "result": str(probe.result),
        "detail": probe.detail or None,
        "secondsAgo": round(now - probe.at, 3),
        "durationMs": round((probe.seconds or 0.0) * 1000, 2),
        "timeoutMs": round(probe.timeout * 1000, 1),
    }


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")
