"""Active health probes: every endpoint in the current table, on its interval, bounded in concurrency.

Without probes an endpoint is only judged by the requests sent to it: one
nobody sends to is never found dead until a failover lands there, and an
ejected one returns only when its ejection time is up (and then costs the
next request a refused connect to find out it is still down).  Probes judge
each endpoint (a provider's base URL in one region, shared by every route
and model using it) on their own, so a dead one is out of every plan before
a request needs it, and a healed one is back after ``healthyThreshold``
successes in a row instead of by a timer.

What a probe is: a connect (TCP, and TLS for https) by default; ``GET
<baseURL><path>`` with ``healthCheck.http`` – never a POST, so no tokens are
spent, the answer body is never read.  It takes the requests' road: the same
guard, egress proxy and TLS (``upstream/probe.py``), but never a pooled
connection.  A probe that fails counts as a local-origin failure
(``endpoints.py`` decides what that ejects); one the guard refuses gives no
verdict (the configuration is at fault, not the network).

Split as ``health.py`` is: the verdicts and the timeout rule are pure
functions here, the schedule is :class:`~.endpoints.EndpointBook`'s (clock
passed in), and :class:`Prober` is the small runtime – one task that sleeps
until the next probe falls due, and a semaphore over the probes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from modelroute.resources import HealthCheck

from .credentials import Credentials, MissingCredentials
from .endpoints import EndpointBook, EndpointHealth, ErrorKind, endpoints_in
from .scrub import Scrubber
from .table import CompiledProvider, CompiledTable
from .upstream import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    RequestNotSent,
    UpstreamPool,
)

log = logging.getLogger("modelroute.probes")

PROBE_CONCURRENCY = 8  # probes out at once per sidecar: an idle pod's share of connects stays small
OVER_TYPICAL = 4.0  # a probe may take this many times the endpoint's typical successful one
TYPICAL_WEIGHT = 0.2  # the typical time is an EWMA of successful probes, this much per sample
MAX_SLEEP = 0.2  # the scheduler looks again at least this often (a request's suspicion: probe now)
DETAIL_CHARS = 200


class ProbeResult(StrEnum):
    """The ``result`` label of ``modelroute_endpoint_probes_total`` and ``/status``'s ``lastProbe``."""

    OK = "ok"
    FAILED = "failed"
    NOT_SENT = "not_sent"  # the guard refused it: no verdict either way


@dataclass(frozen=True, slots=True)
class Verdict:
    result: ProbeResult
    kind: ErrorKind | None = None
    detail: str = ""


# -- pure: the rules ----------------------------------------------------------------------------


def probe_timeout(check: HealthCheck, connect_timeout_ms: int, typical: float | None) -> float:
    """Seconds one probe may take.

    ``timeoutMs`` (300 ms by default: an in-region TLS connect takes a few
    ms), raised to ``OVER_TYPICAL`` × the endpoint's typical successful
    probe so a far region whose TLS handshake takes several round trips is
    not ejected for being far; never above the provider's
    ``connectTimeoutMs`` (a probe judges no more leniently than a request's
    connect) nor the interval.  Until a probe has succeeded there is no
    typical time, and the floor could be below what the endpoint can ever
    do – it would be ejected at once and never learn – so the first probes
    get the connect timeout itself.
    """
    cap = min(connect_timeout_ms / 1000, check.interval_ms / 1000)
    if typical is None:
        return cap
    return min(max(check.timeout_ms / 1000, OVER_TYPICAL * typical), cap)


def verdict_of_status(status: int | None, check: HealthCheck) -> Verdict:
    """A probe that completed: a connect (``None``) is healthy, an HTTP answer by its status."""
    if status is None or check.http is None or status < check.http.healthy_below:
        return Verdict(ProbeResult.OK)
    return Verdict(
        ProbeResult.FAILED,
        ErrorKind.PROBE_STATUS,
        f"GET {check.http.path} answered {status} (healthy below {check.http.healthy_below})",
    )


