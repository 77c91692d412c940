"""The run: start the fakes and the proxy, send the script, take a region down, stop it all.

Why only orchestration here: what to send (:mod:`.workload`), how to judge
it (:mod:`.client`), what to watch (:mod:`.watch`, :mod:`.attempt_log`) and
what it adds up to (:mod:`.result`) live in their own modules; this one owns
the clock and the lifetimes, so every server is stopped before
:func:`run_demo` returns, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from modelroute.proxy.costreport import parse_exposition
from modelroute.proxy.process import RunningProxy, start_proxy
from modelroute.proxy.server import ProxyConfig

from ..fake_provider import FakeProvider, start_fake_provider
from .attempt_log import AttemptLog
from .client import send
from .options import DemoOptions
from .records import Attempt, RequestResult
from .result import DemoResult
from .topology import endpoint_of, knobs_for, load_template
from .watch import HealthWatch, metric_sums
from .workload import script


@dataclass
class _Fake:
    """A running fake and where the route file will find it."""

    provider: str
    region: str
    fake: FakeProvider
    url: str


async def _start_fakes(
    template: string.Template, stack: contextlib.AsyncExitStack
) -> dict[str, _Fake]:
    fakes: dict[str, _Fake] = {}
    for n, placeholder in enumerate(template.get_identifiers()):
        provider, region = endpoint_of(placeholder)
        fake, runner, port = await start_fake_provider(
            "127.0.0.1", 0, knobs_for(provider, region), seed=1000 + n
        )
        stack.push_async_callback(runner.cleanup)
        fakes[placeholder] = _Fake(provider, region, fake, f"http://127.0.0.1:{port}/v1")
    return fakes


async def _at(t0: float, offset: float) -> None:
    """Sleep until ``offset`` s after ``t0``: the schedule is open-loop, never paced by answers."""
    delay = t0 + offset - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def run_demo(options: DemoOptions | None = None) -> DemoResult:
    """Start everything, run the workload with the outage, stop everything, return what happened.

    Raises ``ValueError`` for bad options and
    :class:`~modelroute.proxy.sources.ConfigError` if the route file is broken.
    """
    options = options or DemoOptions()
    options.check()
    say = options.progress or (lambda _line: None)
    wall_started = time.perf_counter()
    template = load_template()
    async with contextlib.AsyncExitStack() as stack:
        fakes = await _start_fakes(template, stack)
        regions = {f.region for f in fakes.values()}
        if options.down not in regions:
            raise ValueError(f"no region {options.down!r} in the demo (it has {sorted(regions)})")
        endpoints: dict[str, list[str]] = {}
        for f in fakes.values():
            endpoints.setdefault(f.provider, []).append(f.region)
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelroute-demo-")))
        routes = workdir / "demo-routes.yaml"
        routes.write_text(
            template.substitute({name: f.url for name, f in fakes.items()}), encoding="utf-8"
        )
        running: RunningProxy = await start_proxy(
            ProxyConfig(
                listen=("127.0.0.1", 0),
                admin=("127.0.0.1", 0),
                route_files=[routes],
                drain_seconds=1.0,
                reload_seconds=3600.0,  # the file never changes during the run
                tracing=False,
            )
        )
        stack.push_async_callback(running.stop)
        log = AttemptLog()
        running.proxy.observers.add(log)
        assert running.admin_url is not None
        steps = script(options.seconds, options.rate)
        down_at = options.seconds * options.down_at
        back_at = None if options.back_at is None else options.seconds * options.back_at
        say(
            f"{len(fakes)} fake endpoints in {len(regions)} regions, the proxy on "
            f"{running.base_url}"
        )
        say(
            f"sending {len(steps)} requests over {options.seconds:g} s; "
            f"{options.down} goes down at {down_at:.1f} s"
            + (f", back at {back_at:.1f} s" if back_at is not None else "")
        )

        connector = aiohttp.TCPConnector(limit=0)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        t0 = time.perf_counter()
        watch = HealthWatch(session, running.admin_url + "/metrics", t0)
        watcher = asyncio.create_task(watch.run(0.1), name="demo-metrics-watch")
        in_region = [f for f in fakes.values() if f.region == options.down]

        async def outage() -> None:
            await _at(t0, down_at)
            for f in in_region:
                f.fake.knobs.update({"down": True})
            say(
                f"t={time.perf_counter() - t0:5.1f} s  {options.down} is DOWN: its "
                f"{len(in_region)} endpoints reset every connection"
            )
            if back_at is not None:
                await _at(t0, back_at)
                for f in in_region:
                    f.fake.knobs.update({"down": False})
                say(f"t={time.perf_counter() - t0:5.1f} s  {options.down} is back")

        chaos = asyncio.create_task(outage(), name="demo-outage")
        url = running.base_url + "/chat/completions"
        tasks: list[asyncio.Task[RequestResult]] = []
        try:
            for step in steps:
                await _at(t0, step.at)
                tasks.append(
                    asyncio.create_task(send(session, url, step, t0, options.answer_within))
                )
            sent_until = time.perf_counter() - t0
            pending = sum(1 for t in tasks if not t.done())
            say(f"t={sent_until:5.1f} s  last request sent; waiting for {pending} in flight")
            results = list(await asyncio.gather(*tasks))
            finished_at = time.perf_counter() - t0
            await chaos
            # the proxy accounts a request just after its last byte: let it catch up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.proxy.dispatcher.idle.wait(), 2.0)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            final = await watch.scrape()
        finally:
            for task in (*tasks, chaos, watcher):
                task.cancel()
            await asyncio.gather(*tasks, chaos, watcher, return_exceptions=True)

    for r in results:
        trace = log.traces.get(f"demo-{r.index:04d}")
        if trace is None:
            continue
        r.attempts = [
            Attempt(a.provider, a.model, a.region, a.result, a.started - t0) for a in trace.attempts
        ]
        r.cost_usd = trace.cost_usd
        r.input_tokens = trace.input_tokens
        r.output_tokens = trace.output_tokens
    outcomes, metric_fallbacks = metric_sums(final)
    return DemoResult(
        options=options,
        proxy_url=running.api_url,
        admin_url=running.admin_url,
        endpoints=endpoints,
        endpoint_urls={f"{f.provider}@{f.region}": f.url for f in fakes.values()},
        requests=results,
        down_region=options.down,
        down_at=down_at,
        back_at=back_at,
        sent_until=sent_until,
        finished_at=finished_at,
        wall_seconds=time.perf_counter() - wall_started,
        health_events=watch.events,
        cost=parse_exposition(final, source="the demo proxy's /metrics"),
        proxy_requests=outcomes,
        metrics_fallbacks=metric_fallbacks,
    )
