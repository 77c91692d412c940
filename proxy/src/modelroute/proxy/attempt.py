"""One upstream attempt: send, wait for the first byte, and say what happened.

An attempt ends in one of two ways before anything reaches the client:

* :class:`Ready` – the upstream answered 2xx and its first body bytes are in
  hand (a whole JSON body for non-streaming requests, the first SSE chunk for
  streams).  The dispatcher commits to it: from here on nothing is retried.
* :class:`Failed` – with a :class:`Failure` kind the dispatcher uses to decide
  whether to fall over (connect, timeout, 429, 5xx, invalid response, context
  length, auth, model missing) or to hand the upstream's own 4xx to the
  client (``passthrough``).

"First byte" here is the response status line *and*, for streams, the first
body chunk: a provider that sends 200 headers and then hangs is a timeout,
not a success – otherwise one stuck region would hold the request until
``totalMs``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from .endpoints import ErrorKind
from .outcomes import Failure
from .router import Candidate
from .scrub import NO_SECRETS, Scrubber
from .upstream import (
    ConnectFailed,
    ConnectRefused,
    Disconnected,
    PathDied,
    PathSilent,
    PoolWait,
    RequestNotSent,
    Transport,
    UpstreamError,
    UpstreamResponse,
    check_origin,
    forwarded_headers,
)


@dataclass(slots=True)
class Ready:
    candidate: Candidate
    response: UpstreamResponse
    first: bytes  # the whole body (non-stream) or the first chunk (stream)
    document: dict[str, Any] | None  # the parsed body (non-stream)
    ttfb: float  # seconds from send to the first byte
    headers: dict[str, str] = field(default_factory=dict)
    scrub: Scrubber = NO_SECRETS  # what this attempt sent: kept out of the forwarded stream


@dataclass(slots=True)
class Failed:
    candidate: Candidate
    kind: Failure
    detail: str
    status: int | None = None
    retry_after: float | None = None
    body: bytes = b""  # the upstream's own error body (passed through for client errors)
    headers: dict[str, str] = field(default_factory=dict)  # its x-ratelimit-* etc. (passthrough)
    content_type: str = "application/json"
    # a local-origin failure: the network refused or swallowed the connect, a fact about the
    # endpoint that its outlier detection counts (endpoints.py); None for everything else
    local_origin: ErrorKind | None = None


Outcome = Ready | Failed

_CONTEXT_MARKERS = (b"context_length_exceeded", b"maximum context length", b"context window")


def parse_retry_after(value: str | None, now_wall: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        seconds = when - (now_wall if now_wall is not None else time.time())
    return max(0.0, min(seconds, 3600.0))


def classify_status(status: int, body: bytes) -> Failure:
    if status < 400:  # a redirect (never followed): a misconfigured baseURL, not an answer
        return Failure.INVALID_RESPONSE
    if status == 429:
        return Failure.RATE_LIMITED
    if status >= 500 or status == 408:
        return Failure.SERVER_ERROR if status != 408 else Failure.TIMEOUT
    if status in (401, 403):
        return Failure.AUTH
    if status == 404:
        # a follow-up whose previous response the upstream doesn't have: the client's to hear
        if b"previous_response_not_found" in body[:4096]:
            return Failure.PASSTHROUGH
        return Failure.MODEL_MISSING
    lowered = body[:4096].lower()
    if status in (400, 413, 422) and any(m in lowered for m in _CONTEXT_MARKERS):
        return Failure.CONTEXT_LENGTH
    return Failure.PASSTHROUGH


def _looks_like_sse(chunk: bytes) -> bool:
    head = chunk.lstrip()[:6]
    return head.startswith((b"data:", b":", b"event:", b"id:", b"retry:"))


@functools.lru_cache(maxsize=256)
def _host_of(base_url: str) -> str:
    """The host a base URL names (a table has a handful: parsed once each)."""
    return urlsplit(base_url).hostname or ""


async def run_attempt(
    pool: Transport,
    candidate: Candidate,
    base_url: str,
    path: str,
    payload: bytes,
    headers: dict[str, str],
    *,
    stream: bool,
    first_byte_timeout: float,
    total_timeout: float,
    wait: PoolWait | None = None,
) -> Outcome:
    """Send one request and wait (bounded) for its first byte; never raises for upstream trouble.

    ``wait`` is the caller's view of the trip through the pool (the attempt
    loop races a slow connect with it, :class:`~.upstream.PoolWait`).

    On :class:`Ready` the caller owns ``response`` and must release it.  Every
    :class:`Failed` leaves here scrubbed of the credentials this attempt sent
    (and key-shaped tokens): its detail and body are what clients, ``/explain``
    and spans are shown (``scrub.py``).
    """
    credentials = candidate.provider.credentials
    scrub = Scrubber.for_headers(headers, credentials.header if credentials else None)
    try:  # metadata hosts and the namespace's allow-list: the key is not sent there
        check_origin(_host_of(base_url))
    except ConnectRefused as exc:
        return Failed(candidate, Failure.NOT_SENT, f"request not sent: {exc}"[:200])
    outcome = await _send(
        pool,
        candidate,
        base_url,
        path,
        payload,
        headers,
        scrub,
        stream=stream,
        first_byte_timeout=first_byte_timeout,
        total_timeout=total_timeout,
        pool_wait=wait or PoolWait(),
    )
    if isinstance(outcome, Failed):
        outcome.detail = scrub.text(outcome.detail)
    else:
        outcome.scrub = scrub
    return outcome


async def _send(
    pool: Transport,
    candidate: Candidate,
    base_url: str,
    path: str,
    payload: bytes,
    headers: dict[str, str],
    scrub: Scrubber,
    *,
    stream: bool,
    first_byte_timeout: float,
    total_timeout: float,
    pool_wait: PoolWait,
) -> Outcome:
    started = time.perf_counter()
    response: UpstreamResponse | None = None
    try:
        # one timer for the whole attempt: first-byte bound, then moved to the total deadline
        # (each asyncio.timeout is a call_at handle created, rescheduled and cancelled)
        async with asyncio.timeout(first_byte_timeout) as deadline:
            # redirects are never followed: one would take the provider key to wherever it points
            response = await pool.post(base_url, path, payload, headers, wait=pool_wait)
            if response.status >= 300:
                # scrubbed before anything reads it: the detail below is cut at 200
                # characters, which could otherwise leave a fragment of a key behind
                body = scrub.data(await _read_capped(response, 64 * 1024))
                kind = classify_status(response.status, body)
                return Failed(
                    candidate,
                    kind,
                    _error_detail(body) or response.reason or "",
                    status=response.status,
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                    body=body,
                    content_type=response.headers.get("content-type", "application/json"),
                    headers=forwarded_headers(response.headers),
                )
            # an answer of the other kind is no answer: JSON to a stream request would reach
            # an SDK as an empty stream, an event stream to a plain one would be read until
            # totalMs; both fall over now, before a body byte is waited for
            is_sse = "text/event-stream" in response.headers.get("content-type", "")
            if is_sse != stream:
                detail = (
                    "a stream request was answered without server-sent events"
                    if stream
                    else "a non-stream request was answered with an event stream"
                )
                return Failed(candidate, Failure.INVALID_RESPONSE, detail, 200)
            # the first body bytes are part of "first byte": 200 headers and then silence
            # is a stuck upstream, not an answer
            first = await response.content.readany()
            ttfb = time.perf_counter() - started
            if stream:
                if not first:
                    return Failed(candidate, Failure.INVALID_RESPONSE, "empty stream", status=200)
                if not _looks_like_sse(first):
                    return Failed(
                        candidate, Failure.INVALID_RESPONSE, "stream is not server-sent events", 200
                    )
                ready = Ready(
                    candidate, response, first, None, ttfb, forwarded_headers(response.headers)
                )
                response = None  # handed over
                return ready
            # non-streaming: the rest of the body may take up to the total deadline
            if first and not response.content.at_eof():
                deadline.reschedule(
                    asyncio.get_running_loop().time() + max(0.001, total_timeout - ttfb)
                )
                rest = await response.read()
            else:
                rest = b""
        body = first + rest
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Failed(
                candidate, Failure.INVALID_RESPONSE, "200 with a body that is not JSON", 200
            )
        if not isinstance(document, dict) or not (
            isinstance(document.get("choices"), list)
            or isinstance(document.get("data"), list)
            or document.get("object") == "response"  # the Responses API
        ):
            return Failed(
                candidate,
                Failure.INVALID_RESPONSE,
                "200 without `choices`, `data` or a response object",
                200,
            )
        ready = Ready(
            candidate, response, body, document, ttfb, forwarded_headers(response.headers)
        )
        response = None
        return ready
    except TimeoutError:
        waited = time.perf_counter() - started
        if pool_wait.stuck_in_queue:  # never sent: the upstream's health is not in question
            provider = candidate.provider
            return Failed(
                candidate,
                Failure.POOL_FULL,
                f"no free connection to provider {provider.name!r} after {waited * 1000:.0f} ms: "
                f"all {provider.max_connections} are busy (raise its maxConnections)",
            )
        if not pool_wait.connected:  # the connect itself had not completed: a black hole
            return Failed(
                candidate,
                Failure.TIMEOUT,
                f"no connection after {waited * 1000:.0f} ms",
                local_origin=ErrorKind.CONNECT_TIMEOUT,
            )
        return Failed(candidate, Failure.TIMEOUT, f"no first byte after {waited * 1000:.0f} ms")
    except ConnectFailed as exc:
        local = None
        if exc.network:
            local = ErrorKind.CONNECT_TIMEOUT if exc.timed_out else ErrorKind.CONNECT_REFUSED
        return Failed(candidate, Failure.CONNECT, str(exc)[:200], local_origin=local)
    except PathSilent as exc:
        # the kernel's word that the request sits unacknowledged on a dead path: an early
        # first-byte timeout (retried as one, charged as one), and a fact about the endpoint
        return Failed(
            candidate, Failure.TIMEOUT, str(exc)[:200], local_origin=ErrorKind.REQUEST_UNACKED
        )
    except PathDied as exc:
        # acknowledged, then the path went dark (keepalive probes unanswered): the upstream
        # may have the request, so a first-byte timeout that came early – and a network fact
        return Failed(candidate, Failure.TIMEOUT, str(exc)[:200], local_origin=ErrorKind.PATH_DIED)
    except RequestNotSent as exc:  # a base URL or header the client refuses to put on the wire
        # our configuration's fault, not the upstream's: its health is not in question
        return Failed(candidate, Failure.NOT_SENT, f"request not sent: {exc}"[:200])
    except Disconnected as exc:  # before the headers: nothing answered; after: a broken answer
        if response is None:  # reset or closed before any answer: as good as refused
            return Failed(
                candidate, Failure.CONNECT, str(exc)[:200], local_origin=ErrorKind.CONNECT_REFUSED
            )
        return Failed(candidate, Failure.INVALID_RESPONSE, f"broken body: {exc}"[:200], 200)
    except UpstreamError as exc:  # BadResponse: bytes that aren't an answer we can follow
        status = response.status if response is not None else None
        return Failed(candidate, Failure.INVALID_RESPONSE, str(exc)[:200], status)
    finally:
        if response is not None:
            response.release()


async def _read_capped(response: UpstreamResponse, limit: int) -> bytes:
    return await response.content.read(limit)


def _error_detail(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:200]
        if isinstance(err, str):
            return err[:200]
    return ""
