"""Route budgets: how many USD a route has spent in its calendar window, per pod or shared.

A ``ModelRoute`` may carry ``budget: {usdPerHour|usdPerDay|usdPerMonth: N, action}``.
The dispatcher asks :meth:`BudgetBook.state` before planning a request (is the
budget exhausted, and what does the route's ``action`` say to do?) and calls
:meth:`BudgetBook.spend` with the answer's cost afterwards.  Both run on every
request, so both are synchronous dictionary work: no I/O, no awaiting.

Windows are **calendar UTC** hours, days and months (a ``usdPerDay`` budget
resets at 00:00 UTC), so every pod — and every reader of the Redis keys —
agrees on where a window starts without coordinating.

State is keyed by route *name* and window id, never by the table object: a
config reload that keeps the route keeps its spend, and a changed limit is
compared with the spend so far.  Spend is recorded in all three windows (hour,
day, month) of a budgeted route, so switching ``usdPerDay`` to ``usdPerHour``
mid-day still knows this hour's spend.

**Per pod** (no ``redis_url``): each sidecar counts only its own spend, so N
replicas may spend up to N× the budget.  **Shared** (``redis_url`` set): a
background task pushes this pod's deltas with ``INCRBYFLOAT`` (and
``EXPIREAT`` window end + margin) and pulls the namespace-wide totals every
``sync_interval`` seconds; requests still only read local numbers, so
enforcement lags other pods' spend by up to one sync interval each.  If Redis
is unreachable the book keeps enforcing with this pod's own count, logs once
per outage, retries with capped, jittered backoff and never blocks a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from modelroute.resources import BudgetAction

from .table import CompiledRoute

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("modelroute.budget")

Window = Literal["hour", "day", "month"]
WINDOWS: tuple[Window, ...] = ("hour", "day", "month")

#: Keys outlive their window by this much, so late pushes and clock skew between
#: pods and the Redis server never drop a count that is still being read.
KEY_MARGIN_SECONDS = 3600.0

_FIELD: dict[Window, str] = {"hour": "usdPerHour", "day": "usdPerDay", "month": "usdPerMonth"}


# ---------------------------------------------------------------------------------------
# calendar windows


@dataclass(frozen=True, slots=True)
class WindowSpan:
    """One calendar window: ``id`` names it in Redis keys (``d2026-11-25``)."""

    kind: Window
    id: str
    start: float
    end: float


def window_span(kind: Window, now: float) -> WindowSpan:
    """The calendar UTC ``kind`` window that contains ``now`` (a Unix timestamp)."""
    dt = datetime.fromtimestamp(now, UTC)
    if kind == "hour":
        start = dt.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
        wid = start.strftime("h%Y-%m-%dT%H")
    elif kind == "day":
        start = dt.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
        wid = start.strftime("d%Y-%m-%d")
    else:
        start = dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        wid = start.strftime("m%Y-%m")
    return WindowSpan(kind, wid, start.timestamp(), end.timestamp())


def budget_window(route: CompiledRoute) -> tuple[Window, float] | None:
    """The route's window kind and USD limit, or None when it has no budget."""
    b = route.budget
    if b is None:
        return None
    if b.usd_per_hour is not None:
        return "hour", b.usd_per_hour
    if b.usd_per_day is not None:
        return "day", b.usd_per_day
    if b.usd_per_month is not None:
        return "month", b.usd_per_month
    return None  # the Budget model forbids this; stay total anyway


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _usd_limit(x: float) -> str:
    """``50.00`` for cents-round limits, full precision for sub-cent ones (``0.005``)."""
    return f"{x:.2f}" if round(x, 2) == x else f"{x:.6g}"


# ---------------------------------------------------------------------------------------
# the answer the dispatcher reads


class BudgetState(NamedTuple):
    """A route's budget in the current window, as the dispatcher and ``/status`` see it.

    A NamedTuple rather than a frozen dataclass: about four times cheaper to
    build.  Requests under budget don't build one (``BudgetBook.exhausted``).
    """

    route: str
    window: Window
    window_start: float
    resets_at: float
    limit_usd: float
    spent_usd: float
    remaining_usd: float
    action: BudgetAction
    exhausted: bool

    def message(self) -> str:
        """What happened and what to do about it, for the 429 body and the warning log."""
        return (
            f'route "{self.route}" spent ${self.spent_usd:.4f} of its '
            f"${_usd_limit(self.limit_usd)}/{self.window} budget (action {self.action.value}); "
            f"resets at {_iso(self.resets_at)}; raise spec.budget.{_FIELD[self.window]} or wait"
        )


