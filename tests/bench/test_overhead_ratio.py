"""Regression guard for the sidecar's cost: CPU per request, as a ratio to a bare pass-through.

Absolute times on a shared 2-core machine are noise; a ratio measured in the
same test, same upstream, same load tool, is not.  The bare aiohttp
pass-through (bench/bare_proxy.py: one pooled ClientSession, no routing) and
two ``modelroute proxy`` processes (bench/routes.yaml: 3-target route, budget,
metrics, tracing on and exporting OTLP/HTTP to bench/otlp_sink.py, as in
``make bench``) each take the same ``wrk`` load against the same fake
upstream; the CPU each server process used (user + system time, through psutil, not wall
time) is divided by the requests it answered:

* ``sampled`` – tracing with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``
  at 1 %: the request path itself (the issue-8 budget row);
* ``all spans`` – every span built, encoded and exported: the price of
  tracing everything, most of it the OpenTelemetry SDK's protobuf encoding.

After one uncounted run each (as ``make bench`` warms up: the exporter is built
on its first batch), runs alternate (bare, sampled, all spans; twice) and the
lowest figure of each is kept, so a burst of noise in one run can't fail the test.  The bounds sit
well above what the bench machine measures (sampled ~1.4x; all spans ~1.8-2.3x
here on a loaded box since issue 17 built spans at the request's end and encoded
them leanly, ~2.4x before; docs/performance.md), since a loaded 2-core CI box has
shown sampled at 2.04x (and all spans at 3.0x before issue 17):
they catch a hot path that got clearly dearer (a per-request regex compile,
an un-pooled session, JSON parsed twice, the GC tuning lost), not a few
percent.

Bounded: about 25 s (two 2-second runs per server plus start-up); every
process it starts is stopped in the fixture's teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from .conftest import free_port, server, wait_ready

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
MODELROUTE = BIN / "modelroute"

SAMPLED_BOUND = 2.0  # modelroute (1 % of traces exported) CPU/request <= 2x bare's (~1.3x quiet)
ALL_SPANS_BOUND = 3.0  # modelroute exporting every span <= 3x bare's (was 3.8 before issue 17)
RUN_SECONDS = 2
CONNECTIONS = 8
UPSTREAM_LATENCY_MS = 5  # keeps both servers below saturation (<= 1,600 req/s at 8 connections)
BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
_BODY_BYTES = json.dumps(BODY).encode()


def _pin(cpu: str) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", cpu]
    return []


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of ``pid`` and its children (SO_REUSEPORT workers, if any)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children()]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _cpu_per_request(url: str, pid: int) -> tuple[float, int]:
    """Run wrk against ``url``; CPU µs the server ``pid`` used per answered request."""
    argv = [
        *_pin("1"), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{RUN_SECONDS}s", "--timeout", "5s",
        "-s", str(BENCH / "lua" / "post.lua"), url,
    ]  # fmt: skip
    before = _cpu_seconds(pid)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_SECONDS + 30)
    used = _cpu_seconds(pid) - before
    m = re.search(r"WRKJSON (\{.*\})", out.stderr + out.stdout)
    assert m, f"wrk gave no figures: {out.stderr[-500:]}"
    figures = json.loads(m.group(1))
    errors = sum(figures["errors"].values())
    answered = figures["requests"] - figures["errors"]["status"]
    assert errors == 0, f"{url}: wrk saw errors {figures['errors']}"
    assert answered > 500, f"{url}: only {answered} requests answered in {RUN_SECONDS} s"
    return used * 1e6 / answered, answered


def _warm(url: str) -> None:
    """An uncounted wrk run against ``url`` (its figures are not judged)."""
    argv = [
        *_pin("1"), "wrk", "-t1", f"-c{CONNECTIONS}", "-d1s", "--timeout", "5s",
        "-s", str(BENCH / "lua" / "post.lua"), url,
    ]  # fmt: skip
    subprocess.run(argv, capture_output=True, text=True, timeout=30)


def _proxy_available() -> bool:
    try:
        out = subprocess.run([str(MODELROUTE), "proxy", "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def test_modelroute_cpu_per_request_stays_within_its_ratio_to_a_bare_passthrough(
    tmp_path: Path,
) -> None:
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (scripts/install-test-tools.sh installs it)")
    if not _proxy_available():
        pytest.skip("`modelroute proxy` is not available in this build")

    up, bare, mr, admin, mr_all, admin_all, sink = (free_port() for _ in range(7))
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        (BENCH / "routes.yaml").read_text().replace("127.0.0.1:18500", f"127.0.0.1:{up}")
    )
    otel = {
        # tracing as in `make bench`: spans built, batched, exported as OTLP/HTTP to a local sink
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink}/v1/traces",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    sampled = {
        **otel,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    }
    chat = "/v1/chat/completions"

    with (
        server([*_pin("1"), str(MODELROUTE), "fake-provider", "--listen", f"127.0.0.1:{up}",
                 "--latency-ms", str(UPSTREAM_LATENCY_MS), "--output-tokens", "50"]) as upstream,
        server([*_pin("1"), sys.executable, str(BENCH / "otlp_sink.py"), "--port", str(sink)]),
        server([*_pin("0"), sys.executable, str(BENCH / "bare_proxy.py"), "--listen",
                 f"127.0.0.1:{bare}", "--upstream", f"http://127.0.0.1:{up}"]) as bare_proc,
        server([*_pin("0"), str(MODELROUTE), "proxy", "--routes", str(routes), "--listen",
                 f"127.0.0.1:{mr}", "--admin", f"127.0.0.1:{admin}"], sampled) as mr_proc,
        server([*_pin("0"), str(MODELROUTE), "proxy", "--routes", str(routes), "--listen",
                 f"127.0.0.1:{mr_all}", "--admin", f"127.0.0.1:{admin_all}"], otel) as all_proc,
    ):  # fmt: skip
        wait_ready(f"http://127.0.0.1:{up}{chat}", upstream, _BODY_BYTES)
        wait_ready(f"http://127.0.0.1:{bare}{chat}", bare_proc, _BODY_BYTES)
        wait_ready(f"http://127.0.0.1:{mr}{chat}", mr_proc, _BODY_BYTES)
        wait_ready(f"http://127.0.0.1:{mr_all}{chat}", all_proc, _BODY_BYTES)

        servers = {
            "bare": (f"http://127.0.0.1:{bare}{chat}", bare_proc.pid),
            "sampled": (f"http://127.0.0.1:{mr}{chat}", mr_proc.pid),
            "all spans": (f"http://127.0.0.1:{mr_all}{chat}", all_proc.pid),
        }
        # a first run each, not counted (as make bench warms up): the exporter is built and
        # its modules imported on the first batch, pools fill, caches warm
        for url, _ in servers.values():
            _warm(url)
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in servers}
        for _ in range(2):  # alternate, so drift on the machine hits all alike
            for name, (url, pid) in servers.items():
                runs[name].append(_cpu_per_request(url, pid))

    best = {name: min(r[0] for r in got) for name, got in runs.items()}
    ratios = {name: best[name] / best["bare"] for name in ("sampled", "all spans")}
    detail = (
        f"CPU per request: bare pass-through {best['bare']:.0f} µs, modelroute sampled "
        f"{best['sampled']:.0f} µs (x{ratios['sampled']:.2f}, bound {SAMPLED_BOUND}), "
        f"modelroute all spans {best['all spans']:.0f} µs (x{ratios['all spans']:.2f}, bound "
        f"{ALL_SPANS_BOUND}); runs {runs}"
    )
    print(detail)
    assert ratios["sampled"] <= SAMPLED_BOUND, detail
    assert ratios["all spans"] <= ALL_SPANS_BOUND, detail
