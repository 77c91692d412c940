"""Endpoint health: outlier ejection on local-origin failures, and the verdicts of active probes.

An *endpoint* is one provider's base URL in one region (``provider@region``).
Whether a connection to it can be made is a fact about the network path,
not about a model or a route, so it is judged once here and shared by every
route and model that uses the endpoint: a region that refuses or swallows
connections leaves every plan at once, however rarely a target is used.

The rules (Envoy's ``consecutive_local_origin_failure`` and active health
checking, on one state per endpoint):

* a *local-origin failure* is one the network gives before any upstream
  answered: a refused or reset connect, a connect that timed out, a TLS or
  DNS failure, a failed probe.  Any answer (even a 5xx: that is the
  breaker's business) ends the streak;
* ``consecutiveLocalOriginFailures`` of them in a row – or
  ``unhealthyThreshold`` failed probes in a row – eject the endpoint;
* an ejection lasts at least ``baseEjectionMs`` × the ejection multiplier
  (capped at ``maxEjectionMs``); the multiplier grows by one with each
  ejection and drops by one for every ``10 × baseEjectionMs`` the endpoint
  stays in rotation, so a flapping region is rested longer each time
  instead of oscillating;
* with probes on, an ejected endpoint comes back only after
  ``healthyThreshold`` probe successes in a row (and the minimum time);
  with probes off, when the ejection time is over.

Pure: the clock (``now``, monotonic seconds) and the random source are
passed in; :mod:`.probes` runs the probes and reports here.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from modelroute.resources import HealthCheck, OutlierDetection

from .keys import endpoint_key
from .table import CompiledProvider, CompiledTable

DECAY_BASES = 10  # the multiplier drops by one per this many baseEjectionMs in rotation
FIRST_PROBE_SHARE = 0.1  # a new endpoint's first probe within this share of the interval


class ErrorKind(StrEnum):
    """Why an endpoint last failed: the ``kind`` label and ``/status``'s ``lastError``."""

    CONNECT_REFUSED = "connect_refused"  # refused, reset, unreachable, DNS, TLS
    CONNECT_TIMEOUT = "connect_timeout"  # a request's connect that did not complete in time
    REQUEST_UNACKED = "request_unacked"  # a written request the peer's TCP never acknowledged
    PATH_DIED = "path_died"  # keepalive probes unanswered while an acknowledged request waited
    PROBE_TIMEOUT = "probe_timeout"
    PROBE_REFUSED = "probe_refused"  # the probe's connect (or TLS) failed at once
    PROBE_STATUS = "probe_status"  # the HTTP probe was answered with a 5xx


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    outlier: OutlierDetection
    check: HealthCheck
    # part of "the same endpoint": a reload that points the region elsewhere (a base URL
    # fixed, a host replaced) starts afresh instead of keeping the old host's ejection
    base_url: str = ""


