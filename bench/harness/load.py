"""Load generation and measurement: wrk at fixed and paced concurrency, streams, held connections.

Every load tool is a separate process pinned to the load core; the CPU the
target used is read from outside it (:mod:`.procs`), never from inside.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from .config import BENCH, PIDFILE, THINK_MS, VENV_BIN
from .procs import Proc, cpu_seconds, open_sockets, port_of, rss_mb, taskset, tree
from .targets import Target


class LoadRuns:
    """The measuring half of :class:`.runner.Bench`: one load run against one target at a time."""

    args: argparse.Namespace
    load_cpu: str
    upstream: Proc | None

    @contextlib.contextmanager
    def cpu_window(self, t: Target, into: dict[str, Any]) -> Iterator[None]:
        sut = tree(t.proc.pid)
        up = tree(self.upstream.pid) if self.upstream else []
        c0, u0, w0 = cpu_seconds(sut), cpu_seconds(up), time.monotonic()
        yield
        c1, u1, w1 = cpu_seconds(sut), cpu_seconds(up), time.monotonic()
        into["cpu_s"] = round(c1 - c0, 3)
        into["wall_s"] = round(w1 - w0, 3)
        into["sut_util"] = round((c1 - c0) / (w1 - w0), 3)
        into["upstream_util"] = round((u1 - u0) / (w1 - w0), 3)

    def wrk(self, t: Target, conns: int, seconds: float, think_ms: float = 0) -> dict[str, Any]:
        argv = [
            *taskset(self.load_cpu),
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(BENCH / "lua" / "post.lua"),
            t.url,
        ]
        res: dict[str, Any] = {}
        with self.cpu_window(t, res):
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=seconds + 30,
                env={**os.environ, "BENCH_THINK_MS": f"{think_ms:g}"},
            )
        m = re.search(r"WRKJSON (\{.*\})", out.stderr + out.stdout)
        if not m:
            return {"error": f"wrk gave no figures: {out.stderr[-300:]}{out.stdout[-300:]}"}
        w = json.loads(m.group(1))
        errs = w["errors"]
        n = w["requests"]
        res.update(
            requests=n,
            rps=round(n / (w["duration_us"] / 1e6), 1),
            errors=sum(errs.values()),
            errors_by_kind={k: v for k, v in errs.items() if v},
            **{k: w["latency_us"][k] for k in ("p50", "p90", "p99", "p999", "mean", "max")},
        )
        ok = n - errs["status"]
        res["cpu_us_per_req"] = round(res["cpu_s"] * 1e6 / ok, 1) if ok > 0 else None
        return res

    def paced(self, t: Target, rate: int, seconds: float) -> dict[str, Any]:
        """About ``rate`` req/s: wrk with a random think time per connection (see post.lua).

        Each connection cycles through answer (~21 ms) + think (exponential, mean
        30 ms), ~20 req/s per connection, so ``rate / 20`` connections offer ``rate``
        req/s as Poisson-like arrivals.  A slower target gets somewhat fewer (closed
        loop); the achieved req/s is reported next to its latencies.
        """
        res = self.wrk(t, max(1, round(rate / 20)), seconds, think_ms=THINK_MS)
        res["rate"] = rate
        return res

    def stream(self, t: Target, n: int) -> dict[str, Any]:
        argv = [
            *taskset(self.load_cpu),
            str(VENV_BIN / "python"),
            str(BENCH / "stream_client.py"),
            t.url,
            "-n",
            str(n),
            "--deadline",
            "20",
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        try:
            res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"error": f"stream client failed: {out.stderr[-400:]}"}
        return res

    def settle(self, t: Target) -> None:
        """Wait (at most 5 s) until the target is idle again, so it can't disturb the next one."""
        pids = tree(t.proc.pid)
        for _ in range(25):
            c0 = cpu_seconds(pids)
            time.sleep(0.2)
            if cpu_seconds(pids) - c0 < 0.02:
                return

    def hold_connections(self, t: Target) -> dict[str, Any]:
        argv = [
            *taskset(self.load_cpu),
            str(VENV_BIN / "python"),
            str(BENCH / "hold_conns.py"),
            "--port",
            str(port_of(t.url)),
            "-n",
            str(self.args.conns),
            "--hold",
            "30",
        ]
        holder = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        with PIDFILE.open("a") as f:
            f.write(f"{holder.pid}\n")
        res: dict[str, Any] = {}
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline()
            if line.startswith("READY "):
                res = json.loads(line[6:])
                time.sleep(0.5)
                pids = tree(t.proc.pid)
                res["rss_mb"] = rss_mb(pids)
                res["server_sockets"] = open_sockets(pids)
            else:
                res = {"error": f"holder said {line!r}"}
        finally:
            if holder.stdin:
                with contextlib.suppress(BrokenPipeError):
                    holder.stdin.close()
            try:
                holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(holder.pid, signal.SIGKILL)
                holder.wait(timeout=5)
        return res
