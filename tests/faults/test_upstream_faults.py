"""One misbehaving upstream at a time, and what the client sees.

Each test names the fault in the fake and states the client-visible contract:
fall over before the first byte, never after it; an error that says why;
no request outliving ``totalMs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web

from .conftest import (
    Answer,
    Fake,
    FakeFactory,
    ProxyFactory,
    ask,
    provider_yaml,
    quantile,
    route_yaml,
    status,
)

FIRST_BYTE_MS = 300


async def two_tier(
    fakes: FakeFactory,
    proxies: ProxyFactory,
    extra: str = "",
    primary_url: str | None = None,
    **knobs: object,
) -> tuple[Fake, Fake, str, object]:
    primary = await fakes("us-east-1", **knobs)
    backup = await fakes("eu-west-1", latency_ms=10)
    routes = (
        provider_yaml("primary", [("us-east-1", primary_url or primary.url)])
        + provider_yaml("backup", [("eu-west-1", backup.url)])
        + route_yaml(
            "chat",
            ["chat"],
            [
                "{provider: primary, model: chat-a, tier: 0}",
                "{provider: backup, model: chat-b, tier: 1}",
            ],
            extra
            or f"  timeouts: {{firstByteMs: {FIRST_BYTE_MS}, totalMs: 2000}}\n"
            "  retry: {maxAttempts: 3, baseBackoffMs: 10, maxBackoffMs: 50}",
        )
    )
    proxy = await proxies(routes)
    return primary, backup, proxy.base_url, proxy


async def test_429_storm_with_retry_after_holds_the_target_then_tries_it_again(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Client sees: every answer 200 from the backup; the primary gets one request per hold."""
    primary, _, base, proxy = await two_tier(
        fakes, proxies, error_rate=1.0, error_status=429, retry_after=1
    )
    for _ in range(10):
        answer = await ask(http, base)
        assert answer.complete() and answer.target.startswith("backup/")
    assert primary.stats.requests == 1  # "come back in 1 s" was honoured
    doc = await status(http, proxy)  # type: ignore[arg-type]
    assert 0 < doc["retryAfterHolds"]["primary/chat-a@us-east-1"] <= 1.0
    await asyncio.sleep(1.05)
    primary.knobs.update({"error_rate": 0.0})
    answer = await ask(http, base)
    assert answer.complete() and answer.target.startswith("primary/")
    assert primary.stats.requests == 2