def verdict_of_error(exc: BaseException, timeout: float) -> Verdict:
    """A probe that raised: timed out, refused (or broken), or not sent at all."""
    if isinstance(exc, RequestNotSent):  # the guard, or a base URL no request can go to
        return Verdict(ProbeResult.NOT_SENT, None, f"probe not sent: {exc}"[:DETAIL_CHARS])
    if isinstance(exc, TimeoutError) or (isinstance(exc, ConnectFailed) and exc.timed_out):
        return Verdict(
            ProbeResult.FAILED,
            ErrorKind.PROBE_TIMEOUT,
            f"no answer to the probe within {timeout * 1000:.0f} ms",
        )
    # refused, reset, unreachable, DNS, TLS, a broken answer: the network said no at once
    return Verdict(ProbeResult.FAILED, ErrorKind.PROBE_REFUSED, str(exc)[:DETAIL_CHARS])


@dataclass(slots=True)
class ProbeState:
    """What the last probes of one endpoint found (``/status``'s ``lastProbe``)."""

    result: ProbeResult | None = None
    detail: str = ""
    at: float | None = None
    seconds: float | None = None
    typical: float | None = None  # EWMA of successful probes' durations
    timeout: float = 0.0  # the timeout the next probe gets

    def observe(self, verdict: Verdict, seconds: float, now: float) -> None:
        self.result = verdict.result
        self.detail = verdict.detail
        self.at = now
        self.seconds = seconds
        if verdict.result is ProbeResult.OK:
            self.typical = (
                seconds
                if self.typical is None
                else self.typical + TYPICAL_WEIGHT * (seconds - self.typical)
            )


# -- the runtime ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    provider: CompiledProvider
    region: str
    base_url: str


ProbeListener = Callable[[str, ProbeResult, float], None]  # endpoint key, result, seconds


