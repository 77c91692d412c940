"""The commit: the chosen answer goes to the client, whole or streamed, and is accounted for.

Entered once the attempt loop has an upstream whose first byte arrived
(:meth:`Commit._commit`) or whose answer must be relayed as it is
(:meth:`Commit._passthrough`).  Nothing here retries: once a byte went to
the client, a failure ends the stream with an error event the OpenAI SDKs
raise.  Then usage, cost and the budget (:meth:`Commit._account`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from aiohttp import web

from .. import errors, responses, retrysignal
from ..attempt import Failed, Ready
from ..events import AttemptRecord
from ..outcomes import AttemptEnd, RequestOutcome
from ..request import Endpoint
from ..sse import SSEScanner, error_event
from ..table import CompiledTarget
from ..upstream import UpstreamError
from ..usage import usage_counts, usage_details
from .state import RESPONSE_STARTED, RequestRun


class Commit(RequestRun):
    """Sending the answer of the attempt that won (see :mod:`.state` for the layers)."""

    def _passthrough(self, failed: Failed) -> web.Response:
        """The upstream judged the request itself bad (or its failure isn't in retryOn): relay it."""
        record = self.record
        record.status = failed.status or 502
        record.outcome = RequestOutcome.REJECTED if record.status < 500 else RequestOutcome.ERROR
        body = failed.body or orjson.dumps(errors.UpstreamUnavailable(failed.detail).body())
        headers = {**failed.headers, **self._our_headers()}
        if failed.retry_after is not None:  # the app's own retry logic needs the upstream's wait
            headers.update(retrysignal.retry_after_headers(failed.retry_after))
        retrysignal.mark_passthrough(headers)
        return web.Response(
            status=record.status,
            body=body,
            content_type=failed.content_type.split(";")[0] or "application/json",
            headers=headers,
        )

    async def _commit(self, attempt: AttemptRecord, ready: Ready) -> web.StreamResponse:
        record = self.record
        record.served = attempt
        try:
            if ready.document is not None:
                return await self._send_whole(attempt, ready)
            return await self._pipe_stream(attempt, ready)
        finally:
            ready.response.release()

    async def _send_whole(self, attempt: AttemptRecord, ready: Ready) -> web.Response:
        record = self.record
        doc = ready.document
        assert doc is not None
        # a key this attempt sent, echoed in the answer, is replaced, as in a stream (scrub.py)
        body = ready.scrub.sent(ready.first)
        record_completion = record.record_content
        if body is not ready.first:  # rare: what is recorded of the answer must not carry it
            try:
                rescanned = orjson.loads(body)
            except orjson.JSONDecodeError:
                rescanned = None
            if isinstance(rescanned, dict):
                doc = rescanned
            else:  # can't read the scrubbed answer: record none of it rather than the key
                record_completion = False
        attempt.result = AttemptEnd.OK
        attempt.duration = time.perf_counter() - attempt.started
        usage = doc.get("usage")
        if isinstance(usage, dict):
            record.input_tokens, record.output_tokens = usage_counts(usage)
            record.cached_input_tokens, record.reasoning_tokens = usage_details(usage)
        record.response_model = doc.get("model") if isinstance(doc.get("model"), str) else None
        reasons = [
            str(c["finish_reason"])
            for c in doc.get("choices") or ()
            if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)
        ]
        if self.features.endpoint is Endpoint.RESPONSES:
            if isinstance(doc.get("status"), str):
                reasons.append(doc["status"])
            body = responses.wrap_document(
                body, self.d.response_ids, attempt.provider, attempt.region
            )
        record.finish_reasons = tuple(reasons)
        if record_completion:
            record.extra["completion"] = [
                c.get("message") if "message" in c else {"text": c.get("text")}
                for c in doc.get("choices") or ()
                if isinstance(c, dict)
            ]
        self._account(attempt)
        record.status = ready.response.status
        record.outcome = RequestOutcome.OK
        record.ttft = time.perf_counter() - record.started
        self.d.observers.attempt_finished(record, attempt)
        headers = {**ready.headers, **self._our_headers()}
        response = web.Response(
            status=ready.response.status,
            body=body,
            content_type="application/json",
            headers=headers,
        )
        # send it now, so the shadow copy starts only once the answer is on its way
        self.request[RESPONSE_STARTED] = True  # from here on no second response may follow
        try:
            await response.prepare(self.request)
            await response.write_eof()
        except ConnectionResetError:  # hung up before the answer went out: normal, not an error
            record.outcome, record.status = RequestOutcome.CLIENT_CLOSED, 499
            return response
        self.d.mirror.maybe_send(self.route, self.table, self.path, self.body)
        return response

    async def _pipe_stream(self, attempt: AttemptRecord, ready: Ready) -> web.StreamResponse:
        record = self.record
        upstream = ready.response
        self.stream_scrub = ready.scrub  # the recorded answer is scrubbed as the bytes are
        scanner: SSEScanner | responses.ResponsesScanner
        if self.features.endpoint is Endpoint.RESPONSES:  # typed events; their ids wrapped
            scanner = responses.ResponsesScanner(
                self.d.response_ids, attempt.provider, attempt.region, record.record_content
            )
        else:
            scanner = SSEScanner(self.strip_usage, collect_content=record.record_content)
        response = web.StreamResponse(
            status=upstream.status,
            headers={
                **ready.headers,
                **self._our_headers(),
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        record.status = upstream.status
        idle = (self.route.timeouts.stream_idle_ms or self.route.timeouts.first_byte_ms) / 1000
        failure: str | None = None
        self.request[RESPONSE_STARTED] = True  # from here on no second response may follow
        try:
            await response.prepare(self.request)
            try:
                out = ready.scrub.stream(scanner.feed(ready.first))
            except ValueError as exc:  # not SSE we can follow: end it with an error event
                failure, out = f"the upstream sent a malformed stream ({exc})", b""
            if out:
                await response.write(out)
            record.ttft = time.perf_counter() - record.started
            self.d.mirror.maybe_send(self.route, self.table, self.path, self.body)
            content = upstream.content
            while failure is None:
                remaining = self.deadline - time.perf_counter()
                if remaining <= 0:
                    failure = f"the stream exceeded totalMs ({self.route.timeouts.total_ms} ms)"
                    break
                waited_from = time.perf_counter()
                try:
                    async with asyncio.timeout(min(idle, remaining)):
                        chunk = await content.readany()
                except TimeoutError:
                    if remaining <= idle:  # the deadline fired, not the idle timer
                        failure = f"the stream exceeded totalMs ({self.route.timeouts.total_ms} ms)"
                    else:
                        failure = f"the upstream went silent for {idle * 1000:.0f} ms mid-stream"
                    break
                except UpstreamError as exc:
                    failure = f"the upstream connection broke mid-stream ({type(exc).__name__})"
                    break
                finally:
                    record.upstream_wait += time.perf_counter() - waited_from
                if not chunk:
                    break
                try:
                    out = ready.scrub.stream(scanner.feed(chunk))
                except ValueError as exc:
                    failure = f"the upstream sent a malformed stream ({exc})"
                    break
                if out:
                    await response.write(out)
            rest = scanner.flush()  # scanned before judging: it may hold [DONE] or an error
            facts = scanner.facts
            if failure is None and facts.error is not None:
                said = ready.scrub.text(str(facts.error.get("message", "")))
                failure = f"the upstream sent an error event: {said}"[:300]
            elif failure is None and not facts.complete:
                failure = "the upstream ended the stream before it was complete"
            if rest and failure is None:  # an unfinished event never precedes our error event
                await response.write(ready.scrub.stream(rest))
            if failure is not None:
                served = attempt.candidate
                await response.write(
                    error_event(
                        f"route {self.route.name!r}: {failure} (served by {served}); "
                        "the answer is incomplete",
                        "stream_interrupted",
                        self.route.name,
                    )
                )
            await response.write_eof()
        except asyncio.CancelledError:
            if self.d.closing:  # the sidecar is stopping and cut it: say so, count it as ours
                cut = "the sidecar shut down mid-stream"
                with contextlib.suppress(Exception):
                    await response.write(
                        error_event(
                            f"route {self.route.name!r}: {cut}",
                            "stream_interrupted",
                            self.route.name,
                        )
                    )
                self._finish_stream(attempt, scanner, cut)
                raise
            self._client_left(attempt, scanner, failure)
            raise
        except ConnectionResetError:
            # the client hung up and a write found its transport already closing (the
            # upstream's data woke us before the loop delivered the hang-up): as normal as
            # the cancellation above, so counted as client_closed and the handler ends
            # quietly; raised, aiohttp would log it as an ERROR with a traceback
            self._client_left(attempt, scanner, failure)
            return response
        self._finish_stream(attempt, scanner, failure)
        return response

    def _client_left(
        self,
        attempt: AttemptRecord,
        scanner: SSEScanner | responses.ResponsesScanner,
        failure: str | None,
    ) -> None:
        self.record.outcome = RequestOutcome.CLIENT_CLOSED
        self.record.status = 499
        attempt.result = AttemptEnd.CLIENT_CLOSED
        self._finish_stream(attempt, scanner, failure)

    def _finish_stream(
        self,
        attempt: AttemptRecord,
        scanner: SSEScanner | responses.ResponsesScanner,
        failure: str | None,
    ) -> None:
        record = self.record
        facts = scanner.facts
        record.input_tokens = facts.input_tokens
        record.output_tokens = facts.output_tokens
        record.cached_input_tokens = facts.cached_input_tokens
        record.reasoning_tokens = facts.reasoning_tokens
        if facts.input_tokens is None and facts.output_tokens is None and facts.data_events:
            # no usage event (the client left, the upstream cut the stream, or ignores
            # include_usage), yet the provider bills the prompt and what it generated:
            # charge an estimate rather than nothing, so a budget can't leak through cut
            # streams. Output: one token per data event, the usual granularity (docs/budgets.md)
            record.input_tokens = self.features.prompt_tokens
            record.output_tokens = facts.data_events
            record.usage_estimated = True
        record.response_model = facts.model
        record.finish_reasons = tuple(facts.finish_reasons)
        if record.record_content and facts.content:
            raw = "".join(facts.content)
            more = facts.content_chars - len(raw)  # counted before the scrub changes lengths
            text = self.stream_scrub.sent_text(raw, cut=more > 0)
            if more > 0:
                text += f"… [{more} more characters not recorded]"
            record.extra["completion"] = [{"role": "assistant", "content": text}]
        attempt.duration = time.perf_counter() - attempt.started
        now = time.monotonic()
        if record.outcome != RequestOutcome.CLIENT_CLOSED:
            if failure is None:
                attempt.result = AttemptEnd.OK
                record.outcome = RequestOutcome.OK
                self.d.health.target_latency(attempt.target).add(attempt.duration, now)
            else:
                attempt.result = AttemptEnd.STREAM_ERROR
                attempt.detail = failure
                record.outcome = RequestOutcome.STREAM_ERROR
                record.error_code = "stream_interrupted"
                if not self.d.closing:  # our own shutdown cut it: not the upstream's fault
                    cand_key = attempt.candidate
                    self.d.health.breaker(
                        self.route.name, cand_key, self.route.circuit_breaker
                    ).record_failure(now)
        self._account(attempt)
        self.d.observers.attempt_finished(record, attempt)

    def _account(self, attempt: AttemptRecord) -> None:
        """Cost at the catalogue price of the model that served; unknown prices stay unknown."""
        record = self.record
        target = self.route_target(attempt)
        cost: float | None = 0.0
        if record.output_tokens:
            if target is not None and target.output_usd_per_mtok is not None:
                cost = (cost or 0.0) + record.output_tokens * target.output_usd_per_mtok / 1e6
            else:
                record.unpriced_output_tokens = record.output_tokens
                cost = None
        if record.input_tokens:
            if target is not None and target.input_usd_per_mtok is not None:
                if cost is not None:
                    cost += record.input_tokens * target.input_usd_per_mtok / 1e6
            else:
                record.unpriced_input_tokens = record.input_tokens
        if record.output_tokens is None and record.input_tokens is None:
            cost = None
        record.cost_usd = cost
        if cost and self.d.budgets is not None and self.route.budget is not None:
            self.d.budgets.spend(self.route, cost)

    def route_target(self, attempt: AttemptRecord) -> CompiledTarget | None:
        for target in self.route.targets:
            if target.provider == attempt.provider and target.model == attempt.model:
                return target
        return None
