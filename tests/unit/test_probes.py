"""Active probes' rules (proxy/probes.py): timeouts, verdicts, and the runtime on a fake hop.

The verdict rules are pure; :class:`Prober` is driven here with a clock and a
stand-in for ``UpstreamPool.probe`` (no sockets): which endpoints it probes,
that one endpoint never has two probes out, that the concurrency bound holds,
and that what a probe finds reaches the endpoint's health.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any, cast

import pytest
from modelroute.proxy.credentials import Credentials
from modelroute.proxy.endpoints import EndpointBook, ErrorKind, settings_of
from modelroute.proxy.probes import (
    Prober,
    ProbeResult,
    ProbeState,
    Verdict,
    probe_timeout,
    verdict_of_error,
    verdict_of_status,
)
from modelroute.proxy.table import CompiledTable
from modelroute.proxy.upstream import (
    BadResponse,
    ConnectFailed,
    ConnectRefused,
    Disconnected,
    UpstreamPool,
)
from pydantic import ValidationError

from modelroute.resources import HealthCheck


def check(**fields: Any) -> HealthCheck:
    return HealthCheck.model_validate(fields)


def test_the_timeout_is_timeout_ms_raised_for_a_far_region_capped_by_the_connect_timeout() -> None:
    default = check()
    assert probe_timeout(default, 1000, 0.002) == 0.3  # near: timeoutMs stands
    assert probe_timeout(default, 1000, 0.15) == pytest.approx(0.6)  # far: 4 × its typical probe
    assert probe_timeout(default, 1000, 0.5) == 1.0  # never over connectTimeoutMs ...
    assert probe_timeout(default, 200, 0.002) == 0.2  # ... which also caps timeoutMs itself
    assert probe_timeout(check(intervalMs=500, timeoutMs=400), 5000, 0.3) == 0.5  # nor the interval
    # nothing learnt yet: the connect timeout, or a far endpoint would be ejected at once
    assert probe_timeout(default, 1000, None) == 1.0


def test_http_verdicts_follow_healthy_below_and_a_connect_is_healthy() -> None:
    http = check(http={"path": "/models"})
    assert verdict_of_status(None, check()) == Verdict(ProbeResult.OK)
    assert verdict_of_status(200, http).result is ProbeResult.OK
    assert verdict_of_status(401, http).result is ProbeResult.OK  # the provider's edge answered
    sick = verdict_of_status(503, http)
    assert sick.result is ProbeResult.FAILED and sick.kind is ErrorKind.PROBE_STATUS
    assert "503" in sick.detail
    strict = check(http={"path": "/models", "healthyBelow": 400})
    assert verdict_of_status(401, strict).result is ProbeResult.FAILED


def test_errors_are_timeouts_refusals_or_not_sent() -> None:
    timed_out = verdict_of_error(ConnectFailed("no connection", timed_out=True), 0.3)
    assert timed_out.kind is ErrorKind.PROBE_TIMEOUT and "300 ms" in timed_out.detail
    assert verdict_of_error(TimeoutError(), 0.3).kind is ErrorKind.PROBE_TIMEOUT
    assert verdict_of_error(ConnectFailed("refused"), 0.3).kind is ErrorKind.PROBE_REFUSED
    assert verdict_of_error(Disconnected("reset"), 0.3).kind is ErrorKind.PROBE_REFUSED
    guarded = verdict_of_error(ConnectRefused("not connecting to x: metadata"), 0.3)
    assert guarded.result is ProbeResult.NOT_SENT and guarded.kind is None


def test_the_typical_time_learns_from_successes_only() -> None:
    state = ProbeState()
    state.observe(Verdict(ProbeResult.OK), 0.010, 1.0)
    state.observe(Verdict(ProbeResult.FAILED, ErrorKind.PROBE_TIMEOUT), 0.300, 2.0)
    assert state.typical == 0.010 and state.result is ProbeResult.FAILED and state.at == 2.0
    state.observe(Verdict(ProbeResult.OK), 0.020, 3.0)
    assert state.typical == pytest.approx(0.012)


def test_http_probe_settings_are_validated_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="stay under"):
        check(http={"path": "//elsewhere.example/models"})
    with pytest.raises(ValidationError, match="healthyBelow"):
        check(http={"path": "/models", "healthyBelow": 100})
    assert check(http={"path": "/models"}).http.send_key  # type: ignore[union-attr]


# -- the runtime, on a fake hop ------------------------------------------------------------------


def table(
    regions: list[str], health_check: dict[str, Any] | None = None, host: str = "{}.example"
) -> CompiledTable:
    provider: dict[str, Any] = {
        "name": "p",
        "endpoints": [{"region": r, "baseURL": f"http://{host.format(r)}/v1"} for r in regions],
        "credentials": {"env": "P_KEY"},
        "healthCheck": health_check or {},
    }
    doc = {
        "schemaVersion": 1,
        "namespace": "default",
        "providers": [provider],
        "routes": [
            {
                "name": "chat",
                "aliases": ["chat"],
                "targets": [
                    {"provider": "p", "model": "m", "upstreamModel": "m", "regions": regions}
                ],
            }
        ],
    }
    return CompiledTable.model_validate(doc)


class FakeHop:
    """Stands in for ``UpstreamPool.probe``: answers per base URL, counts, and can hold probes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, dict[str, str]]] = []
        self.fail: dict[str, BaseException] = {}
        self.gate: asyncio.Event | None = None
        self.out = 0
        self.most_out = 0
        self.dropped: list[str] = []  # base URLs whose idle connections were closed

    def pool(self, provider: object) -> FakeHop:
        return self

    def drop_idle(self, base_url: str) -> int:
        self.dropped.append(base_url)
        return 0

    async def probe(
        self,
        provider: object,
        base_url: str,
        *,
        within: float,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int | None:
        self.calls.append((base_url, path, dict(headers or {})))
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if base_url in self.fail:
                raise self.fail[base_url]
            return None if path is None else 200
        finally:
            self.out -= 1


def prober(
    hop: FakeHop, t: CompiledTable, now: list[float], concurrency: int = 8
) -> tuple[Prober, EndpointBook]:
    book = EndpointBook()
    book.set_probed(True)
    rng = random.Random(1)
    book.configure(
        (
            (f"p@{r}", settings_of(t.providers[0]))
            for r in (e.region for e in t.providers[0].endpoints)
        ),
        now[0],
        rng,
    )
    p = Prober(
        book,
        cast(UpstreamPool, hop),
        Credentials(),
        concurrency=concurrency,
        clock=lambda: now[0],
        rng=rng,
    )
    p.table_applied(t)
    return p, book


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_failed_probe_ejects_and_successes_in_a_row_readmit() -> None:
    hop, now = FakeHop(), [0.0]
    hop.fail["http://us.example/v1"] = ConnectFailed("refused")
    p, book = prober(hop, table(["us", "eu"]), now)
    now[0] = 0.2  # both first probes are due within a tenth of the interval
    assert sorted(p.launch_due(now[0])) == ["p@eu", "p@us"]
    assert p.launch_due(now[0]) == []  # one probe at a time per endpoint
    await settle()
    us = book.get("p@us")
    assert us is not None and us.ejected and us.last_error is ErrorKind.PROBE_REFUSED
    assert not book.get("p@eu").ejected  # type: ignore[union-attr]
    assert hop.dropped == ["http://us.example/v1"]  # its kept-alive connections go with it
    assert p.states["p@us"].result is ProbeResult.FAILED
    del hop.fail["http://us.example/v1"]  # healed
    now[0] = 1.2  # past the shortest ejection (1 s)
    assert "p@us" in p.launch_due(now[0])
    await settle()
    assert not us.available(now[0])  # one success is not enough ...
    now[0] = 2.2
    assert "p@us" in p.launch_due(now[0])
    await settle()
    assert us.available(now[0]) and us.probe_successes == 2  # ... two in a row are


async def test_concurrency_is_bounded_and_removed_endpoints_are_not_probed() -> None:
    hop, now = FakeHop(), [0.0]
    hop.gate = asyncio.Event()
    regions = [f"r{i}" for i in range(5)]
    p, book = prober(hop, table(regions), now, concurrency=2)
    now[0] = 0.2
    assert len(p.launch_due(now[0])) == 5
    await settle()
    assert hop.out == 2 and p.in_flight == 2  # three wait on the semaphore
    hop.gate.set()
    await settle()
    assert hop.most_out == 2 and len(hop.calls) == 5
    smaller = table(["r0"])
    book.configure([("p@r0", settings_of(smaller.providers[0]))], now[0], random.Random(2))
    p.table_applied(smaller)
    now[0] = 5.0
    assert p.launch_due(now[0]) == ["p@r0"]
    assert set(p.states) <= {"p@r0"}


async def test_an_http_probe_carries_the_key_only_when_asked_and_disabled_means_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("P_KEY", "sk-p")
    hop, now = FakeHop(), [0.0]
    p, _ = prober(hop, table(["us"], {"http": {"path": "/models"}}), now)
    now[0] = 0.2
    p.launch_due(now[0])
    await settle()
    assert hop.calls == [("http://us.example/v1", "/models", {"Authorization": "Bearer sk-p"})]
    hop2 = FakeHop()
    p2, _ = prober(hop2, table(["us"], {"http": {"path": "/models", "sendKey": False}}), now)
    p2.launch_due(now[0] + 1)
    await settle()
    assert hop2.calls == [("http://us.example/v1", "/models", {})]
    hop3 = FakeHop()
    p3, _ = prober(hop3, table(["us"], {"enabled": False}), now)
    assert p3.launch_due(now[0] + 10) == [] and hop3.calls == []


async def test_stop_cancels_probes_out_and_ejections_end_by_time_again() -> None:
    hop, now = FakeHop(), [0.0]
    hop.gate = asyncio.Event()
    p, book = prober(hop, table(["us"]), now)
    p.start()
    now[0] = 0.2
    p.launch_due(now[0])
    await settle()
    assert hop.out == 1
    await p.stop()
    assert hop.out == 0 and not book.probed
    us = book.get("p@us")
    assert us is not None and not us.probing and not us.probed


async def test_a_bug_in_a_probe_is_logged_without_a_verdict_and_the_endpoint_probed_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hop, now = FakeHop(), [0.0]
    hop.fail["http://us.example/v1"] = RuntimeError("a bug")
    p, book = prober(hop, table(["us"]), now)
    now[0] = 0.2
    p.launch_due(now[0])
    await settle()
    us = book.get("p@us")
    assert us is not None and not us.ejected and not us.probing and us.probes_not_sent == 1
    assert "failed unexpectedly" in caplog.text
    now[0] = 1.2
    assert p.launch_due(now[0]) == ["p@us"]


async def test_a_probe_out_to_a_base_url_a_reload_moved_is_cancelled() -> None:
    """Same settings, another baseURL: the endpoint's health is kept, its probe out is not.

    Left running, it would go on carrying the provider's key (``sendKey``) to the old host
    and give the endpoint a verdict about where it no longer is.
    """
    hop, now = FakeHop(), [0.0]
    hop.gate = asyncio.Event()
    p, book = prober(hop, table(["us"], {"http": {"path": "/models"}}), now)
    now[0] = 0.2
    assert p.launch_due(now[0]) == ["p@us"]
    await settle()
    assert hop.out == 1 and hop.calls[0][0] == "http://us.example/v1"
    moved = table(["us"], {"http": {"path": "/models"}}, host="moved.example")
    book.configure([("p@us", settings_of(moved.providers[0]))], now[0], random.Random(2))
    p.table_applied(moved)
    await settle()
    assert hop.out == 0  # the probe to the old base URL was cancelled
    assert "p@us" not in p.states
    assert p.launch_due(now[0]) == ["p@us"]
    hop.gate.set()
    await settle()
    assert hop.calls[-1][0] == "http://moved.example/v1"


async def test_what_an_upstream_quotes_back_into_a_probe_failure_is_scrubbed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe's failure detail reaches /status, /explain and the log: never the key it sent."""
    monkeypatch.setenv("P_KEY", "sk-probe-secret-123")
    hop, now = FakeHop(), [0.0]
    hop.fail["http://us.example/v1"] = BadResponse(
        "the upstream sent Content-Encoding 'Bearer sk-probe-secret-123', not gzip/deflate"
    )
    p, book = prober(hop, table(["us"], {"http": {"path": "/models"}}), now)
    now[0] = 0.2
    p.launch_due(now[0])
    await settle()
    us = book.get("p@us")
    assert us is not None and us.last_error is ErrorKind.PROBE_REFUSED
    assert "sk-probe-secret-123" not in us.last_error_detail
    assert "sk-probe-secret-123" not in p.states["p@us"].detail
    assert "[redacted]" in p.states["p@us"].detail


async def test_a_probe_cancelled_by_a_reload_before_it_ran_leaves_the_endpoint_probed() -> None:
    """Launched, then the endpoint moved in the same loop turn: the task never ran at all."""
    hop, now = FakeHop(), [0.0]
    p, book = prober(hop, table(["us"]), now)
    now[0] = 0.2
    assert p.launch_due(now[0]) == ["p@us"]
    moved = table(["us"], host="moved.example")
    book.configure([("p@us", settings_of(moved.providers[0]))], now[0], random.Random(2))
    p.table_applied(moved)  # before the probe task had its first step
    await settle()
    assert hop.calls == []
    assert p.launch_due(now[0]) == ["p@us"]  # not stuck "probing" for ever
    await settle()
    assert hop.calls == [("http://moved.example/v1", None, {})]


def test_an_endpoint_pointed_at_another_base_url_starts_afresh() -> None:
    """A reload that fixes or replaces a region's baseURL drops the old host's ejection.

    Kept, the new host would stay out for the rest of the old one's ejection (up to
    maxEjectionMs) however healthy it is.
    """
    book, rng = EndpointBook(), random.Random(1)
    before = table(["us"]).providers[0]
    book.configure([("p@us", settings_of(before, "us"))], 0.0, rng)
    us = book.get("p@us")
    assert us is not None
    us.local_failure(ErrorKind.CONNECT_REFUSED, "refused", 0.0)
    us.local_failure(ErrorKind.CONNECT_REFUSED, "refused", 0.0)
    us.local_failure(ErrorKind.CONNECT_REFUSED, "refused", 0.0)
    assert us.ejected
    book.configure([("p@us", settings_of(before, "us"))], 0.1, rng)
    assert book.get("p@us") is us  # the same place: its state is kept
    after = table(["us"], host="fixed.example").providers[0]
    book.configure([("p@us", settings_of(after, "us"))], 0.2, rng)
    fresh = book.get("p@us")
    assert fresh is not us and fresh is not None and fresh.available(0.2)