@dataclass(slots=True)
class EndpointHealth:
    """One endpoint's state; read by the router per request, so checks are a few comparisons."""

    settings: EndpointSettings
    consecutive: int = 0  # local-origin failures in a row (requests and probes)
    probe_failures: int = 0  # probe failures in a row
    probe_successes: int = 0  # probe successes in a row
    ejected: bool = False
    ejected_at: float = 0.0
    ejected_until: float = 0.0
    multiplier: int = 0
    ejections: int = 0
    returned_at: float | None = None
    reason: str = ""  # why it was ejected (for /status and /explain)
    last_error: ErrorKind | None = None
    last_error_detail: str = ""
    last_error_at: float | None = None
    last_answered_at: float | None = None  # the last answer a request had here (any status)
    next_probe_at: float = 0.0
    probing: bool = False
    probes: int = 0
    probe_errors: int = 0
    probes_not_sent: int = 0  # refused by the guard (the configuration's fault): no verdict
    probed: bool = False  # a prober runs for it (else an ejection ends by time alone)

    def available(self, now: float) -> bool:
        """May requests be sent here (outside panic mode)?"""
        if not self.ejected:
            return True
        if now < self.ejected_until:
            return False
        check = self.settings.check
        if not (check.enabled and self.probed):
            return True
        return self.probe_successes >= check.healthy_threshold

    def settle(self, now: float) -> None:
        """Turn an ejection that is over into a return to rotation (what :meth:`available` says)."""
        if self.ejected and self.available(now):
            self.ejected = False
            self.returned_at = now
            self.consecutive = 0
            self.probe_failures = 0
            self.reason = ""

    # -- evidence ---------------------------------------------------------------------------

    def local_failure(self, kind: ErrorKind, detail: str, now: float) -> bool:
        """A request's connect failed; True if this ejected the endpoint."""
        self._note(kind, detail, now)
        self.settle(now)
        if self.ejected:  # still down (a panic request found out): the probes start over
            self.probe_successes = 0
            return False
        self.consecutive += 1
        limit = self.settings.outlier.consecutive_local_origin_failures
        if self.settings.outlier.enabled and self.consecutive >= limit:
            self._eject(now, f"{self.consecutive} local-origin failures in a row (last: {kind})")
            return True
        return False

    def answered(self, now: float) -> None:
        """An upstream answered a request (any status): the connect streak ends."""
        self.last_answered_at = now
        self.settle(now)
        if not self.ejected:
            self.consecutive = 0

    def answered_while_out(self, now: float) -> None:
        """A request panic mode sent here while ejected was answered: one probe success.

        An answer proves the path at least as well as a connect probe (which a
        server that accepts and never answers passes), so it counts towards
        ``healthyThreshold`` like one; the minimum ejection time still holds.
        Without it a healed endpoint that answered every request panic sent it
        stayed out until the probes' own count came round – with every request
        meanwhile in panic, its retries charged to the budget.
        """
        self.answered(now)
        if self.ejected:
            self.probe_successes += 1
            self.settle(now)

    def probe_result(
        self,
        ok: bool,
        now: float,
        kind: ErrorKind | None = None,
        detail: str = "",
        started: float | None = None,
    ) -> bool:
        """A probe ended; True if this ejected the endpoint.

        A failed probe that ``started`` before a request was answered here is
        stale: the answer is the newer evidence (a probe sent into the dark
        times out after the path healed), so it is counted but judges nothing.
        """
        self.probing = False
        self.probes += 1
        if (
            not ok
            and started is not None
            and self.last_answered_at is not None
            and self.last_answered_at >= started
        ):
            return False
        if ok:
            self.probe_failures = 0
            self.probe_successes += 1
            if not self.ejected:
                self.consecutive = 0
            self.settle(now)
            return False
        assert kind is not None
        self.probe_errors += 1
        self._note(kind, detail, now)
        self.probe_successes = 0
        self.probe_failures += 1
        if self.ejected:
            return False
        self.consecutive += 1
        outlier = self.settings.outlier
        if self.probe_failures >= self.settings.check.unhealthy_threshold or (
            outlier.enabled and self.consecutive >= outlier.consecutive_local_origin_failures
        ):
            self._eject(now, f"{self.probe_failures} failed probe(s) in a row (last: {kind})")
            return True
        return False

    def probe_not_sent(self) -> None:
        """A probe the sidecar refused to send (the guard): no verdict about the network either way."""
        self.probing = False
        self.probes_not_sent += 1

    # -- probes --------------------------------------------------------------------------------

    def schedule_next(self, now: float, rng: random.Random) -> None:
        """The next probe: ``intervalMs`` shortened by up to ``jitterPercent``, never longer."""
        check = self.settings.check
        shorter = check.jitter_percent / 100 * rng.random()
        self.next_probe_at = now + check.interval_ms / 1000 * (1 - shorter)

    def suspect(self, now: float) -> None:
        """A request saw trouble that isn't a verdict (a first-byte timeout): probe now."""
        if self.settings.check.enabled and self.probed and not self.probing:
            self.next_probe_at = min(self.next_probe_at, now)

    # -- internals -----------------------------------------------------------------------------

    @property
    def last_error_slow(self) -> bool:
        """Did the last failure take a timeout to learn (a black hole, not a refusal)?"""
        return self.last_error in (ErrorKind.CONNECT_TIMEOUT, ErrorKind.PROBE_TIMEOUT)

    def _note(self, kind: ErrorKind, detail: str, now: float) -> None:
        self.last_error = kind
        self.last_error_detail = detail[:200]
        self.last_error_at = now

    def _eject(self, now: float, reason: str) -> None:
        outlier = self.settings.outlier
        base = outlier.base_ejection_ms / 1000
        if self.returned_at is not None:  # time in rotation since the last one earns decay
            decayed = int((now - self.returned_at) / (base * DECAY_BASES))
            self.multiplier = max(0, self.multiplier - decayed)
        self.multiplier += 1
        self.ejected = True
        self.ejected_at = now
        self.ejected_until = now + min(base * self.multiplier, outlier.max_ejection_ms / 1000)
        self.ejections += 1
        self.probe_successes = 0
        self.reason = reason


