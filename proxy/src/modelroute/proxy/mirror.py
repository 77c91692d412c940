"""Shadow traffic (``mirror:``): a copy of a sampled request to another target, measured apart.

The seeds' advice before moving a route's default: send a share of real
traffic to the candidate and compare latency, tokens and cost.  The copy is
started only once the primary answer is on its way (after its first byte
went to the client), never streamed, never retried, bounded in concurrency
per route (over the bound, the copy is skipped and counted), and its result
is thrown away: nothing it does can reach the client.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import orjson

from .credentials import Credentials, MissingCredentials
from .events import Observers, ShadowRecord
from .outcomes import ShadowOutcome
from .table import CompiledRoute, CompiledTable, CompiledTarget
from .upstream import UpstreamError
from .usage import usage_tokens

log = logging.getLogger("modelroute.mirror")


class Mirror:
    def __init__(
        self,
        pool: Any,  # UpstreamPool; typed loosely so tests can pass a stand-in
        credentials: Credentials,
        observers: Observers,
        rng: random.Random,
    ) -> None:
        self.pool = pool
        self.credentials = credentials
        self.observers = observers
        self.rng = rng
        self.tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, int] = {}

    def maybe_send(
        self, route: CompiledRoute, table: CompiledTable, path: str, body: dict[str, Any]
    ) -> None:
        """Maybe copy the request (``path`` is the endpoint's, e.g. ``/chat/completions``)."""
        mirror = route.mirror
        if mirror is None or self.rng.random() * 100 >= mirror.percent:
            return
        if path == "/responses":  # a copy would store a response (and follow-ups can't move)
            return
        target = mirror.target
        region = target.regions[0] if target.regions else ""
        shadow = ShadowRecord(route.name, target.provider, target.model, region)
        if self._running.get(route.name, 0) >= mirror.max_concurrent:
            shadow.outcome = ShadowOutcome.SKIPPED
            shadow.detail = f"{mirror.max_concurrent} shadow requests already in flight"
            self.observers.shadow_finished(shadow)
            return
        copy = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        copy["model"] = target.upstream_model
        self._running[route.name] = self._running.get(route.name, 0) + 1
        task = asyncio.ensure_future(self._send(route, table, path, copy, shadow))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(
        self,
        route: CompiledRoute,
        table: CompiledTable,
        path: str,
        body: dict[str, Any],
        shadow: ShadowRecord,
    ) -> None:
        started = time.perf_counter()
        try:
            provider = table.provider(shadow.provider)
            base_url = provider.endpoint(shadow.region).base_url
            headers = {"Content-Type": "application/json"}
            headers.update(self.credentials.headers_for(provider.credentials))
            async with asyncio.timeout(route.timeouts.total_ms / 1000):
                # redirects are never followed: one would take the provider's key along
                response = await self.pool.pool(provider).post(
                    base_url, path, orjson.dumps(body), headers
                )
                try:
                    raw = await response.read()
                finally:
                    response.release()
                shadow.status = response.status
            doc = orjson.loads(raw) if response.status < 300 else None
            if isinstance(doc, dict):
                shadow.outcome = ShadowOutcome.OK
                usage = doc.get("usage")
                if isinstance(usage, dict):
                    shadow.input_tokens, shadow.output_tokens = usage_tokens(usage)
                if route.mirror is not None:
                    shadow.cost_usd = shadow_cost(route.mirror.target, shadow)
            else:
                shadow.outcome = ShadowOutcome.ERROR
                shadow.detail = f"status {response.status}"
        except (
            UpstreamError,
            TimeoutError,
            orjson.JSONDecodeError,
            MissingCredentials,
            KeyError,
        ) as exc:
            shadow.outcome = ShadowOutcome.ERROR
            shadow.detail = f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:  # a shadow is never worth a crash: its result is thrown away
            log.warning(
                "shadow request for route %s failed unexpectedly", route.name, exc_info=True
            )
            shadow.outcome = ShadowOutcome.ERROR
            shadow.detail = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            shadow.duration = time.perf_counter() - started
            self._running[route.name] -= 1
            self.observers.shadow_finished(shadow)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def shadow_cost(target: CompiledTarget, shadow: ShadowRecord) -> float | None:
    """What the shadow's tokens cost at the mirror target's catalogue prices.

    Priced the way the dispatcher prices a served answer: output and, where
    the table knows it, input.  Output tokens without an output price leave
    the cost unknown (None), never $0, so a comparison with the primary
    can't flatter an unpriced candidate.
    """
    if shadow.output_tokens is None and shadow.input_tokens is None:
        return None
    cost = 0.0
    if shadow.output_tokens:
        if target.output_usd_per_mtok is None:
            return None
        cost += shadow.output_tokens * target.output_usd_per_mtok / 1e6
    if shadow.input_tokens and target.input_usd_per_mtok is not None:
        cost += shadow.input_tokens * target.input_usd_per_mtok / 1e6
    return cost
