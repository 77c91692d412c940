"""The run: start every row, warm up, interleave the rounds, hold connections, check features."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from typing import Any

from .config import (
    BODY,
    C1_DURATION_FACTOR,
    HOST,
    PORT_MR_ADMIN,
    PORT_MRS_ADMIN,
    PORT_MRT_ADMIN,
    PORT_SINK,
    RAW,
    log,
)
from .load import LoadRuns
from .procs import Proc, get, rss_mb, tree
from .targets import Target, TargetStarters


class Bench(TargetStarters, LoadRuns):
    """One benchmark run: its processes, its targets and the rounds measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        ncpu = os.cpu_count() or 1
        self.sut_cpu = "0" if ncpu >= 2 else ""
        self.load_cpu = "1" if ncpu >= 2 else ""
        self.procs: list[Proc] = []
        self.targets: list[Target] = []
        self.skipped: dict[str, str] = {}
        self.upstream: Proc | None = None
        self.sink: Proc | None = None
        self.rounds: list[dict[str, dict[str, Any]]] = []
        self.extra: dict[str, Any] = {}
        self.t_start = time.monotonic()

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    # -- measuring -----------------------------------------------------------------------

    def out_of_time(self, next_s: float = 0.0) -> bool:
        """Would something taking ``next_s`` seconds end after the time budget?"""
        return bool(time.monotonic() - self.t_start + next_s > self.args.budget_s)

    def warm_up(self, t: Target) -> None:
        self.wrk(t, 20, self.args.warmup)
        if "stream" in t.scenarios:
            self.stream(t, 5)

    def run_round(self, t: Target) -> dict[str, Any]:
        d = self.args.duration
        r: dict[str, Any] = {}
        if "c1" in t.scenarios:
            # one connection makes only ~47 req/s against a 20 ms upstream: at 3 s its p99
            # was the 2nd-slowest of ~140 requests, so one stall decided it; twice as long
            r["c1"] = self.wrk(t, 1, d * C1_DURATION_FACTOR)
        if "c20" in t.scenarios:
            r["c20"] = self.wrk(t, 20, d)
        if "sat" in t.scenarios:
            r["sat"] = self.wrk(t, self.args.sat_conns, d)
            self.settle(t)
        if "rates" in t.scenarios:
            for rate in self.args.rates:
                r[f"rate{rate}"] = self.paced(t, rate, d)
                self.settle(t)
        if "stream" in t.scenarios:
            r["stream"] = self.stream(t, self.args.streams)
        self.settle(t)
        return r

    def run(self) -> None:
        a = self.args
        (RAW / "body.json").write_text(json.dumps(BODY))
        self.start_all()
        for t in self.targets:
            t.rss["idle_mb"] = rss_mb(tree(t.proc.pid))
        log("warm-up")
        for t in self.targets:
            self.warm_up(t)
            self.settle(t)
        last_round_s = 0.0
        for rep in range(a.reps):
            # a round that would end past the budget is not started (the table needs whole rounds)
            if self.out_of_time(last_round_s):
                log(f"time budget reached: stopping after {rep} round(s)")
                break
            log(f"round {rep + 1}/{a.reps}")
            round_started = time.monotonic()
            rnd: dict[str, dict[str, Any]] = {}
            for t in self.targets:
                rnd[t.name] = self.run_round(t)
            self.rounds.append(rnd)
            last_round_s = time.monotonic() - round_started
        for t in self.targets:
            t.rss["after_load_mb"] = rss_mb(tree(t.proc.pid))
        log(f"{a.conns} idle connections per target")
        for t in self.targets:
            if self.out_of_time():
                break
            held = self.hold_connections(t)
            t.rss["conns"] = held
            t.rss["conns_mb"] = held.get("rss_mb")
            self.settle(t)
        self.extra["checks"] = self.feature_checks()

    def feature_checks(self) -> dict[str, Any]:
        """Evidence that modelroute ran with its features on (metrics served, spans exported)."""
        checks: dict[str, Any] = {}
        names = {t.name for t in self.targets}
        if "modelroute" in names:
            try:
                status, body = get(f"http://{HOST}:{PORT_MR_ADMIN}/metrics")
                text = body.decode(errors="replace")
                families = sorted({m.group(1) for m in re.finditer(r"^# TYPE (\S+)", text, re.M)})
                checks["metrics"] = {
                    "status": status,
                    "bytes": len(body),
                    "families": families[:40],
                }
            except OSError as exc:
                checks["metrics"] = {"error": repr(exc)}
        # requests each traced row answered (its own counter), then - once the batch
        # processors' 5 s timer has flushed what was queued - the spans the sink decoded
        admin = {
            "modelroute": PORT_MR_ADMIN,
            "modelroute-sampled": PORT_MRS_ADMIN,
            "modelroute-tail": PORT_MRT_ADMIN,
        }
        answered: dict[str, int] = {}
        for name, port in admin.items():
            if name in names:
                with contextlib.suppress(OSError):
                    _, body = get(f"http://{HOST}:{port}/metrics")
                    answered[name] = round(
                        sum(
                            float(m.group(1))
                            for m in re.finditer(
                                r"^modelroute_requests_total\{[^}]*\} (\S+)$",
                                body.decode(errors="replace"),
                                re.M,
                            )
                        )
                    )
        if answered:
            time.sleep(6)
        try:
            _, body = get(f"http://{HOST}:{PORT_SINK}/stats")
            checks["otlp_sink"] = json.loads(body)
        except (OSError, json.JSONDecodeError) as exc:
            checks["otlp_sink"] = {"error": repr(exc)}
        services = (checks.get("otlp_sink") or {}).get("services") or {}
        checks["spans_per_row"] = {
            name: {
                "requests": n,
                "server_spans": (services.get(f"bench-{name}") or {}).get("server_spans", 0),
                "spans": (services.get(f"bench-{name}") or {}).get("spans", 0),
            }
            for name, n in answered.items()
        }
        return checks
