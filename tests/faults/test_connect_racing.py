"""Connect racing and in-flight rescue: a region whose connects hang, a connection gone silent.

A *black-holed* region on loopback without root: a listener with a backlog
of 0 whose accept queue is already full (a few connections nobody accepts).
The kernel then drops the next SYN, exactly as a firewall dropping packets
would, so a connect to it hangs – until the provider's connect timeout
(1 s by default).  With connect racing (on by default) the next region's
attempt starts once the connect is late (the endpoint's observed connect
time, 250 ms before any), and the request is answered from there.

The silent keep-alive connection: a fake that answered once and then goes
quiet on the connection the proxy kept; with a hedge the request is rescued
by another *endpoint* (a hedge to the same endpoint would wait on the same
path).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import aiohttp
import psutil
import pytest

from .conftest import (
    FakeFactory,
    ProxyFactory,
    ask,
    dead_port,
    quantile,
    route_yaml,
    status,
    steady_load,
)
from .conftest import provider_yaml as _provider_yaml


def provider_yaml(name: str, endpoints: list[tuple[str, str]]) -> str:
    """The suite's provider, without active probes: these tests count the connects the
    requests make (and the endpoint's own failures), which a probe's connects would join."""
    return _provider_yaml(name, endpoints, spec="  healthCheck: {enabled: false}\n")


INITIAL_DEADLINE_S = 0.25  # connectRacing.initialMs's default
CONNECT_TIMEOUT_S = 1.0  # a ModelProvider's connectTimeoutMs default
TIMEOUTS = (
    "  timeouts: {firstByteMs: 2000, totalMs: 5000}\n"
    "  retry: {maxAttempts: 3, baseBackoffMs: 5, maxBackoffMs: 20}\n"
)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port whose connects hang (SYNs dropped: the accept queue is full)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):  # backlog 0 still queues one; the rest are dropped SYNs of their own
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.02)
    probe = socket.socket()  # prove it: a blocking connect that does not complete
    probe.settimeout(0.2)
    with pytest.raises(TimeoutError):
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    for s in [*fillers, listener]:
        s.close()


def connects_to(port: int, besides: frozenset[int] = frozenset()) -> list[str]:
    """This process's sockets to ``port`` (the proxy runs in the test's process), by state.

    ``besides``: local ports to leave out (the fixture's own fillers).
    """
    return [
        c.status
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.laddr.port not in besides
    ]


async def until_no_connects_to(port: int, besides: frozenset[int], limit: float) -> float:
    started = time.perf_counter()
    while connects_to(port, besides):
        assert time.perf_counter() - started < limit, connects_to(port, besides)
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_hanging_connect_is_raced_by_the_next_region(
    stream: bool,
    blackhole: int,
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    figures: list[str],
) -> None:
    eu = await fakes("eu-west-1", latency_ms=10)
    proxy = await proxies(
        provider_yaml(
            "global",
            [("us-east-1", f"http://127.0.0.1:{blackhole}/v1"), ("eu-west-1", eu.url)],
        )
        + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
    )
    fillers = frozenset(int(c.laddr.port) for c in psutil.Process().net_connections("tcp"))
    answer = await ask(http, proxy.base_url, stream=stream)
    assert answer.complete(), answer.body[:300]
    assert answer.target == "global/chat-a@eu-west-1"
    # the racer is an attempt like any other: the late connect was attempt 1
    assert answer.attempts == 2, answer.headers
    # answered at about the deadline, not after the connect timeout
    assert answer.elapsed < 0.4, answer.elapsed
    assert answer.elapsed >= INITIAL_DEADLINE_S * 0.9
    # the loser was never handed a request; it keeps connecting to its full timeout, then
    # its socket is closed – and that full timeout, not the late deadline, is the verdict
    assert connects_to(blackhole, fillers) == ["SYN_SENT"]
    closed_after = await until_no_connects_to(blackhole, fillers, CONNECT_TIMEOUT_S + 1.0)
    doc = await status(http, proxy)
    us = next(e for e in doc["endpoints"] if e["endpoint"] == "global@us-east-1")
    assert us["lastError"] == "connect_timeout" and us["consecutiveFailures"] == 1, us
    assert proxy.explain_url is not None
    async with http.get(proxy.explain_url + "/explain?n=1") as resp:
        explained = await resp.json()
    (last,) = explained["requests"]
    results = [(a["region"], a["result"]) for a in last["attempts"]]
    assert results == [("us-east-1", "race_lost"), ("eu-west-1", "ok")], last["attempts"]
    figures.append(
        f"[connect-race{'-stream' if stream else ''}] first region black-holed: answered "
        f"by the next in {answer.elapsed * 1000:.0f} ms (connect timeout "
        f"{CONNECT_TIMEOUT_S * 1000:.0f} ms); the loser's socket closed "
        f"{closed_after * 1000:.0f} ms after the answer"
    )


async def test_a_connect_that_is_only_slow_is_abandoned_unsent_and_not_a_failure(
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    figures: list[str],
) -> None:
    """The first region's connect completes – at the kernel's SYN retransmit, ~1 s in.

    Its accept queue is full until 0.5 s, then drained: the dropped SYN is sent again
    at 1 s and answered.  By then the next region has answered; the late connection
    is closed without a byte written, and it is no failure (``connectTimeoutMs`` 3000
    was never reached).
    """
    eu = await fakes("eu-west-1", latency_ms=10)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    listener.setblocking(False)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    filler_ports = {int(f.getsockname()[1]) for f in fillers}
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    closed_by_peer: list[int] = []  # client ports whose connection ended (EOF)
    readers: set[asyncio.Task[None]] = set()

    async def accept_late() -> None:
        await asyncio.sleep(0.5)
        while True:
            conn, peer = await loop.sock_accept(listener)
            conn.setblocking(False)
            readers.add(loop.create_task(read_all(conn, int(peer[1]))))

    async def read_all(conn: socket.socket, peer_port: int) -> None:
        with conn:
            while data := await loop.sock_recv(conn, 4096):
                received.append(data)
            closed_by_peer.append(peer_port)

    provider = provider_yaml(
        "global", [("us-east-1", f"http://127.0.0.1:{port}/v1"), ("eu-west-1", eu.url)]
    ).replace("  api: openai\n", "  api: openai\n  connectTimeoutMs: 3000\n")
    proxy = await proxies(
        provider + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
    )
    acceptor = asyncio.create_task(accept_late())
    try:
        answer = await ask(http, proxy.base_url)
        assert answer.complete() and answer.target == "global/chat-a@eu-west-1"
        assert answer.attempts == 2 and answer.elapsed < 0.4, (answer.attempts, answer.elapsed)
        await asyncio.sleep(1.2)  # the late connect completes at ~1 s and is closed at once
        doc = await status(http, proxy)
    finally:
        acceptor.cancel()
        for sock in [*fillers, listener]:
            sock.close()
    assert received == []  # connected, and not a byte of the request was written
    # the proxy's late connection was made (accepted here) and closed by the proxy at once
    assert [p for p in closed_by_peer if p not in filler_ports], closed_by_peer
    us = next(e for e in doc["endpoints"] if e["endpoint"] == "global@us-east-1")
    assert us["consecutiveFailures"] == 0 and us["lastError"] is None, us
    assert us["state"] == "healthy"
    figures.append(
        f"[connect-race-slow] first region's connect completed at its SYN retransmit (~1 s): "
        f"answered by the next in {answer.elapsed * 1000:.0f} ms, the late connection closed "
        "unsent, no failure counted"
    )


@pytest.mark.parametrize(
    ("hedge", "within"),
    [("{afterMs: 100}", 0.5), ("{percentile: 95}", 0.95)],  # cold: half of firstByteMs 1500
    ids=["after-ms", "percentile-cold"],
)
async def test_a_hedge_rescues_a_silent_keepalive_connection_at_another_endpoint(
    hedge: str,
    within: float,
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    figures: list[str],
) -> None:
    us = await fakes("us-east-1", latency_ms=5)
    eu = await fakes("eu-west-1", latency_ms=5)
    # plan order: primary/chat-a@us, primary/chat-b@us (the same endpoint), backup@eu
    proxy = await proxies(
        provider_yaml("primary", [("us-east-1", us.url)])
        + provider_yaml("backup", [("eu-west-1", eu.url)])
        + route_yaml(
            "chat",
            ["chat"],
            [
                "{provider: primary, model: chat-a}",
                "{provider: primary, model: chat-b, tier: 1}",
                "{provider: backup, model: chat-b, tier: 2}",
            ],
            "  timeouts: {firstByteMs: 1500, totalMs: 5000}\n"
            "  retry: {maxAttempts: 3, baseBackoffMs: 5, maxBackoffMs: 20}\n"
            f"  hedge: {hedge}\n",
        )
    )
    warm = await ask(http, proxy.base_url)
    assert warm.complete() and warm.target == "primary/chat-a@us-east-1"
    us.knobs.update({"latency_ms": 60_000})  # the kept-alive connection goes silent
    answer = await ask(http, proxy.base_url)
    assert answer.complete(), answer.body[:300]
    assert us.stats.requests == 2  # it was sent, on the kept-alive connection, and hung there
    assert answer.target == "backup/chat-b@eu-west-1", answer.target
    assert answer.attempts == 2
    assert answer.elapsed < within, answer.elapsed
    figures.append(
        f"[in-flight-rescue] kept-alive connection gone silent, hedge {hedge}: answered "
        f"by another endpoint in {answer.elapsed * 1000:.0f} ms (firstByteMs 1500)"
    )


def blackhole_on(port: int) -> list[socket.socket]:
    """Turn ``port`` (a region's, its server just stopped) into a black hole; the sockets to close."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(0)
    held = [listener]
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        held.append(s)
    return held


@pytest.mark.slow
async def test_a_region_whose_connects_hang_under_load_costs_a_deadline_not_a_timeout(
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
    figures: list[str],
) -> None:
    """40 requests/s; us-east-1 stops and its port then swallows SYNs (connects hang).

    Default settings but firstByteMs: the kept-alive connections to it are reset (the
    server stopped), every new connect hangs.  Nothing may fail and nothing may wait
    for the connect timeout: the endpoint's connects took ~1 ms, so its deadline is
    the floor (100 ms).  Once the abandoned connects have timed out (the full connect
    timeout is the verdict) the endpoint is ejected and nothing is sent there.
    """
    us = await fakes("us-east-1", latency_ms=20)
    eu = await fakes("eu-west-1", latency_ms=20)
    proxy = await proxies(
        provider_yaml("global", [("us-east-1", us.url), ("eu-west-1", eu.url)])
        + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
    )
    held: list[socket.socket] = []

    async def fault_after(delay: float) -> float:
        await asyncio.sleep(delay)
        at = time.perf_counter()
        await us.kill()
        held.extend(blackhole_on(us.port))
        return at

    try:
        load, fault_at = await asyncio.gather(
            steady_load(http, proxy.base_url, 40.0, 4.0), fault_after(1.5)
        )
    finally:
        for s in held:
            s.close()
    assert not load.exceptions, load.exceptions[:3]
    failed = [a for a in load.answers if not a.complete()]
    assert not failed, [(a.status, a.body[:200]) for a in failed[:3]]
    during = [a for a in load.answers if a.started + a.elapsed >= fault_at]
    raced = [a for a in during if a.attempts > 1]
    assert raced and all(a.target.endswith("@eu-west-1") for a in raced)
    worst = max(a.elapsed for a in during)
    p99 = quantile([a.elapsed for a in during], 0.99)
    # the abandoned connects ran on to their timeout: three in a row eject the endpoint, and
    # while it is out nothing is sent there at all (baseEjectionMs 1 s, so from ~1 s to ~2 s)
    out = [a for a in during if fault_at + 1.25 < a.started < fault_at + 1.85]
    assert out and all(a.attempts == 1 and a.target.endswith("@eu-west-1") for a in out)
    doc = await status(http, proxy)
    us_endpoint = next(e for e in doc["endpoints"] if e["endpoint"] == "global@us-east-1")
    assert us_endpoint["ejections"] >= 1 and us_endpoint["lastError"] == "connect_timeout"
    figures.append(
        f"[connect-blackhole] {len(load.answers)} requests at 40/s, 0 failed; {len(raced)} "
        f"raced to eu-west-1 in at most {max(a.elapsed for a in raced) * 1000:.0f} ms; worst "
        f"during the fault {worst * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (connect timeout "
        f"{CONNECT_TIMEOUT_S * 1000:.0f} ms); ejected by the abandoned connects' timeouts"
    )
    assert worst < 0.5, worst


async def test_a_racer_refused_at_once_lets_the_next_region_race_the_late_connect(
    blackhole: int,
    fakes: FakeFactory,
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
) -> None:
    """us-east-1 swallows the connect, eu-west-1 refuses it at once, ap-south-1 is fine.

    The racer to eu-west-1 fails in a millisecond and reached no upstream; the late
    connect still runs.  The next region must race it then, not once the late connect
    has used up its whole connect timeout (1 s).
    """
    ap = await fakes("ap-south-1", latency_ms=10)
    refused = f"http://127.0.0.1:{dead_port()}/v1"
    proxy = await proxies(
        provider_yaml(
            "global",
            [
                ("us-east-1", f"http://127.0.0.1:{blackhole}/v1"),
                ("eu-west-1", refused),
                ("ap-south-1", ap.url),
            ],
        )
        + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
    )
    answer = await ask(http, proxy.base_url)
    assert answer.complete(), answer.body[:300]
    assert answer.target == "global/chat-a@ap-south-1"
    assert answer.attempts == 3, answer.headers
    assert answer.elapsed < 0.6, answer.elapsed  # not the late connect's 1 s timeout
