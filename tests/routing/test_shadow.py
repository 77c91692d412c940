"""Shadow traffic (``mirror:``): a copy goes to another target, and the client never notices.

Proved against a real proxy over loopback:

* the client's latency is the primary's, not the shadow's (compared, as a ratio,
  with a route without mirror in the same proxy and the same test);
* the copy starts only after the primary answered (timestamps on one clock);
* a shadow that fails, hangs or can't be reached never changes the client's answer;
* ``maxConcurrent`` bounds the copies in flight; the rest are skipped and counted;
* the shadow's latency, tokens and cost are in the ``modelroute_shadow_*``
  metrics, and never in ``modelroute_cost_usd_total`` (the bill of what served).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
from modelroute.proxy.process import RunningProxy

from ..proxy.conftest import FakeFactory, ProxyFactory, dead_port, provider_yaml, route_yaml
from .conftest import RecorderFactory, metric_sum

SHADOW_DELAY = 0.8  # seconds the shadow target takes (the seeds' slow candidate)
PRIMARY_DELAY = 0.05  # seconds the primary takes

MIRROR_MODELS = """  models:
    - {name: candidate-x, upstreamModel: cand-x-2026, outputUSDPerMTok: 3.0, inputUSDPerMTok: 1.0}
"""


def routes(primary_url: str, shadow_url: str, mirror: str = "percent: 100") -> str:
    """Two routes on the same primary: ``plain`` (no mirror) and ``mirrored``."""
    target = "{provider: primary, model: deepseek-v4-flash}"
    return (
        provider_yaml("primary", [("us-east-1", primary_url)])
        + provider_yaml("shadow", [("us-east-1", shadow_url)], MIRROR_MODELS)
        + route_yaml("plain", ["plain"], [target])
        + route_yaml(
            "mirrored",
            ["mirrored"],
            [target],
            f"  mirror: {{provider: shadow, model: candidate-x, {mirror}}}\n"
            "  timeouts: {firstByteMs: 3000, totalMs: 3000}",
        )
    )


def body(model: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"req-{i}"}], **extra}


async def timed(
    session: aiohttp.ClientSession, base: str, doc: dict[str, Any]
) -> tuple[float, float, int, bytes]:
    """(seconds until the whole answer was read, perf_counter then, status, body)."""
    started = time.perf_counter()
    async with session.post(f"{base}/chat/completions", json=doc) as resp:
        raw = await resp.read()
        done = time.perf_counter()
        return done - started, done, resp.status, raw


async def scrape(session: aiohttp.ClientSession, admin_url: str | None) -> str:
    assert admin_url is not None
    async with session.get(admin_url + "/metrics") as resp:
        return await resp.text()


async def settle(proxy: RunningProxy) -> None:
    """Wait (at most 5 s) until the proxy's shadow copies have finished."""
    tasks = set(proxy.proxy.dispatcher.mirror.tasks)
    if tasks:
        await asyncio.wait(tasks, timeout=5.0)


