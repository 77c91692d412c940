"""``modelroute proxy --workers N``: N processes share the API port; only the first has the admin port.

What a user relies on when giving a pod more than one core:

* every request is answered, whichever worker the kernel hands its
  connection to (SO_REUSEPORT spreads connections, not requests);
* more than one worker really serves (the work is spread);
* ``/metrics`` on the admin port is **worker 0's alone**: each worker counts
  its own requests, so the scraped counters see about 1/N of the traffic
  (docs/performance.md says how to read them).

Bounded: one fake upstream, one proxy with 2 workers, 200 requests on fresh
connections; every process is stopped at the end (the proxy stops its workers).
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import psutil
import pytest

from .conftest import free_port, server, wait_ready

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
MODELROUTE = Path(sys.executable).parent / "modelroute"
REQUESTS = 200
CHAT = "/v1/chat/completions"
BODY = b'{"model": "bench", "messages": [{"role": "user", "content": "hi"}]}'
NO_TRACING = {"OTEL_SDK_DISABLED": "true"}


def _workers(pid: int) -> list[int]:
    """The proxy's process and its forked workers (direct children)."""
    return [pid, *(child.pid for child in psutil.Process(pid).children())]


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def _burst(url: str, n: int) -> list[int]:
    # a fresh connection per request, so the kernel's SO_REUSEPORT hash picks a worker each time
    connector = aiohttp.TCPConnector(force_close=True, limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.post(
                url, data=BODY, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*(one() for _ in range(n)))


def _requests_counted(metrics: str) -> float:
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^modelroute_requests_total\{[^}]*route="bench"[^}]*\} (\S+)$', metrics, re.M
        )
    )


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
def test_two_workers_share_the_port_and_only_worker_zero_serves_metrics(tmp_path: Path) -> None:
    up, api, admin = free_port(), free_port(), free_port()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        (BENCH / "routes.yaml").read_text().replace("127.0.0.1:18500", f"127.0.0.1:{up}")
    )
    with (
        server([str(MODELROUTE), "fake-provider", "--listen", f"127.0.0.1:{up}",
                "--latency-ms", "2", "--output-tokens", "5"], NO_TRACING) as upstream,
        server([str(MODELROUTE), "proxy", "--routes", str(routes), "--listen",
                f"127.0.0.1:{api}", "--admin", f"127.0.0.1:{admin}", "--workers", "2"],
               NO_TRACING) as proxy,
    ):  # fmt: skip
        wait_ready(f"http://127.0.0.1:{up}{CHAT}", upstream, BODY)
        wait_ready(f"http://127.0.0.1:{api}{CHAT}", proxy, BODY)
        deadline = time.monotonic() + 10
        while len(_workers(proxy.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = _workers(proxy.pid)
        assert len(pids) == 2, f"expected the proxy and one forked worker, found {pids}"
        before = {p: _cpu_seconds(p) for p in pids}
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
            counted_before = _requests_counted(resp.read().decode())

        statuses = asyncio.run(_burst(f"http://127.0.0.1:{api}{CHAT}", REQUESTS))

        used = {p: _cpu_seconds(p) - before[p] for p in pids}
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
            counted = _requests_counted(resp.read().decode()) - counted_before

    assert statuses.count(200) == REQUESTS, f"not every request was answered: {statuses}"
    # both processes did work: SO_REUSEPORT spread the connections
    assert all(cpu > 0 for cpu in used.values()), f"CPU seconds per worker: {used}"
    # worker 0's registry saw some of the burst, never all of it: the others count elsewhere
    assert 0 < counted < REQUESTS, (
        f"/metrics counted {counted} of {REQUESTS} requests; worker 0 alone should see a share"
    )
