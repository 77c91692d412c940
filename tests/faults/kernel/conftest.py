"""Fixtures of the kernel fault suite: a namespace with two regions' fakes and a proxy in it.

``world()`` makes a fresh namespace (``netns.py``), starts one fake provider
per region on a port of its own, then ``modelroute proxy`` with the route of
issue 14 – two regions, three tiers, every setting at its default – and
hands back a :class:`World` that runs the load (``client.py``, inside the
namespace) while it applies faults on a schedule.  Every process is started
here and stopped here; the namespace is deleted after each test and, should
anything escape, by a session finalizer.

Needs root, ``ip`` and ``nft``: without them the suite skips locally with
the reason, and fails under ``CI=true`` (CI installs them; a skip there would
hide a broken installer – the contract of ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from . import netns
from .netns import KernelUnavailable, NetNS

HERE = Path(__file__).parent
CLIENT = HERE / "client.py"
PROXY_PORT = 15400  # the namespace is empty: fixed ports cannot collide with anything
ADMIN_PORT = 15401
REGION_PORTS = {"us-east-1": 18101, "eu-west-1": 18102}
PREFERRED, SECOND = "us-east-1", "eu-west-1"
FAKE_LATENCY_MS = 20
RATE = 50.0  # requests per second, the steady load of every scenario


def routes_yaml() -> str:
    """Issue 14's route: three providers (tiers 0-2), each in both regions; defaults otherwise.

    No timeouts, retry, breaker or hedge on the route and nothing but the
    region order on the FailoverPolicy: what is measured is what a user gets
    without tuning (firstByteMs 3000, connectTimeoutMs 1000, 3 attempts,
    breaker 5 in 60 s open 30 s, probes every 1 s, failback after 60 s).
    """
    models = (
        "  models:\n"
        "    - {name: chat-a, upstreamModel: chat-a-up, outputUSDPerMTok: 1.0, "
        "inputUSDPerMTok: 0.5, contextTokens: 32000}\n"
    )
    out = []
    for name in ("tier0", "tier1", "tier2"):
        endpoints = "\n".join(
            f'    - {{region: {region}, baseURL: "http://127.0.0.1:{port}/v1"}}'
            for region, port in REGION_PORTS.items()
        )
        out.append(
            "apiVersion: modelroute.io/v1alpha1\nkind: ModelProvider\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            "spec:\n  api: openai\n  endpoints:\n"
            f"{endpoints}\n  credentials: {{env: FAKE_PROVIDER_KEY}}\n{models}---\n"
        )
    out.append(
        "apiVersion: modelroute.io/v1alpha1\nkind: ModelRoute\n"
        "metadata: {name: chat, namespace: default}\n"
        "spec:\n  models: [chat]\n  targets:\n"
        "    - {provider: tier0, model: chat-a, tier: 0}\n"
        "    - {provider: tier1, model: chat-a, tier: 1}\n"
        "    - {provider: tier2, model: chat-a, tier: 2}\n---\n"
        "apiVersion: modelroute.io/v1alpha1\nkind: FailoverPolicy\n"
        "metadata: {name: regions}\n"
        f"spec:\n  regionPreference: [{PREFERRED}, {SECOND}]\n---\n"
    )
    return "".join(out)


# ---------------------------------------------------------------------------------------
# what the load saw


@dataclass(frozen=True)
class Rec:
    """One client request: monotonic start/end, what answered it, how many attempts it took."""

    i: int
    start: float
    end: float
    status: int
    ok: bool
    target: str
    attempts: int
    error: str

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def region(self) -> str:
        return self.target.rsplit("@", 1)[-1] if "@" in self.target else ""

    def touched(self, region: str) -> bool:
        """Did this request spend an attempt in ``region``?

        The proxy tells the client the final target and the attempt count; in
        this route every plan puts the preferred region first, so a request
        answered from elsewhere after more than one attempt tried it first
        (and a failed one is counted too: it found no way round).
        """
        if not self.ok:
            return True
        return self.region() == region or (region == PREFERRED and self.attempts > 1)


@dataclass
class Run:
    records: list[Rec]
    t0: float  # the first request's start
    events: dict[str, float]  # fault label → when it was in force (monotonic)
    status: dict[str, Any]

    def at(self, label: str) -> float:
        return self.events[label]

    def started(self, a: float, b: float = float("inf")) -> list[Rec]:
        return [r for r in self.records if a <= r.start < b]

    def in_flight(self, a: float, b: float = float("inf")) -> list[Rec]:
        """Requests running at any moment of [a, b)."""
        return [r for r in self.records if r.start < b and r.end > a]

    def last_touch(self, region: str, a: float, b: float = float("inf")) -> float | None:
        """How long after ``a`` the last request that touched ``region`` started (None: none did)."""
        touched = [r.start for r in self.started(a, b) if r.touched(region)]
        return max(touched) - a if touched else None

    def failback(self, healed: float, region: str = PREFERRED, hold: float = 1.0) -> float | None:
        """Seconds from ``healed`` to the first request from which on every answer is ``region``'s.

        None when that steady state was not reached with at least ``hold``
        seconds of load left to show it.
        """
        after = sorted(self.started(healed), key=lambda r: r.start)
        steady: Rec | None = None
        for r in after:  # the last unbroken run of one-attempt answers from ``region``
            served = r.ok and r.region() == region and r.attempts == 1
            steady = (steady or r) if served else None
        if steady is None or after[-1].start - steady.start < hold:
            return None
        return steady.start - healed


def worst(records: list[Rec]) -> float:
    return max((r.seconds for r in records), default=0.0)


def failed(records: list[Rec]) -> list[Rec]:
    return [r for r in records if not r.ok]


# ---------------------------------------------------------------------------------------
# the world in the namespace

Fault = tuple[float, str, Callable[[], float]]  # (seconds after the load starts, label, action)


@dataclass
class World:
    ns: NetNS
    tmp: Path
    env: dict[str, str]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def port(self, region: str) -> int:
        return REGION_PORTS[region]

    def spawn(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115  (closed in stop())
        self.logs.append(log)
        proc = subprocess.Popen(
            self.ns.argv(*command), stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_line(self, name: str, text: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            for pname, proc in self.procs:
                if pname == name and proc.poll() is not None:
                    raise AssertionError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            time.sleep(0.05)
        raise AssertionError(f"{name} did not say {text!r} within {within:g}s:\n{self.log(name)}")

    def start(self) -> None:
        """Fakes first (the proxy's probes must find them up), then the proxy."""
        py = sys.executable
        for region, port in REGION_PORTS.items():
            self.spawn(
                f"fake-{region}",
                py, "-m", "modelroute", "fake-provider",
                "--listen", f"127.0.0.1:{port}", "--region", region,
                "--latency-ms", str(FAKE_LATENCY_MS), "--seed", "1",
            )  # fmt: skip
        for region in REGION_PORTS:
            self.wait_for_line(f"fake-{region}", "fake provider (")
        routes = self.tmp / "routes.yaml"
        routes.write_text(routes_yaml())
        self.spawn(
            "proxy",
            py, "-m", "modelroute", "proxy", "--routes", str(routes),
            "--listen", f"127.0.0.1:{PROXY_PORT}", "--admin", f"127.0.0.1:{ADMIN_PORT}",
            "--drain-seconds", "0.5", "--log-level", "warning",
        )  # fmt: skip

    def run(self, seconds: float, faults: list[Fault], rate: float = RATE) -> Run:
        """Steady load for ``seconds`` while ``faults`` are applied at their offsets."""
        out = self.tmp / f"load-{len(self.procs)}.jsonl"
        proc = subprocess.Popen(
            self.ns.argv(
                sys.executable, str(CLIENT), "load",
                "--proxy-port", str(PROXY_PORT), "--admin-port", str(ADMIN_PORT),
                "--rate", str(rate), "--seconds", str(seconds), "--out", str(out),
            ),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
        )  # fmt: skip
        self.procs.append(("load", proc))
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the client gives up after --ready-timeout
        if not line:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"load did not start: {err}\nproxy:\n{self.log('proxy')}")
        t0 = float(json.loads(line)["t"])
        events: dict[str, float] = {}
        for offset, label, action in sorted(faults, key=lambda f: f[0]):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            events[label] = action()
        try:
            proc.wait(timeout=seconds + 40)  # the client's own limits end it well before
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.returncode != 0:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"load exited {proc.returncode}: {err}")
        records: list[Rec] = []
        status: dict[str, Any] = {}
        for raw in out.read_text().splitlines():
            doc = json.loads(raw)
            if doc.get("event") == "status":
                status = doc["status"]
                continue
            records.append(
                Rec(
                    i=doc["i"], start=doc["start"], end=doc["end"], status=doc["status"],
                    ok=doc["ok"], target=doc["target"], attempts=doc["attempts"],
                    error=doc.get("error", ""),
                )
            )  # fmt: skip
        return Run(records, t0, events, status)

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for log in self.logs:
            log.close()


@pytest.fixture(scope="session")
def kernel() -> Iterator[None]:
    """Root, ``ip`` and ``nft`` that work: skip without them, fail under ``CI=true``.

    Also the session finalizer: whatever namespace a test left (it should
    leave none) is deleted when the session ends.
    """
    why = netns.missing_capability()
    if why is None:
        try:
            netns.NetNS.create().delete()
        except KernelUnavailable as exc:
            why = str(exc)
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield
    finally:
        netns.delete_all()


@pytest.fixture
def world_env(kernel: None, provider_key: str) -> dict[str, str]:
    """The environment of every process in the namespace: no tracing, no proxy, the fake's key."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_")
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env["FAKE_PROVIDER_KEY"] = provider_key
    return env


@pytest.fixture
def world(world_env: dict[str, str], tmp_path: Path) -> Iterator[World]:
    """A namespace with the two regions' fakes and the proxy running; all of it gone afterwards."""
    ns = NetNS.create()
    w = World(ns, tmp_path, world_env)
    try:
        w.start()
        yield w
    finally:
        try:
            w.stop()
        finally:
            ns.delete()