async def test_a_slow_shadow_leaves_the_client_latency_alone_and_starts_after_the_primary(
    recorders: RecorderFactory, proxies: ProxyFactory
) -> None:
    primary = await recorders(delay=PRIMARY_DELAY)
    shadow = await recorders(delay=SHADOW_DELAY, output_tokens=30)
    proxy = await proxies(routes(primary.url, shadow.url, "percent: 100, maxConcurrent: 50"))
    async with aiohttp.ClientSession() as session:
        # interleave plain and mirrored requests so both see the same machine load
        plain: list[float] = []
        mirrored: list[float] = []
        client_done: dict[int, float] = {}
        for i in range(8):
            elapsed, _, status, _ = await timed(session, proxy.base_url, body("plain", 100 + i))
            assert status == 200
            plain.append(elapsed)
            elapsed, done, status, raw = await timed(session, proxy.base_url, body("mirrored", i))
            assert status == 200
            assert b"rec rec" in raw  # the primary's answer, not the shadow's
            mirrored.append(elapsed)
            client_done[i] = done
        await settle(proxy)
        exposition = await scrape(session, proxy.admin_url)

    # the client waits for the primary only: same latency as without a mirror ...
    ratio = statistics.median(mirrored) / statistics.median(plain)
    assert ratio < 1.5, (mirrored, plain)
    # ... and never anywhere near the shadow's 0.8 s
    assert max(mirrored) < SHADOW_DELAY / 2, mirrored
    assert min(mirrored) >= PRIMARY_DELAY

    # every mirrored request was copied once; the plain ones never
    assert len(shadow.seen) == 8
    for i in range(8):
        (copy,) = shadow.marker(i)
        (first,) = primary.marker(i)
        assert copy.body["model"] == "cand-x-2026"  # the mirror target's upstream name
        assert "stream" not in copy.body
        # the copy arrived only after the primary had answered ...
        assert first.answered is not None and copy.arrived > first.answered
        # ... and after the client had read it (the copy goes out once the answer is on its way)
        assert copy.arrived > client_done[i]
    assert not shadow.marker(100)

    # the shadow is measured on its own: 8 ok, each ~0.8 s, its tokens and cost
    assert metric_sum(exposition, "modelroute_shadow_requests_total", outcome="ok") == 8
    assert (
        metric_sum(
            exposition,
            "modelroute_shadow_duration_seconds_sum",
            route="mirrored",
            model="candidate-x",
        )
        >= 8 * SHADOW_DELAY
    )
    labels = {"route": "mirrored", "model": "candidate-x", "provider": "shadow"}
    assert metric_sum(exposition, "modelroute_shadow_tokens_total", type="output", **labels) == 240
    assert metric_sum(exposition, "modelroute_shadow_tokens_total", type="input", **labels) == 80
    # 8 × (30 output × $3.00/M + 10 input × $1.00/M): both prices are in the table
    want = 8 * (30 * 3.0 + 10 * 1.0) / 1e6
    assert abs(metric_sum(exposition, "modelroute_shadow_cost_usd_total", **labels) - want) < 1e-12
    # ... and never in the bill of what served the client
    assert metric_sum(exposition, "modelroute_cost_usd_total", model="candidate-x") == 0
    assert metric_sum(exposition, "modelroute_tokens_total", model="candidate-x") == 0
    assert metric_sum(exposition, "modelroute_requests_total", model="candidate-x") == 0
    mirrored_cost = metric_sum(exposition, "modelroute_cost_usd_total", route="mirrored")
    plain_cost = metric_sum(exposition, "modelroute_cost_usd_total", route="plain")
    assert mirrored_cost == plain_cost > 0  # same primary, same answers, same bill


async def test_a_streamed_request_is_mirrored_after_its_first_chunk_and_never_streamed(
    fakes: FakeFactory, recorders: RecorderFactory, proxies: ProxyFactory
) -> None:
    primary = await fakes(tokens_per_second=200)  # 20 chunks over ~0.1 s
    shadow = await recorders(delay=SHADOW_DELAY)
    proxy = await proxies(routes(primary.url, shadow.url))
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(
            f"{proxy.base_url}/chat/completions", json=body("mirrored", 1, stream=True)
        ) as resp:
            assert resp.status == 200
            first_chunk = None
            async for _ in resp.content.iter_any():
                first_chunk = first_chunk or time.perf_counter()
            finished = time.perf_counter()
        await settle(proxy)
    assert first_chunk is not None
    assert finished - started < SHADOW_DELAY / 2
    (copy,) = shadow.marker(1)
    assert "stream" not in copy.body and "stream_options" not in copy.body
    # the client had its first chunk before the copy went out
    assert copy.arrived > first_chunk