class Prober:
    """Probes every endpoint of the current table while it is in the table; nothing else.

    One scheduler task sleeps until the book says a probe is due (at most
    ``MAX_SLEEP``, so a request's suspicion – ``EndpointHealth.suspect`` –
    is acted on soon); each due endpoint gets one probe task, and at most
    ``concurrency`` probes are out at once.  A table reload
    (:meth:`table_applied`) cancels the probes of endpoints it removed (or
    whose settings changed: their state starts afresh); :meth:`stop` cancels
    all of them.
    """

    def __init__(
        self,
        book: EndpointBook,
        pool: UpstreamPool,
        credentials: Credentials,
        *,
        concurrency: int = PROBE_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_probe: ProbeListener | None = None,
    ) -> None:
        self.book = book
        self.pool = pool
        self.credentials = credentials
        self.concurrency = concurrency
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_probe = on_probe
        self.states: dict[str, ProbeState] = {}
        self.in_flight = 0
        self.most_in_flight = 0  # the bound, as observed (tests and /status)
        self._targets: dict[str, _Target] = {}
        self._tasks: dict[str, tuple[asyncio.Task[None], EndpointHealth]] = {}
        self._semaphore = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def table_applied(self, table: CompiledTable) -> None:
        """Probe exactly the endpoints this table's routes (and mirrors) use, from now on."""
        old = self._targets
        self._targets = {
            key: _Target(provider, region, provider.endpoint(region).base_url)
            for key, (provider, region) in endpoints_in(table).items()
        }
        for key, (task, health) in list(self._tasks.items()):
            # gone, its settings changed, or it moved (another baseURL, other credentials):
            # a probe out to the old target must not go on carrying the key there, nor give
            # the endpoint a verdict about a place it no longer is
            if self.book.get(key) is not health or self._targets.get(key) != old.get(key):
                task.cancel()
                del self._tasks[key]
                # a task cancelled before it ever ran never resets this itself; the health
                # may be kept (the endpoint moved), and a stuck flag would mean no probe again
                health.probing = False
        for key in [k for k in self.states if self._targets.get(k) != old.get(k)]:
            del self.states[key]
        self._wake.set()

    def start(self) -> None:
        """Start probing (inside the running loop); ejections now end by probe successes."""
        if self._runner is None:
            self.book.set_probed(True)
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="probes")

    async def stop(self) -> None:
        """Cancel the scheduler and every probe out; ejections end by time again."""
        tasks = [task for task, _ in self._tasks.values()]
        if self._runner is not None:
            tasks.append(self._runner)
            self._runner = None
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.book.set_probed(False)

    # -- the schedule ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            self.launch_due(self.clock())
            due = self.book.next_due()
            delay = MAX_SLEEP if due is None else min(MAX_SLEEP, max(0.0, due - self.clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def launch_due(self, now: float) -> list[str]:
        """Start a probe for every endpoint due at ``now``; returns their keys."""
        launched = []
        for key in self.book.due(now):
            health = self.book.get(key)
            if key not in self._targets or key in self._tasks or health is None:
                continue
            health.probing = True
            task = asyncio.get_running_loop().create_task(self._probe(key, health))
            self._tasks[key] = (task, health)
            launched.append(key)
        return launched

    # -- one probe -------------------------------------------------------------------------

    async def _probe(self, key: str, health: EndpointHealth) -> None:
        target = self._targets[key]
        check = health.settings.check
        state = self.states.setdefault(key, ProbeState())
        try:
            async with self._semaphore:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    state.timeout = probe_timeout(
                        check, target.provider.connect_timeout_ms, state.typical
                    )
                    started = self.clock()
                    verdict = await self._once(target, check, state.timeout)
                    seconds = self.clock() - started
                finally:
                    self.in_flight -= 1
        except asyncio.CancelledError:
            health.probing = False
            raise
        finally:
            found = self._tasks.get(key)
            if found is not None and found[1] is health:
                del self._tasks[key]
        now = self.clock()
        state.observe(verdict, seconds, now)
        if self.book.get(key) is not health:  # a reload replaced or removed it meanwhile
            return
        if verdict.result is ProbeResult.OK:
            health.probe_result(True, now)
        elif verdict.result is ProbeResult.FAILED:
            if health.probe_result(False, now, verdict.kind, verdict.detail, started):
                log.warning("endpoint %s ejected by probes: %s", key, verdict.detail)
                # as a request's ejection does: a kept-alive connection from before the
                # fault would be handed to the next request there and written into silence
                self.pool.pool(target.provider).drop_idle(target.base_url)
        else:
            health.probe_not_sent()
        health.schedule_next(now, self.rng)
        if self.on_probe is not None:
            self.on_probe(key, verdict.result, seconds)

    async def _once(self, target: _Target, check: HealthCheck, within: float) -> Verdict:
        headers: dict[str, str] = {}
        if check.http is not None and check.http.send_key:
            with contextlib.suppress(MissingCredentials):  # no key: the probe goes without
                headers = self.credentials.headers_for(target.provider.credentials)
        verdict = await self._verdict(target, check, within, headers)
        if not verdict.detail:
            return verdict
        # the detail reaches /status, /explain and the log, and can quote what the upstream
        # answered (a Content-Encoding it sent back, say): scrubbed as a request's are
        credentials = target.provider.credentials
        scrub = Scrubber.for_headers(headers, credentials.header if credentials else None)
        return Verdict(verdict.result, verdict.kind, scrub.text(verdict.detail))

    async def _verdict(
        self, target: _Target, check: HealthCheck, within: float, headers: dict[str, str]
    ) -> Verdict:
        try:
            status = await self.pool.probe(
                target.provider,
                target.base_url,
                within=within,
                path=check.http.path if check.http is not None else None,
                headers=headers,
            )
        except (
            TimeoutError,
            OSError,
            ConnectFailed,
            Disconnected,
            BadResponse,
            RequestNotSent,
        ) as exc:
            return verdict_of_error(exc, within)
        except Exception:  # a bug: logged, no verdict, and the endpoint is probed again later
            log.exception("probe of %s failed unexpectedly", target.base_url)
            return Verdict(
                ProbeResult.NOT_SENT, None, "the probe failed inside the sidecar (logged)"
            )
        return verdict_of_status(status, check)