async def test_429_everywhere_is_a_429_with_retry_after_and_no_request_during_the_hold(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Client sees: 429 ``rate_limited`` with a Retry-After; held upstreams get nothing more."""
    primary, backup, base, _ = await two_tier(
        fakes, proxies, error_rate=1.0, error_status=429, retry_after=5
    )
    backup.knobs.update({"error_rate": 1.0, "error_status": 429, "retry_after": 5})
    started = time.perf_counter()
    answer = await ask(http, base)
    assert time.perf_counter() - started < 1.0  # no point waiting 5 s inside a 2 s deadline
    assert answer.status == 429 and answer.well_formed_error()
    assert answer.error()["code"] == "rate_limited"  # type: ignore[index]
    assert 1 <= int(answer.headers["retry-after"]) <= 5
    sent = primary.stats.requests + backup.stats.requests
    assert sent == 2
    for _ in range(5):  # inside the hold: answered from what we know, nothing sent
        again = await ask(http, base)
        assert again.status == 429 and "retry-after" in again.headers
    assert primary.stats.requests + backup.stats.requests == sent


@pytest.mark.parametrize("stream", [False, True])
async def test_hang_after_headers_is_a_first_byte_timeout_and_falls_over(
    stream: bool, fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Client sees: a complete answer from the backup after ~firstByteMs, not a stuck request."""
    primary, _, base, _ = await two_tier(fakes, proxies, hang_after_headers=True)
    answer = await ask(http, base, stream=stream)
    assert answer.complete(), answer.body[:300]
    assert answer.target.startswith("backup/") and answer.attempts == 2
    assert answer.elapsed < FIRST_BYTE_MS / 1000 + 0.5
    for _ in range(50):  # the proxy closed the hung connection
        if primary.stats.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert primary.stats.in_flight == 0 and primary.stats.cancelled == 1


async def test_stream_cut_after_three_chunks_ends_in_an_error_event_not_a_retry(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Client sees: 200, the three chunks, then an SSE error event; no second upstream request."""
    primary, backup, base, _ = await two_tier(fakes, proxies, cut_after=3)
    answer = await ask(http, base, stream=True)
    assert answer.status == 200 and not answer.complete()
    assert answer.content_chunks() == 3
    assert answer.well_formed_error()
    err = answer.error()
    assert err is not None and err["code"] == "stream_interrupted" and err["route"] == "chat"
    assert "incomplete" in err["message"]
    assert primary.stats.requests == 1 and backup.stats.requests == 0  # bytes were sent: no retry


@pytest.mark.parametrize("stream", [False, True])
async def test_garbage_json_falls_over_and_all_garbage_is_a_502(
    stream: bool, fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Client sees: the backup's answer; when the backup is garbage too, a 502 that says so."""
    _, backup, base, _ = await two_tier(fakes, proxies, garbage=True)
    answer = await ask(http, base, stream=stream)
    assert answer.complete() and answer.target.startswith("backup/")
    backup.knobs.update({"garbage": True})
    answer = await ask(http, base, stream=stream)
    assert answer.status == 502 and answer.well_formed_error()
    assert "invalid_response" in answer.error()["message"]  # type: ignore[index]


@pytest.mark.slow
async def test_slow_only_at_p99_is_cut_at_the_first_byte_timeout(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Client sees: every request answered; the slow tail costs one firstByteMs, not 1.5 s.

    With the default breaker (5 failures in 60 s) a tail of 5 % trips it within
    the first hundred requests: the primary then rests for openSeconds and the
    backup serves in one attempt.
    """
    primary, backup, base, proxy = await two_tier(
        fakes, proxies, latency_ms=10, slow_share=0.05, slow_extra_ms=1500
    )
    gate = asyncio.Semaphore(10)

    async def one() -> Answer:
        async with gate:
            answer = await ask(http, base)
            assert answer.complete()
            return answer

    answers = await asyncio.gather(*(one() for _ in range(200)))
    elapsed = [a.elapsed for a in answers]
    tail = [a for a in answers if a.elapsed > FIRST_BYTE_MS / 1000]
    doc = await status(http, proxy)  # type: ignore[arg-type]
    print(
        f"\n[slow_share] 200 requests, p50 {quantile(elapsed, 0.5) * 1000:.0f} ms, "
        f"p99 {quantile(elapsed, 0.99) * 1000:.0f} ms, max {max(elapsed) * 1000:.0f} ms; "
        f"{len(tail)} cut at firstByteMs, primary saw {primary.stats.requests}, "
        f"backup {backup.stats.requests}; circuits {doc['circuits']}"
    )
    assert tail and all(a.attempts == 2 and a.target.startswith("backup/") for a in tail)
    assert max(elapsed) < FIRST_BYTE_MS / 1000 + 0.4  # cut: fallback, not a 1.5 s wait
    assert primary.stats.requests + backup.stats.requests == 200 + len(tail)
    assert len(tail) >= 5  # five timeouts in 60 s: the breaker opened and stays open
    assert [c["state"] for c in doc["circuits"]] == ["open"]


@contextlib.asynccontextmanager
async def raw_upstream(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A misbehaving upstream on 127.0.0.1 that the fake provider can't imitate: its /v1 URL.

    ``handler`` gets every request, whatever its method and path.
    """
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.fixture
async def slow_loris() -> AsyncIterator[str]:
    """An upstream that answers 200 at once and then sends one body byte every 100 ms."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(600):
            await resp.write(b" ")
            await asyncio.sleep(0.1)
        return resp

    async with raw_upstream(handler) as url:
        yield url


@pytest.mark.slow
async def test_slow_loris_upstream_cannot_hold_a_request_past_total_ms(
    slow_loris: str, fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Client sees: a 504 (or the backup) by totalMs, although the upstream never goes silent."""
    extra = (
        "  timeouts: {firstByteMs: 300, totalMs: 1000}\n"
        "  retry: {maxAttempts: 1, baseBackoffMs: 10, maxBackoffMs: 50}"
    )
    _, _, base, _ = await two_tier(fakes, proxies, extra, primary_url=slow_loris)
    answer = await ask(http, base)
    assert answer.elapsed < 1.0 + 0.3
    assert answer.status == 504 and answer.well_formed_error()


@pytest.mark.slow
async def test_trickling_stream_is_ended_at_total_ms_with_an_error_event(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Client sees: the tokens so far, then an error event at totalMs (5 tokens/s never idles)."""
    extra = (
        "  timeouts: {firstByteMs: 300, totalMs: 1000}\n"
        "  retry: {maxAttempts: 2, baseBackoffMs: 10, maxBackoffMs: 50}"
    )
    _, backup, base, _ = await two_tier(
        fakes, proxies, extra, tokens_per_second=5, output_tokens=100
    )
    answer = await ask(http, base, stream=True)
    assert answer.elapsed < 1.0 + 0.3
    assert answer.status == 200 and 3 <= answer.content_chunks() <= 6
    err = answer.error()
    assert err is not None and err["code"] == "stream_interrupted" and "totalMs" in err["message"]
    assert backup.stats.requests == 0


@pytest.fixture
async def oversized_event() -> AsyncIterator[str]:
    """An upstream that streams one good event, then 2 MiB without an event separator."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        good = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "chat-a",
            "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}],
        }
        await resp.write(b"data: " + orjson.dumps(good) + b"\n\n")
        await asyncio.sleep(0.05)
        for _ in range(32):
            await resp.write(b"data: " + b"x" * 65536)
        await asyncio.sleep(5)  # never ends the event, never closes: the proxy must
        return resp

    async with raw_upstream(handler) as url:
        yield url


@pytest.mark.parametrize("client_wants_usage", [False, True])
async def test_a_stream_event_over_one_mebibyte_ends_with_an_error_event_at_once(
    oversized_event: str,
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    client_wants_usage: bool,
) -> None:
    """Client sees: the good event, then a stream_interrupted error event, well before totalMs.

    An "event" that grows past 1 MiB without a separator is not OpenAI SSE; the
    proxy stops following it, tells the client, and never forwards the garbage.
    """
    _, backup, base, proxy = await two_tier(fakes, proxies, primary_url=oversized_event)
    # with include_usage the proxy strips nothing, and still forwards only whole events
    extra = {"stream_options": {"include_usage": True}} if client_wants_usage else {}
    answer = await ask(http, base, stream=True, **extra)
    assert answer.elapsed < 1.5  # totalMs is 2 s and the upstream never ends by itself
    assert answer.status == 200 and answer.content_chunks() == 1
    assert b"xxxx" not in answer.body
    err = answer.error()
    assert err is not None and err["code"] == "stream_interrupted"
    assert "malformed stream" in err["message"], err
    assert backup.stats.requests == 0  # the first byte went out: never retried
    doc = await status(http, proxy)  # type: ignore[arg-type]
    assert doc["health"]["errors"] == 1
