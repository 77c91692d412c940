"""The attempt loop: one request's attempts over its plan's candidates, until one answers.

One loop for both shapes: without a hedge it awaits each attempt in place
(no task, no ``asyncio.wait``: most routes don't hedge and that overhead
would land on every request); with one, a second attempt may start while
the first is still waiting.  Both pass the same gates – retry budget,
backoff, Retry-After holds, breakers – and feed health back the same way:
each attempt is Envoy AI Gateway's "upstream per attempt" under one router
per request.  Which candidate comes next and how long to wait are decided
by :mod:`.policy`, with the clock passed in; this module only acts on it.
"""

from __future__ import annotations

import asyncio
import functools
import time

from aiohttp import web

from .. import errors, retrysignal
from ..attempt import Failed, Outcome, Ready
from ..events import AttemptRecord
from ..health import RetryBudget
from ..outcomes import AttemptEnd, Failure
from ..router import Candidate, Plan
from ..upstream import PoolWait
from . import policy
from .one_attempt import OneAttempt


class AttemptLoop(OneAttempt):
    """The attempts of one request (see :mod:`.state` for the layers)."""

    # -- the loop ------------------------------------------------------------------------

    async def run(self, the_plan: Plan) -> web.StreamResponse:
        route = self.route
        health = self.d.health
        budget = health.retry_budget(route.name, route.retry.budget_ratio)
        budget.record_first(time.monotonic())
        candidates = self.candidates = the_plan.candidates
        self.reserve = the_plan.reserve
        max_attempts = route.retry.max_attempts
        retry_on = route.retry_kinds
        hedge_delay = self._hedge_delay(candidates[0])
        try:
            if hedge_delay is None and not self._may_race(candidates[0]):
                return await self._run_sequential(budget, max_attempts, retry_on)
            return await self._run_concurrent(budget, max_attempts, retry_on, hedge_delay)
        finally:
            self._release_all_claims()

    def _may_race(self, first: Candidate) -> bool:
        """Could the first attempt's connect be raced?  Only if it has one to make.

        Most requests ride a kept-alive connection: they take the sequential
        loop, with no task and no ``asyncio.wait`` on their way.
        """
        return (
            self.route.connect_racing.enabled
            and len(self.candidates) > 1
            and not self.d.pool.pool(first.provider).has_idle(first.base_url)
        )

    async def _run_concurrent(
        self,
        budget: RetryBudget,
        max_attempts: int,
        retry_on: frozenset[str],
        hedge_delay: float | None,
    ) -> web.StreamResponse:
        """Attempts that may overlap: a hedge after ``hedge_delay``, a racer after a late connect."""
        hedges_left = self.route.hedge.max_hedges if self.route.hedge and hedge_delay else 0
        next_index = 0
        attempts = 0
        last_failure: Failed | None = None
        hedge_at: float | None = None  # perf_counter when the hedge starts
        try:
            while True:
                if not self.in_flight:
                    if attempts >= max_attempts:
                        break
                    if attempts > 0 and not await self._may_retry(budget, attempts, last_failure):
                        break
                    cand, next_index = self._next_after(last_failure, next_index)
                    if cand is None or not await self._wait_for_hold(cand):
                        break
                    attempts += 1
                    self._start(cand, last_failure, hedge=False)
                    if hedge_delay is not None:
                        hedge_at = time.perf_counter() + hedge_delay
                now = time.perf_counter()
                if now >= self.deadline:
                    break
                hedge_now = (
                    hedge_at is not None
                    and hedges_left > 0
                    and attempts < max_attempts
                    and len(self.in_flight) == 1
                )
                race = self._next_race() if attempts < max_attempts else None
                wake = self.deadline
                if hedge_now and hedge_at is not None:
                    wake = min(wake, hedge_at)
                if race is not None:
                    wake = min(wake, race[1])
                waited_from = now
                done, _ = await asyncio.wait(
                    self.in_flight,
                    timeout=max(0.0, wake - now),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                self.record.upstream_wait += time.perf_counter() - waited_from
                self._set_aside_abandoned()
                if not done:
                    now = time.perf_counter()
                    if now >= self.deadline:
                        break  # total deadline
                    if race is not None and now >= race[1]:
                        next_index, started = self._race(race[0], next_index)
                        attempts += started
                    elif hedge_now and hedge_at is not None and now >= hedge_at:
                        next_index, started = self._hedge(budget, next_index)
                        attempts += started
                        hedges_left = hedges_left - 1 if started else 0
                    continue
                for task in done:
                    attempt = self.in_flight.pop(task, None)
                    if attempt is None:  # abandoned by a race meanwhile: set aside above
                        continue
                    self._forget(task)
                    outcome = task.result()
                    if isinstance(outcome, Ready):
                        try:
                            await self._cancel_rest(AttemptEnd.HEDGE_LOST)
                        except BaseException:  # the client left while the losers were cancelled
                            outcome.response.release()
                            self._end_attempt(attempt, AttemptEnd.CANCELLED)
                            raise
                        self._record_ready(attempt, outcome)
                        return await self._commit(attempt, outcome)
                    last_failure = outcome
                    if self._settle_failure(attempt, outcome, retry_on):
                        await self._cancel_rest(AttemptEnd.CANCELLED)
                        return self._passthrough(outcome)
                    if not outcome.kind.reached_upstream:
                        self._race_again()
        finally:
            await self._cancel_rest(AttemptEnd.CANCELLED)
        raise self._exhausted(attempts)

    # -- racing and hedging -------------------------------------------------------------

    def _busy_endpoints(self) -> set[str]:
        return {cand.endpoint for cand, _ in self.waits.values()}

    def _next_race(self) -> tuple[asyncio.Task[Outcome], float] | None:
        """The attempt whose connect deadline comes first, among those that may still be late.

        Attempts that got a connection (or were abandoned) leave the book here,
        so a request on a kept-alive connection is not woken for nothing twice.
        """
        best: tuple[asyncio.Task[Outcome], float] | None = None
        for task, at in list(self.race_at.items()):
            _, wait = self.waits.get(task, (None, None))
            if wait is None or wait.connected or wait.abandoned or wait.connect_seconds is not None:
                del self.race_at[task]
            elif best is None or at < best[1]:
                best = (task, at)
        return best

    def _race(self, late: asyncio.Task[Outcome], index: int) -> tuple[int, int]:
        """A connect outlived its deadline: start the next endpoint's attempt beside it.

        The late connect goes on (up to the provider's connect timeout); the
        first of the two to have a connection is the one that sends, the other
        is abandoned unsent (``_connected``).  Nothing extra reaches an
        upstream, so the retry budget is not charged; the racer is an attempt
        and counts against ``maxAttempts``.  Returns the plan index and how
        many attempts started (0 or 1).
        """
        self.race_at.pop(late, None)
        late_cand, wait = self.waits.get(late, (None, None))
        if late_cand is None or wait is None or not wait.in_connect or wait.abandoned:
            return index, 0  # it connected (or queued for a slot) in the meantime
        self._connect_late(late_cand)
        # nor to an endpoint that already refused this request's connect
        refused = {f.candidate.endpoint for f in self.failures if f.local_origin is not None}
        cand, new_index = self._elsewhere(late_cand, index, self._busy_endpoints() | refused)
        if cand is None or self.d.health.held_until(cand.key) > time.monotonic():
            return index, 0  # no other endpoint to race: the connect has its full timeout
        self._start(cand, None, hedge=False, reason="connect_race")
        return new_index, 1

    def _race_again(self) -> None:
        """A racer failed without reaching an upstream: race the late connects again, now.

        Otherwise a racer refused in a millisecond leaves the request waiting on the
        late connect's full timeout, with a healthy region next in the plan.  Only
        after such failures: one that reached an upstream is a retry, and retries
        pass the retry budget and backoff (nothing new starts until the loop is idle).
        """
        now = time.perf_counter()
        for task, (_, wait) in self.waits.items():
            if task in self.in_flight and wait.in_connect and not wait.abandoned:
                self.race_at[task] = min(self.race_at.get(task, now), now)

    def _connect_late(self, cand: Candidate) -> None:
        """A connect to ``cand``'s endpoint is late: suspicion, not a verdict.

        The endpoint is probed now, if probes run (``EndpointHealth.suspect``,
        as for a first-byte timeout).  Nothing counts as a failure: only the
        connect's own timeout does (``_abandoned_done``).
        """
        endpoint = self.d.health.endpoints.get(cand.endpoint)
        if endpoint is not None:
            endpoint.suspect(time.monotonic())

    def _hedge(self, budget: RetryBudget, index: int) -> tuple[int, int]:
        """No first byte after the hedge delay: the next candidate, at another endpoint if any.

        The attempt in flight may be waiting on a connection that went silent
        (kept alive, then black-holed): a hedge to the same endpoint would
        most likely wait on the same path, so another endpoint comes first.
        """
        avoid = self._busy_endpoints()
        cand, new_index = self._next_candidate(self.candidates, index, avoid=avoid)
        if cand is None:
            cand, new_index = self._next_candidate(self.candidates, index)
        if (
            cand is not None
            and self.d.health.held_until(cand.key) <= time.monotonic()
            and budget.try_spend(time.monotonic())
        ):
            self._start(cand, None, hedge=True)
            return new_index, 1
        return index, 0

    def _connected(self, winner: PoolWait) -> None:
        """One attempt has its connection: every other one still without one is abandoned.

        Called by the pool before the winner writes a byte, so the abandoned
        ones send nothing (Happy Eyeballs across regions: one request is sent,
        never two); they are set aside by :meth:`_set_aside_abandoned`.  "Without
        one" includes an attempt queued for a slot behind its provider's
        ``maxConnections``: it would otherwise get the slot later and send the
        request a second time.
        """
        for _, wait in self.waits.values():
            if wait is not winner and not wait.connected:
                wait.abandoned = True

    def _set_aside_abandoned(self) -> None:
        """Move abandoned connects out of the request: their end is no longer its business.

        Each one's connect runs on in the background up to the provider's connect
        timeout, so a black hole still shows up in endpoint health as what it is
        (a connect timeout), while a connect that was merely slow counts as
        nothing but a sample of the endpoint's connect time.
        """
        for task, (cand, wait) in list(self.waits.items()):
            if not wait.abandoned or task not in self.in_flight:
                continue
            attempt = self.in_flight.pop(task)
            self._forget(task)
            self._end_attempt(attempt, AttemptEnd.RACE_LOST)
            if task.done():
                self._abandoned_done(cand, wait, task)
            else:
                self.d.background.add(task)
                task.add_done_callback(functools.partial(self._abandoned_done, cand, wait))

    def _abandoned_done(self, cand: Candidate, wait: PoolWait, task: asyncio.Task[Outcome]) -> None:
        """An abandoned connect ended: its verdict (a full timeout, a refusal) for the endpoint."""
        self.d.background.discard(task)
        health = self.d.health
        self._release_claims(cand)
        if task.cancelled() or task.exception() is not None:  # no verdict (a bug is logged)
            return
        outcome = task.result()
        if isinstance(outcome, Ready):  # cannot happen (nothing was sent); close it all the same
            outcome.response.release()
            return
        self._observe_connect(cand, wait)  # late, but a connect time all the same
        endpoint = health.endpoints.get(cand.endpoint)
        if (
            endpoint is not None
            and outcome.local_origin is not None
            and endpoint.local_failure(outcome.local_origin, outcome.detail, time.monotonic())
        ):
            self._ejected(cand)

    def _forget(self, task: asyncio.Task[Outcome]) -> None:
        """A task leaves the request: its connect time (if it made one) is a sample."""
        self.race_at.pop(task, None)
        found = self.waits.pop(task, None)
        if found is not None and not found[1].abandoned:  # abandoned: sampled when it ends
            self._observe_connect(*found)

    def _observe_connect(self, cand: Candidate, wait: PoolWait) -> None:
        """A connect that completed is a sample of the endpoint's connect time (connecttimes.py)."""
        if wait.connect_seconds is not None:
            self.d.health.connect_times.observe(cand.endpoint, wait.connect_seconds)

    async def _run_sequential(
        self, budget: RetryBudget, max_attempts: int, retry_on: frozenset[str]
    ) -> web.StreamResponse:
        """The same loop without hedging: one attempt at a time, awaited in place.

        Most routes don't hedge; for them a task and an ``asyncio.wait`` per
        attempt is pure overhead on every request.  Failure handling, backoff,
        holds and the retry budget are the very same methods as above.
        """
        next_index = 0
        attempts = 0
        last_failure: Failed | None = None
        current: AttemptRecord | None = None
        try:
            while attempts < max_attempts:
                if attempts > 0 and not await self._may_retry(budget, attempts, last_failure):
                    break
                cand, next_index = self._next_after(last_failure, next_index)
                if cand is None or not await self._wait_for_hold(cand):
                    break
                if time.perf_counter() >= self.deadline:
                    break
                attempts += 1
                current = self._begin(cand, last_failure, hedge=False)
                waited_from = time.perf_counter()
                wait = self._pool_wait(cand)
                try:
                    outcome = await self._attempt(cand, wait)
                finally:
                    self.record.upstream_wait += time.perf_counter() - waited_from
                attempt, current = current, None
                self._observe_connect(cand, wait)
                if isinstance(outcome, Ready):
                    self._record_ready(attempt, outcome)
                    return await self._commit(attempt, outcome)
                last_failure = outcome
                if self._settle_failure(attempt, outcome, retry_on):
                    return self._passthrough(outcome)
        finally:
            if current is not None:  # cancelled mid-attempt (the client went away)
                self._end_attempt(current, AttemptEnd.CANCELLED)
        raise self._exhausted(attempts)

    async def _may_retry(
        self, budget: RetryBudget, attempts: int, last_failure: Failed | None
    ) -> bool:
        """The gate before every attempt after the first: retry budget, then backoff."""
        assert last_failure is not None
        now = time.monotonic()
        if (
            last_failure.kind.reached_upstream
            and not policy.retry_is_free(
                last_failure.candidate,
                self.candidates,
                self.d.health,
                self.route,
                now,
                network=last_failure.local_origin is not None,
                reserve=self.reserve,
            )
            and not budget.try_spend(now)
        ):
            self._give_up_note = "retry budget exhausted"
            return False
        return await self._backoff(attempts, last_failure)

    def _settle_failure(
        self, attempt: AttemptRecord, failed: Failed, retry_on: frozenset[str]
    ) -> bool:
        """Record a failed attempt; True when it goes to the client as is instead of falling over."""
        self._record_failure(attempt, failed)
        self.failures.append(failed)
        return policy.relayed_as_is(failed.kind, retry_on)

    def _next_candidate(
        self, candidates: list[Candidate], index: int, avoid: set[str] | None = None
    ) -> tuple[Candidate | None, int]:
        """The next candidate (:func:`.policy.next_candidate`), given what is in flight now."""
        busy = {a.candidate for a in self.in_flight.values()}
        return policy.next_candidate(
            candidates,
            index,
            busy,
            self.d.health,
            self.route,
            time.monotonic(),
            self.tried,
            avoid or (),
        )

    def _next_after(self, failure: Failed | None, index: int) -> tuple[Candidate | None, int]:
        """The next attempt's candidate: away from the path that failed, after a network verdict.

        A refused or timed-out connect, or a request the peer's TCP never
        acknowledged, condemns the network path – every endpoint behind that
        origin – not the one model: the retry goes elsewhere (:meth:`_elsewhere`).
        Any other failure is the upstream's, and the plan's order stands.
        """
        if failure is None or failure.local_origin is None:
            return self._next_candidate(self.candidates, index)
        return self._elsewhere(failure.candidate, index, set())

    def _elsewhere(
        self, sick: Candidate, index: int, avoid: set[str]
    ) -> tuple[Candidate | None, int]:
        """A candidate off ``sick``'s network path: in the plan, else from its reserve.

        In the plan first (in rotation before out, :func:`.policy.next_candidate`);
        when every candidate in the plan is behind that same origin – the other
        region's all taken out, by breakers that opened in a fault that has
        since passed – the best of the plan's reserve (:func:`.policy.from_reserve`),
        as panic mode would: the kernel chaos run lost every request for a
        second to three attempts inside one dark region while the other region,
        healed but behind open breakers, was never tried.  With no candidate
        anywhere else, the plan's next one outside ``avoid`` (another endpoint
        at the same origin), as before.
        """
        away = avoid | policy.same_path(sick, [*self.candidates, *self.reserve])
        cand, new_index = self._next_candidate(self.candidates, index, avoid=away)
        if cand is not None:
            return cand, new_index
        spare = policy.from_reserve(
            self.reserve, away, self.d.health, self.route, time.monotonic(), self.tried
        )
        if spare is not None:
            return spare, index
        return self._next_candidate(self.candidates, index, avoid=avoid or None)

    async def _backoff(self, attempts: int, failure: Failed) -> bool:
        """Full-jitter exponential backoff, at least as long as a Retry-After for the only choice."""
        delay = policy.backoff_delay(
            self.route.retry,
            attempts,
            self.d.rng,
            only_connect_failed=failure.kind is Failure.CONNECT and len(self.failures) == 1,
            holds=[self.d.health.held_until(c.key) for c in self.candidates],
            now=time.monotonic(),
        )
        if time.perf_counter() + delay >= self.deadline:
            self._give_up_note = (
                f"the next attempt would start after totalMs ({self.route.timeouts.total_ms} ms)"
            )
            return False
        if delay > 0:
            started = time.perf_counter()
            await asyncio.sleep(delay)
            self.record.upstream_wait += time.perf_counter() - started
        return True

    async def _wait_for_hold(self, cand: Candidate) -> bool:
        """Honour a Retry-After on the chosen candidate (only chosen when every one is held).

        Sending anyway would be the one thing the upstream asked us not to do;
        when the hold outlasts the deadline the request ends now with a 429
        that passes the wait on to the client.
        """
        wait = self.d.health.held_until(cand.key) - time.monotonic()
        if wait <= 0:
            return True
        if time.perf_counter() + wait >= self.deadline:
            self.all_held = True
            self._give_up_note = (
                f"every candidate is held by Retry-After for {wait:.1f}s more, "
                f"past totalMs ({self.route.timeouts.total_ms} ms)"
            )
            return False
        started = time.perf_counter()
        await asyncio.sleep(wait)
        self.record.upstream_wait += time.perf_counter() - started
        return True

    def _hedge_delay(self, first: Candidate) -> float | None:
        ttft = self.d.health.target_ttft(first.target_key)
        first_byte = self.route.timeouts.first_byte_ms / 1000
        return policy.hedge_delay(self.route.hedge, ttft, time.monotonic(), first_byte)

    # -- one attempt ----------------------------------------------------------------------

    def _start(
        self, cand: Candidate, previous: Failed | None, *, hedge: bool, reason: str | None = None
    ) -> None:
        """Start an attempt as a task, and set its connect race (if its connect may be raced)."""
        attempt = self._begin(cand, previous, hedge=hedge, reason=reason)
        wait = self._pool_wait(cand)
        wait.on_connected = functools.partial(self._connected, wait)
        task = asyncio.ensure_future(self._attempt(cand, wait))
        self.in_flight[task] = attempt
        self.waits[task] = (cand, wait)
        delay = policy.connect_race_delay(
            self.route.connect_racing,
            self.d.health.connect_times.get(cand.endpoint),
            cand.provider.connect_timeout_ms / 1000,
        )
        if delay is not None:
            self.race_at[task] = attempt.started + delay

    async def _cancel_rest(self, result: AttemptEnd) -> None:
        self._set_aside_abandoned()  # unsent and still connecting: left to finish, not cancelled
        if not self.in_flight:
            return
        tasks = list(self.in_flight)
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for task, outcome in zip(tasks, outcomes, strict=True):
            attempt = self.in_flight.pop(task)
            self._forget(task)
            if isinstance(outcome, Failed):  # failed just as we cancelled: a verdict all the same
                self._record_failure(attempt, outcome)
                continue
            if isinstance(outcome, Ready):  # finished just as we cancelled: close it
                outcome.response.release()
                self._release_claims(outcome.candidate)  # no verdict, and no probe kept
            elif result == AttemptEnd.HEDGE_LOST:
                self._hedge_lost(attempt)
            self._end_attempt(attempt, result)

    # -- endings --------------------------------------------------------------------------

    def _exhausted(self, attempts: int) -> errors.ModelRouteError:
        summaries = [
            errors.AttemptSummary(
                target=f.candidate.target_key,
                region=f.candidate.region,
                result=f.kind,
                status=f.status,
                detail=f.detail,
            )
            for f in self.failures
        ]
        error = policy.exhausted_verdict({f.kind for f in self.failures}, self.all_held)
        notes = [self._give_up_note] if self._give_up_note else []
        if self.pin_note:
            notes.append(self.pin_note)
        if self.route.residency_regions is not None:
            notes.append(
                f"residency.regions {list(self.route.residency_regions)} allows no other "
                "region, so the request was not sent outside them"
            )
        note = f" ({'; '.join(notes)})" if notes else ""
        message = (
            f"route {self.route.name!r}: every attempt failed{note}; "
            f"{errors.attempts_text(summaries)}"
        )
        headers = self._our_headers(attempts)
        holds = [
            self.d.health.held_until(c.key) - time.monotonic()
            for c in ([f.candidate for f in self.failures] or self.candidates)
        ]
        if holds and min(holds) > 0:  # the upstream said how long to wait: pass it on
            headers.update(retrysignal.retry_after_headers(min(holds)))
        if issubclass(error, errors.NoEligibleTarget):  # the request's fault: no retry advice
            return error(message, route=self.route.name, attempts=summaries)
        return error(message, route=self.route.name, attempts=summaries, headers=headers)