def endpoints_in(table: CompiledTable) -> dict[str, tuple[CompiledProvider, str]]:
    """``provider@region`` → (provider, region) for every endpoint a route (or mirror) can use."""
    out: dict[str, tuple[CompiledProvider, str]] = {}
    providers = {p.name: p for p in table.providers}
    for route in table.routes:
        targets = [*route.targets, *([route.mirror.target] if route.mirror else [])]
        for target in targets:
            provider = providers.get(target.provider)
            if provider is None:
                continue
            for region in target.regions:
                out.setdefault(endpoint_key(provider.name, region), (provider, region))
    return out


def settings_of(provider: CompiledProvider, region: str | None = None) -> EndpointSettings:
    """The endpoint's settings; with ``region``, its base URL too (what the sidecar applies)."""
    base_url = provider.endpoint(region).base_url if region is not None else ""
    return EndpointSettings(provider.outlier_detection, provider.health_check, base_url)


@dataclass
class EndpointBook:
    """Every endpoint in the current table, keyed ``provider@region``; the rest are forgotten."""

    endpoints: dict[str, EndpointHealth] = field(default_factory=dict)
    probed: bool = False  # a prober (probes.py) runs for this book

    def set_probed(self, probed: bool) -> None:
        self.probed = probed
        for e in self.endpoints.values():
            e.probed = probed

    def configure(
        self, wanted: Iterable[tuple[str, EndpointSettings]], now: float, rng: random.Random
    ) -> None:
        """Apply a table: keep the state of endpoints whose settings didn't change."""
        fresh: dict[str, EndpointHealth] = {}
        for key, settings in wanted:
            found = self.endpoints.get(key)
            if found is None or found.settings != settings:
                found = EndpointHealth(settings)
                interval = settings.check.interval_ms / 1000
                found.next_probe_at = now + interval * FIRST_PROBE_SHARE * rng.random()
            found.probed = self.probed
            fresh[key] = found
        self.endpoints = fresh

    def get(self, key: str) -> EndpointHealth | None:
        return self.endpoints.get(key)

    def available(self, key: str, now: float) -> bool:
        found = self.endpoints.get(key)
        return found is None or found.available(now)

    def due(self, now: float) -> list[str]:
        """Endpoints whose probe is due now (and not already out)."""
        return [
            key
            for key, e in self.endpoints.items()
            if e.settings.check.enabled and not e.probing and e.next_probe_at <= now
        ]

    def next_due(self) -> float | None:
        """When the next probe falls due (monotonic), or None when nothing is probed."""
        times = [
            e.next_probe_at
            for e in self.endpoints.values()
            if e.settings.check.enabled and not e.probing
        ]
        return min(times) if times else None