async def test_a_failing_or_unreachable_shadow_never_reaches_the_client(
    recorders: RecorderFactory, proxies: ProxyFactory
) -> None:
    primary = await recorders()
    failing = await recorders(status=500)
    hanging = await recorders(delay=10.0)  # longer than the route's totalMs (3 s): times out
    async with aiohttp.ClientSession() as session:
        answers: dict[str, list[tuple[int, str]]] = {}
        outcome: dict[str, str] = {}
        for name, url in (
            ("baseline", None),
            ("failing", failing.url),
            ("dead", f"http://127.0.0.1:{dead_port()}/v1"),
            ("hanging", hanging.url),
        ):
            proxy = await proxies(routes(primary.url, url or failing.url))
            model = "plain" if url is None else "mirrored"
            got = []
            for i in range(3):
                elapsed, _, status, raw = await timed(session, proxy.base_url, body(model, i))
                got.append((status, raw.decode().split('"choices"', 1)[1]))
                assert elapsed < 1.0, (name, elapsed)
            answers[name] = got
            if name != "hanging":
                await settle(proxy)
            exposition = await scrape(session, proxy.admin_url)
            outcome[name] = exposition
    # the client's answers are the same with a failing, dead or hanging shadow as without one
    for name in ("failing", "dead", "hanging"):
        assert answers[name] == answers["baseline"], name
    assert all(status == 200 for status, _ in answers["baseline"])
    # a shadow copy is sent after the answer, off the request path: on a loaded box the
    # hanging one's last copy may still be on its way when the loop above ends
    for _ in range(50):
        if len(hanging.seen) >= 3:
            break
        await asyncio.sleep(0.05)
    assert len(failing.seen) == 3 and len(hanging.seen) == 3
    for name in ("failing", "dead"):
        exposition = outcome[name]
        assert metric_sum(exposition, "modelroute_shadow_requests_total", outcome="error") == 3
        assert metric_sum(exposition, "modelroute_requests_total", outcome="ok") == 3
        assert metric_sum(exposition, "modelroute_requests_total", outcome="error") == 0
        assert metric_sum(exposition, "modelroute_shadow_cost_usd_total") == 0
    # the hanging ones are still in flight while the clients already have their answers
    assert metric_sum(outcome["hanging"], "modelroute_shadow_requests_total") == 0
    assert metric_sum(outcome["hanging"], "modelroute_requests_total", outcome="ok") == 3


async def test_max_concurrent_bounds_the_copies_and_counts_the_skipped(
    recorders: RecorderFactory, proxies: ProxyFactory
) -> None:
    primary = await recorders(delay=0.01)
    shadow = await recorders(delay=SHADOW_DELAY)
    proxy = await proxies(routes(primary.url, shadow.url, "percent: 100, maxConcurrent: 2"))
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(timed(session, proxy.base_url, body("mirrored", i)) for i in range(12))
        )
        assert all(status == 200 for _, _, status, _ in results)
        assert max(elapsed for elapsed, _, _, _ in results) < SHADOW_DELAY
        await settle(proxy)
        exposition = await scrape(session, proxy.admin_url)
        # once the copies are done, the bound is free again
        _, _, status, _ = await timed(session, proxy.base_url, body("mirrored", 99))
        assert status == 200
        await settle(proxy)
        after = await scrape(session, proxy.admin_url)
    assert shadow.max_in_flight == 2
    assert len(shadow.seen) == 3  # two of the burst, then the one after
    assert metric_sum(exposition, "modelroute_shadow_requests_total", outcome="ok") == 2
    assert metric_sum(exposition, "modelroute_shadow_requests_total", outcome="skipped") == 10
    assert metric_sum(after, "modelroute_shadow_requests_total", outcome="ok") == 3
    # skipped copies were never sent: no duration observed for them
    assert metric_sum(after, "modelroute_shadow_duration_seconds_count") == 3


async def test_percent_samples_the_copies(
    recorders: RecorderFactory, proxies: ProxyFactory
) -> None:
    primary = await recorders()
    shadow = await recorders()
    proxy = await proxies(routes(primary.url, shadow.url, "percent: 25, maxConcurrent: 1000"))
    sem = asyncio.Semaphore(16)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with sem:
            _, _, status, _ = await timed(session, proxy.base_url, body("mirrored", i))
            assert status == 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, i) for i in range(400)))
        await settle(proxy)
    # 25 % of 400 = 100; σ ≈ 8.7, so ± 40 is > 4σ: fails only if sampling is broken
    assert 60 <= len(shadow.seen) <= 140, len(shadow.seen)