# ---------------------------------------------------------------------------------------
# the book


class _Counter:
    """One route's spend in one window.

    ``local`` is everything this pod spent; ``pending`` the part not yet pushed to
    Redis; ``shared`` the namespace total Redis last reported (our pushed part
    included).  The best estimate is ``shared + pending`` — never less than
    ``local``, so a Redis that lost its data still enforces at least per pod.
    """

    __slots__ = ("end", "local", "pending", "shared")

    def __init__(self, end: float) -> None:
        self.end = end
        self.local = 0.0
        self.pending = 0.0
        self.shared = 0.0

    def spent(self) -> float:
        return max(self.shared + self.pending, self.local)


class _Hot(NamedTuple):
    """A route's counters for the current windows: the one its limit applies to, and all."""

    limiting: _Counter
    limit: float
    counters: tuple[_Counter, ...]


class BudgetBook:
    """Spend per route and calendar window; per pod, or shared through Redis.

    ``state``/``spend``/``remaining``/``alert_due`` are synchronous and safe to
    call before :meth:`start` (Redis mode then counts locally until the first
    sync).  In Redis mode call ``await start()`` once the event loop runs and
    ``await close()`` on shutdown (it pushes what is still pending).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        namespace: str = "local",
        *,
        redis_password: str | None = None,
        redis_ca_file: str | None = None,
        clock: Callable[[], float] = time.time,
        sync_interval: float = 1.0,
        redis_timeout: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        if sync_interval <= 0:
            raise ValueError("sync_interval must be positive")
        self.redis_url = redis_url
        # from a Secret (MODELROUTE_REDIS_PASSWORD via secretKeyRef), never in the URL or args
        self._redis_password = redis_password
        # a private CA for rediss:// (chart: sidecar.redis.caBundle, mounted from a ConfigMap
        # or Secret); None: the system's trust store.  A path, read at each connect, so a
        # rotated CA bundle is picked up on the next reconnect.
        self.redis_ca_file = redis_ca_file
        self.namespace = namespace
        self.clock = clock
        self.sync_interval = sync_interval
        self.redis_timeout = redis_timeout
        self.max_backoff = max_backoff
        self.redis_connected = False
        self.redis_error: str | None = None
        self.syncs = 0
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._routes: dict[str, CompiledRoute] = {}  # what remaining()/states() report
        self._observed = False  # once observe() names the routes, requests don't add any
        self._alerted: set[tuple[str, str]] = set()
        # route name → (the route, the windows it was worked out for, its counters): what
        # the per-request check and charge read, rebuilt when either changes (_hot)
        self._hot: dict[str, tuple[CompiledRoute, dict[Window, WindowSpan], _Hot | None]] = {}
        # The three current windows, valid while hour_start <= now < hour_end (day and
        # month boundaries fall on hour boundaries in UTC).
        self._spans: dict[Window, WindowSpan] = {}
        self._span_from = math.inf
        self._span_to = -math.inf
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()  # one push at a time, or a delta could be pushed twice
        self._stop = asyncio.Event()

    # -- hot path ----------------------------------------------------------------------

    def state(self, route: CompiledRoute) -> BudgetState | None:
        """The route's budget now, or None when it has none.  Pure dictionary work."""
        bw = budget_window(route)
        if bw is None:
            return None
        kind, limit = bw
        assert route.budget is not None
        if not self._observed:
            self._routes[route.name] = route
        span = self._current(self.clock())[kind]
        counter = self._counter(route.name, span)
        spent = counter.spent()
        return BudgetState(
            route=route.name,
            window=kind,
            window_start=span.start,
            resets_at=span.end,
            limit_usd=limit,
            spent_usd=spent,
            remaining_usd=max(0.0, limit - spent),
            action=route.budget.action,
            exhausted=spent >= limit,
        )

    def exhausted(self, route: CompiledRoute) -> BudgetState | None:
        """The route's state if its budget is spent, else None: the check every request makes.

        The same verdict as ``state(route).exhausted``; the state is only built
        when it is, so a request under budget pays two lookups and a compare.
        """
        hot = self._hot_counters(route)
        if hot is None or hot.limiting.spent() < hot.limit:
            return None
        return self.state(route)

    def spend(self, route: CompiledRoute, usd: float) -> None:
        """Add ``usd`` to the route's current windows.  No-op without a budget or for usd <= 0."""
        if route.budget is None or not (usd > 0 and math.isfinite(usd)):
            return
        hot = self._hot_counters(route)
        if hot is None:
            return
        shared = self.redis_url is not None
        for c in hot.counters:
            c.local += usd
            if shared:
                c.pending += usd

    def _hot_counters(self, route: CompiledRoute) -> _Hot | None:
        """The route's counters in the current windows, worked out once per route and hour.

        Valid while the route object and the window spans are the ones they were
        found for: a new table or the next hour (whose ``_current`` builds new
        spans and prunes the old counters) finds them again.
        """
        spans = self._current(self.clock())
        found = self._hot.get(route.name)
        if found is not None and found[0] is route and found[1] is spans:
            return found[2]
        if not self._observed:
            self._routes[route.name] = route
        bw = budget_window(route)
        hot = None
        if bw is not None:
            counters = tuple(self._counter(route.name, span) for span in spans.values())
            hot = _Hot(self._counter(route.name, spans[bw[0]]), bw[1], counters)
        self._hot[route.name] = (route, spans, hot)
        return hot

    def alert_due(self, route: CompiledRoute) -> bool:
        """True exactly once per route and window: the first call that finds the budget exhausted.

        Whatever the action; the dispatcher uses it to log one warning per window
        (and count it) instead of one per request.
        """
        st = self.state(route)
        if st is None or not st.exhausted:
            return False
        key = (st.route, self._current(self.clock())[st.window].id)
        if key in self._alerted:
            return False
        self._alerted.add(key)
        return True

    # -- views ---------------------------------------------------------------------------

    def observe(self, routes: Iterable[CompiledRoute]) -> None:
        """Tell the book which routes the live table has (call on every table load).

        Optional: without it the book learns routes from ``state``/``spend``.  With
        it, ``remaining()`` follows the table: it drops routes that were removed or
        lost their budget (even while requests started on the old table finish) and
        reports new ones before their first request, and in Redis mode the next sync
        already pulls their shared totals.  Spend is kept either way.
        """
        self._routes = {r.name: r for r in routes if r.budget is not None}
        self._observed = True
        self._hot.clear()  # routes of the old table are found again (or never)
        spans = self._current(self.clock())
        for r in self._routes.values():
            bw = budget_window(r)
            if bw is not None:
                self._counter(r.name, spans[bw[0]])

    def states(self) -> list[BudgetState]:
        """Every known budgeted route's state (for ``/status``)."""
        out = [self.state(r) for r in list(self._routes.values())]
        return [s for s in out if s is not None]

    def remaining(self) -> dict[str, float]:
        """Route name → USD left in its current window (the ``budget_remaining_usd`` gauge)."""
        return {s.route: s.remaining_usd for s in self.states()}

    # -- internals -----------------------------------------------------------------------

    def _current(self, now: float) -> dict[Window, WindowSpan]:
        if self._span_from <= now < self._span_to:
            return self._spans
        self._spans = {k: window_span(k, now) for k in WINDOWS}
        self._span_from, self._span_to = self._spans["hour"].start, self._spans["hour"].end
        self._prune(now)
        return self._spans

    def _counter(self, route: str, span: WindowSpan) -> _Counter:
        key = (route, span.id)
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = _Counter(span.end)
        return c

    def _prune(self, now: float) -> None:
        """Forget ended windows once nothing of them is left to push."""
        live = {s.id for s in self._spans.values()}
        for key, c in list(self._counters.items()):
            if c.end <= now and c.pending == 0:
                del self._counters[key]
        self._alerted = {k for k in self._alerted if k[1] in live}

    def _key(self, route: str, window_id: str) -> str:
        return f"modelroute:budget:{self.namespace}:{route}:{window_id}"

    # -- Redis ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect lazily and start the sync task (no-op in per-pod mode).  Never raises for Redis."""
        if self.redis_url is None or self._task is not None:
            return
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # only a rediss:// URL comes with a CA file (ProxyConfig.check)
        tls: dict[str, Any] = {"ssl_ca_certs": self.redis_ca_file} if self.redis_ca_file else {}
        # No client-side retries: this task owns backoff, and a retried INCRBYFLOAT
        # batch must never be sent twice behind our back.
        self._client = Redis.from_url(
            self.redis_url,
            password=self._redis_password or None,  # None: the URL's own, if it has one
            socket_timeout=self.redis_timeout,
            socket_connect_timeout=self.redis_timeout,
            retry=Retry(NoBackoff(), 0),
            **tls,
        )
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="modelroute-budget-sync")

    async def close(self) -> None:
        """Stop syncing, push what is still pending (bounded by ``redis_timeout``), disconnect."""
        task, self._task = self._task, None
        if task is not None:
            # The stop flag, not only the cancel, ends the loop: redis-py's pipeline
            # can absorb a cancellation that lands mid-command (seen with redis-py 8.1).
            self._stop.set()
            task.cancel()
            await asyncio.wait({task}, timeout=2 * self.redis_timeout + 1)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the loop never raises, but don't warn if it did
        if self._client is not None:
            await self.sync()
            await self._client.aclose()
            self._client = None
        self.redis_connected = False

    async def sync(self) -> bool:
        """Push pending deltas and pull shared totals now; True on success, never raises."""
        if self._client is None:
            return False
        try:
            async with asyncio.timeout(2 * self.redis_timeout), self._sync_lock:
                await self._sync_once(self._client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any Redis, socket or timeout error: keep serving per pod
            was = self.redis_connected or self.redis_error is None
            self.redis_connected = False
            self.redis_error = _describe(exc, self.redis_ca_file)[:300]
            if was:
                log.warning(
                    "budget counters: Redis %s unreachable (%s); enforcing per pod until it is back",
                    _redact(self.redis_url),
                    self.redis_error,
                )
            return False
        if not self.redis_connected:
            if self.redis_error is not None:
                log.info("budget counters: Redis is back; budgets are shared again")
            self.redis_connected = True
            self.redis_error = None
        self.syncs += 1
        return True

    async def _sync_once(self, client: Redis) -> None:
        now = self.clock()
        spans = self._current(now)
        live = {s.id for s in spans.values()}
        pushes: list[tuple[tuple[str, str], _Counter, float]] = []
        pulls: list[tuple[tuple[str, str], _Counter]] = []
        for key, c in self._counters.items():
            if c.pending > 0:
                pushes.append((key, c, c.pending))
            elif key[1] in live:
                pulls.append((key, c))
        if not pushes and not pulls:
            await client.ping()
            return
        # MULTI/EXEC: the batch applies whole or not at all, so a failed push is retried
        # without double counting (except if the link drops after EXEC ran: see docs).
        async with client.pipeline(transaction=True) as pipe:
            for (route, wid), c, delta in pushes:
                k = self._key(route, wid)
                pipe.incrbyfloat(k, delta)
                pipe.expireat(k, int(c.end + KEY_MARGIN_SECONDS))
            for (route, wid), _ in pulls:
                pipe.get(self._key(route, wid))
            results = await pipe.execute()
        for i, (_, c, delta) in enumerate(pushes):
            c.pending -= delta  # spends made while we awaited stay pending
            if abs(c.pending) < 1e-12:
                c.pending = 0.0
            c.shared = float(results[2 * i])
        base = 2 * len(pushes)
        for j, (_, c) in enumerate(pulls):
            raw = results[base + j]
            c.shared = float(raw) if raw is not None else 0.0
        self._prune(now)

    async def _run(self) -> None:
        backoff = self.sync_interval
        while not self._stop.is_set():
            if await self.sync():
                backoff = delay = self.sync_interval
            else:
                # Jittered, doubling up to max_backoff, so a fleet of sidecars doesn't
                # hammer a recovering Redis in lockstep.
                delay = random.uniform(self.sync_interval, max(backoff, self.sync_interval))
                backoff = min(backoff * 2, self.max_backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)


def _describe(exc: BaseException, ca_file: str | None) -> str:
    """What went wrong talking to Redis, phrased for ``/status`` and the log.

    A TLS verification failure is the one a person must act on (wrong CA bundle,
    or a server certificate for another name), and redis-py reports it as a
    generic ``ConnectionError``: say so, and name the CA that was used.
    """
    trust = f"the CA bundle {ca_file}" if ca_file else "the system's trusted CAs"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            why = seen.verify_message or seen.reason or str(seen)
            return f"TLS: the Redis server's certificate is not trusted by {trust} ({why})"
        if ca_file and isinstance(seen, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return f"TLS: the CA bundle {ca_file} can't be read ({seen.strerror})"
        if ca_file and isinstance(seen, ssl.SSLError) and seen.library in ("X509", "PEM"):
            return f"TLS: the CA bundle {ca_file} holds no usable certificate ({seen.reason})"
        seen = seen.__cause__ or seen.__context__
    text = f"{type(exc).__name__}: {exc}"
    if "CERTIFICATE_VERIFY_FAILED" in text:  # the error came as text only
        return f"TLS: the Redis server's certificate is not trusted by {trust} ({text})"
    return text


def _redact(url: str | None) -> str:
    """The Redis URL without a password, for logs."""
    if url is None:
        return "-"
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"
