"""One upstream attempt: its pool trip, what it sends, and how its verdict feeds health.

The loop (:mod:`.attempts`) decides *which* candidate and *when*; this layer
is what every attempt does the same way whichever loop started it – the
attempt record, the body and headers it sends, the half-open probe claim,
the health feedback of its answer or failure (breaker, endpoint, latency,
Retry-After holds) – so the loop reads as the order of attempts alone.
Below it, :mod:`.commit` sends or streams the answer chosen.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from ..attempt import Failed, Outcome, Ready, run_attempt
from ..credentials import MissingCredentials
from ..events import AttemptRecord
from ..health import Breaker, CircuitState
from ..outcomes import AttemptEnd, Failure
from ..router import Candidate
from ..table import CompiledTarget
from ..upstream import PoolWait
from . import policy
from .commit import Commit

# Request headers passed upstream besides the body; the client's Authorization never is
# (unless a route sets forwardClientAuth).
_PASSED_REQUEST_HEADERS = ("accept", "accept-language", "x-request-id", "traceparent", "tracestate")


class OneAttempt(Commit):
    """What each attempt does, under the loop that orders them (see :mod:`.state`)."""

    def _pool_wait(self, cand: Candidate) -> PoolWait:
        """An attempt's trip through the pool, watched for silence at the endpoint's pace."""
        wait = PoolWait()
        wait.silence_watch = policy.silence_watch(
            self.route.connect_racing,
            self.d.health.connect_times.get(cand.endpoint),
            cand.provider.connect_timeout_ms / 1000,
        )
        return wait

    def _ejected(self, cand: Candidate) -> None:
        """``cand``'s endpoint was just ejected: its kept-alive connections go too.

        A connection kept from before the fault would be handed to the next
        request there (panic mode, or once the ejection ends) and written into
        the same silence; a new connect is raced instead.
        """
        self.d.pool.pool(cand.provider).drop_idle(cand.base_url)

    def _begin(
        self,
        cand: Candidate,
        previous: Failed | None,
        *,
        hedge: bool,
        reason: str | None = None,
    ) -> AttemptRecord:
        record = self.record
        self.tried.append(cand)
        attempt = AttemptRecord(
            number=len(record.attempts) + 1,
            provider=cand.target.provider,
            model=cand.target.model,
            upstream_model=cand.target.upstream_model,
            region=cand.region,
            server_address=cand.base_url,
            started=time.perf_counter(),
            fallback_reason=(
                reason
                if reason
                else "hedge"
                if hedge
                else previous.kind.value
                if previous
                else record.extra.get("skipped_reason")
            ),
            hedge=hedge,
        )
        record.attempts.append(attempt)
        self.d.observers.attempt_started(record, attempt)
        return attempt

    async def _attempt(self, cand: Candidate, wait: PoolWait) -> Outcome:
        health = self.d.health
        now = time.monotonic()
        breaker = health.breaker(self.route.name, cand.key, self.route.circuit_breaker)
        if breaker.state_at(now) is CircuitState.HALF_OPEN and breaker.acquire(now):
            self.probes.add(cand.key)  # this attempt is the one half-open probe
        region = health.region(cand.target.provider, cand.region)
        region_out = False
        if region is not None:
            ejected = region.ejected_at is not None
            if not region.acquire(now):
                region_out = True  # ejected, and the failback probe is another request's
            elif ejected:
                self.region_claims.add((cand.target.provider, cand.region))  # the failback probe
        self._gates_out(cand, breaker, region_out, now)
        try:
            headers = self._upstream_headers(cand)
        except MissingCredentials as exc:
            self._release_claims(cand)
            return Failed(
                cand, Failure.CREDENTIALS, f"no key for provider {cand.provider.name}: {exc}"
            )
        payload = self._payload(cand.target)
        remaining = max(0.001, self.deadline - time.perf_counter())
        first_byte = min(self.route.timeouts.first_byte_ms / 1000, remaining)
        try:
            return await run_attempt(
                self.d.pool.pool(cand.provider),
                cand,
                cand.base_url,
                self.path,
                payload,
                headers,
                stream=self.features.stream,
                first_byte_timeout=first_byte,
                total_timeout=remaining,
                wait=wait,
            )
        except asyncio.CancelledError:
            self._release_claims(cand)
            raise

    def _release_claims(self, cand: Candidate) -> None:
        """Give back the probes this request claimed for ``cand`` (never another request's).

        A breaker's half-open probe and a region's failback probe are each one
        request at a time: one claimed and never given back would keep the
        candidate (or the whole region) out of rotation for good.
        """
        health = self.d.health
        if cand.key in self.probes:
            self.probes.discard(cand.key)
            health.breaker(self.route.name, cand.key, self.route.circuit_breaker).release()
        claim = (cand.target.provider, cand.region)
        if claim in self.region_claims:
            self.region_claims.discard(claim)
            region = health.region(*claim)
            if region is not None:
                region.release()

    def _release_all_claims(self) -> None:
        """At the request's end: whatever probe it still holds goes back (a safety net)."""
        health = self.d.health
        for key in self.probes:
            health.breaker(self.route.name, key, self.route.circuit_breaker).release()
        self.probes.clear()
        for claim in self.region_claims:
            region = health.region(*claim)
            if region is not None:
                region.release()
        self.region_claims.clear()

    def _gates_out(self, cand: Candidate, breaker: Breaker, region_out: bool, now: float) -> None:
        """Note which gates keep ``cand`` out as it is sent (panic mode sends there anyway).

        Its breaker open (and the half-open probe not this request's), its region
        ejected (the failback probe not this request's), its endpoint ejected:
        an answer to this attempt is then the verdict each of them waits for
        (:meth:`_answered_while_out`).  Noted at send time, so a request sent
        before a breaker opened that answers afterwards closes nothing.
        """
        breaker_out = cand.key not in self.probes and not breaker.available(now)
        endpoint = self.d.health.endpoints.get(cand.endpoint)
        endpoint_out = endpoint is not None and not endpoint.available(now)
        if breaker_out or region_out or endpoint_out:
            self.sent_out[cand.key] = (breaker_out, region_out, endpoint_out)

    def _answered_while_out(self, cand: Candidate, breaker: Breaker, now: float) -> bool:
        """``cand`` answered an attempt sent while out: back in rotation by each gate's rule.

        Returns whether its endpoint was out (its answer then counts as a probe
        success there, :meth:`~..endpoints.EndpointHealth.answered_while_out`).
        """
        out = self.sent_out.pop(cand.key, None)
        if out is None:
            return False
        breaker_out, region_out, endpoint_out = out
        if breaker_out:
            breaker.answered_while_out(now)
        region = self.d.health.region(cand.target.provider, cand.region)
        if region_out and region is not None:
            region.answered_while_out(now)
        return endpoint_out

    def _payload(self, target: CompiledTarget) -> bytes:
        body = dict(self.body)
        body["model"] = target.upstream_model
        return orjson.dumps(body)

    def _upstream_headers(self, cand: Candidate) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        for name in _PASSED_REQUEST_HEADERS:
            value = self.headers.get(name)
            if value is not None:
                headers[name] = value
        if self.route.forward_client_auth and "authorization" in self.headers:
            headers["Authorization"] = self.headers["authorization"]
        else:
            headers.update(self.d.credentials.headers_for(cand.provider.credentials))
        return headers

    def _record_ready(self, attempt: AttemptRecord, ready: Ready) -> None:
        attempt.ttfb = ready.ttfb
        attempt.status = ready.response.status
        now = time.monotonic()
        health = self.d.health
        cand = ready.candidate
        probe = cand.key in self.probes
        self.probes.discard(cand.key)
        breaker = health.breaker(self.route.name, cand.key, self.route.circuit_breaker)
        breaker.record_success(now, probe=probe)
        endpoint_out = self._answered_while_out(cand, breaker, now)
        health.hedge_won(cand.key)
        health.answered(cand.key)
        region = health.region(cand.target.provider, cand.region)
        self.region_claims.discard((cand.target.provider, cand.region))  # its verdict is in
        if region is not None:
            region.record(True, ready.ttfb, now)
        endpoint = health.endpoints.get(cand.endpoint)
        if endpoint is not None:
            if endpoint_out:
                endpoint.answered_while_out(now)
            else:
                endpoint.answered(now)
        health.target_ttft(cand.target_key).add(ready.ttfb, now)
        if not self.features.stream:
            health.target_latency(cand.target_key).add(ready.ttfb, now)

    def _record_failure(self, attempt: AttemptRecord, failed: Failed) -> None:
        attempt.result = failed.kind
        attempt.status = failed.status
        attempt.detail = failed.detail
        attempt.duration = time.perf_counter() - attempt.started
        now = time.monotonic()
        health = self.d.health
        cand = failed.candidate
        self.sent_out.pop(cand.key, None)
        breaker = health.breaker(self.route.name, cand.key, self.route.circuit_breaker)
        region = health.region(cand.target.provider, cand.region)
        if failed.kind.upstream_unhealthy:
            self.probes.discard(cand.key)
            self.region_claims.discard((cand.target.provider, cand.region))
            breaker.record_failure(now)
            health.failed(cand.key, now, slow=failed.kind is Failure.TIMEOUT)
            if region is not None:
                region.record(False, None, now)
        else:
            self._release_claims(cand)
        endpoint = health.endpoints.get(cand.endpoint)
        if endpoint is not None:  # shared by every route and model there (endpoints.py)
            if failed.local_origin is not None:
                if endpoint.local_failure(failed.local_origin, failed.detail, now):
                    self._ejected(cand)
            elif failed.status is not None:
                endpoint.answered(now)
            elif failed.kind is Failure.TIMEOUT:  # connected, then silence: probe it now
                endpoint.suspect(now)
        if failed.retry_after is not None and failed.kind in (
            Failure.RATE_LIMITED,
            Failure.SERVER_ERROR,
        ):
            health.hold(cand.key, now + failed.retry_after)
        self.d.observers.attempt_finished(self.record, attempt)

    def _end_attempt(self, attempt: AttemptRecord, result: AttemptEnd) -> None:
        """An attempt that ends without a verdict of its own (cancelled, lost a hedge race)."""
        attempt.result = result
        attempt.duration = time.perf_counter() - attempt.started
        self.d.observers.attempt_finished(self.record, attempt)

    def _hedge_lost(self, attempt: AttemptRecord) -> None:
        """A candidate that only ever loses hedges is as good as down: open its breaker.

        A cancelled loser gives no verdict of its own, so without this a black-holed
        region behind a hedge never trips its breaker: every request pays the hedge
        delay and a hedge from the retry budget, and once the budget is spent,
        requests fail.  A healthy candidate with a slow tail still wins most of
        its races, and each win resets the streak.
        """
        key = attempt.candidate
        config = self.route.circuit_breaker
        if self.d.health.hedge_lost(key) >= config.failure_threshold:
            self.d.health.breaker(self.route.name, key, config).trip(time.monotonic())
