"""`make bench`: modelroute side by side with a bare aiohttp pass-through, nginx and LiteLLM.

Everything runs on this machine over loopback.  One fake upstream (fixed 20 ms
answer; streams of 50 content chunks, 1 ms apart) serves every target:

* ``direct``         - the load tool talks to the upstream itself (the baseline);
* ``bare``           - bench/bare_proxy.py, one pooled aiohttp ClientSession, no routing;
* ``modelroute``     - ``modelroute proxy`` with bench/routes.yaml (3-target chain, budget),
                       metrics on, tracing on (every span exported as OTLP/HTTP to a local
                       sink), one process;
* ``modelroute-sampled`` - the same with 1 % of traces sampled (standard OTEL_TRACES_SAMPLER
                       variables): the row issue 8's budget verdict uses;
* ``modelroute-w2``  - modelroute-sampled with ``--workers 2`` (only if the flag exists);
* ``nginx``          - Debian's nginx, one worker, keep-alive upstream, no buffering;
* ``litellm``        - LiteLLM's proxy (1.102.4, own venv), one worker, same fallback chain.

Cores: the process under test is pinned to core 0; the upstream, the OTLP sink
and every load tool to core 1 (``taskset``), so the proxy never shares its core
with the load.  The upstream's CPU use is recorded for each run, so a run where
the upstream (not the proxy) was the limit is visible.

Load tools: ``wrk`` (fixed concurrency, and paced load at about 200, 1,000 and
3,000 req/s via random think times; exact microsecond percentiles from its Lua
``done`` hook), and bench/stream_client.py for streaming.  All
are separate processes; nothing measures from inside the process under test.

Repetition: all targets run side by side, interleaved round by round (rep 1 of
every target, then rep 2 …) so machine drift hits all of them alike; the
figures are medians over rounds, and "added" figures are differences against
``direct`` measured in the same round.

Output: bench/results/latest.json (raw + summary) and bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
RAW = RESULTS / "raw"
VENV_BIN = ROOT / ".venv" / "bin"
LITELLM_BIN = BENCH / ".litellm-venv" / "bin"
PIDFILE = RAW / "pids"

HOST = "127.0.0.1"
PORT_UPSTREAM = 18500
PORT_BARE = 18510
PORT_MR, PORT_MR_ADMIN = 18520, 18521
PORT_MR2, PORT_MR2_ADMIN = 18522, 18523
PORT_MRS, PORT_MRS_ADMIN = 18524, 18525
PORT_MRT, PORT_MRT_ADMIN = 18526, 18527
TAIL_RATIO = "0.01"  # MODELROUTE_TRACES_TAIL_RATIO of the modelroute-tail target
SAMPLED_RATIO = "0.01"  # OTEL_TRACES_SAMPLER_ARG of the modelroute-sampled target
PORT_NGINX = 18530
PORT_LITELLM = 18540
PORT_SINK = 18560
CHAT = "/v1/chat/completions"
THINK_MS = 30.0  # mean think time per connection in paced runs
C1_DURATION_FACTOR = 2  # the 1-connection runs last this many times --duration (see run_round)
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 50,
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- /proc readings ---------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant (nginx workers, uvicorn/SO_REUSEPORT workers …)."""
    kids = _children()
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 256:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of the processes, from /proc/<pid>/stat (what they used, not wall time)."""
    total = 0
    for p in pids:
        try:
            fields_ = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields_[11]) + int(fields_[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            fields_ = Path(f"/proc/{p}/statm").read_text().split()
        except OSError:
            continue
        total += int(fields_[1]) * PAGE
    return round(total / 2**20, 1)


def open_sockets(pids: list[int]) -> int:
    n = 0
    for p in pids:
        with contextlib.suppress(OSError):
            n += sum(
                1 for fd in Path(f"/proc/{p}/fd").iterdir() if os.readlink(fd).startswith("socket:")
            )
    return n


# -- processes --------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        logf = (RAW / f"{self.name}.log").open("wb")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=ROOT,
            start_new_session=True,  # its own process group: stopped as a group, by its id
        )
        with PIDFILE.open("a") as f:
            f.write(f"{self.popen.pid}\n")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)

    def log_tail(self, n: int = 15) -> str:
        path = RAW / f"{self.name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-n:])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def post(url: str, body: dict[str, Any], timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(proc: Proc, url: str, timeout: float) -> str | None:
    """Poll with a real chat request until it answers 200; returns an error text or None."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            return f"exited ({proc.popen.returncode if proc.popen else '?'}):\n{proc.log_tail()}"
        try:
            status, body = post(url, BODY, timeout=5)
            if status == 200:
                return None
            last = f"HTTP {status}: {body[:300]!r}"
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        time.sleep(0.25)
    return f"not ready after {timeout:.0f} s: {last}\n{proc.log_tail()}"


# -- load tools -------------------------------------------------------------------------


def taskset(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


@dataclass
class Target:
    name: str
    url: str  # full URL of the chat endpoint
    proc: Proc  # the process under test (for direct: the upstream itself)
    note: str = ""
    scenarios: tuple[str, ...] = ("c1", "c20", "sat", "rates", "stream")
    rss: dict[str, Any] = field(default_factory=dict)


class Bench:
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

    # -- setup ---------------------------------------------------------------------------

    def spawn(
        self, name: str, argv: list[str], cpus: str, env: dict[str, str] | None = None
    ) -> Proc:
        p = Proc(name, taskset(cpus) + argv, env or {})
        p.start()
        self.procs.append(p)
        return p

    def start_all(self) -> None:
        a = self.args
        py = str(VENV_BIN / "python")
        mr = str(VENV_BIN / "modelroute")
        ports = [
            PORT_UPSTREAM,
            PORT_BARE,
            PORT_MR,
            PORT_MR_ADMIN,
            PORT_MR2,
            PORT_MR2_ADMIN,
            PORT_MRS,
            PORT_MRS_ADMIN,
            PORT_MRT,
            PORT_MRT_ADMIN,
            PORT_NGINX,
            PORT_LITELLM,
            PORT_SINK,
        ]
        busy = [p for p in ports if not port_free(p)]
        if busy:
            raise SystemExit(f"ports already in use on {HOST}: {busy} (another bench running?)")

        self.upstream = self.spawn(
            "upstream",
            [
                mr,
                "fake-provider",
                "--listen",
                f"{HOST}:{PORT_UPSTREAM}",
                "--latency-ms",
                "20",
                "--output-tokens",
                "50",
                "--tokens-per-second",
                "1000",
            ],
            self.load_cpu,
        )
        self.sink = self.spawn(
            "otlp-sink", [py, str(BENCH / "otlp_sink.py"), "--port", str(PORT_SINK)], self.load_cpu
        )
        err = wait_ready(self.upstream, f"http://{HOST}:{PORT_UPSTREAM}{CHAT}", 20)
        if err:
            raise SystemExit(f"fake upstream did not start: {err}")
        self.targets.append(
            Target(
                "direct",
                f"http://{HOST}:{PORT_UPSTREAM}{CHAT}",
                self.upstream,
                "the fake upstream itself (figures are the upstream's own)",
            )
        )

        candidates: list[tuple[str, Callable[[], Target | str]]] = [
            ("bare", self._bare),
            ("modelroute", self._modelroute),
            ("modelroute-sampled", self._modelroute_sampled),
            ("modelroute-tail", self._modelroute_tail),
            ("modelroute-w2", self._modelroute_w2),
            ("nginx", self._nginx),
            ("litellm", self._litellm),
        ]
        wanted = set(a.targets.split(",")) if a.targets else None
        pending: list[tuple[Target, float]] = []
        for name, starter in candidates:
            if wanted is not None and name not in wanted:
                continue
            got = starter()
            if isinstance(got, str):
                self.skipped[name] = got
                log(f"{name}: not measured - {got}")
            else:
                pending.append((got, 90.0 if name == "litellm" else 30.0))
        for target, timeout in pending:
            err = wait_ready(target.proc, target.url, timeout)
            if err:
                self.skipped[target.name] = f"did not start: {err}"
                log(f"{target.name}: not measured - did not start")
                target.proc.stop()
            else:
                self.targets.append(target)
        log("measuring: " + ", ".join(t.name for t in self.targets))

    def _bare(self) -> Target | str:
        p = self.spawn(
            "bare",
            [
                str(VENV_BIN / "python"),
                str(BENCH / "bare_proxy.py"),
                "--listen",
                f"{HOST}:{PORT_BARE}",
                "--upstream",
                f"http://{HOST}:{PORT_UPSTREAM}",
            ],
            self.sut_cpu,
        )
        return Target("bare", f"http://{HOST}:{PORT_BARE}{CHAT}", p, "aiohttp pass-through, uvloop")

    def _mr_help(self) -> str | None:
        try:
            out = subprocess.run(
                [str(VENV_BIN / "modelroute"), "proxy", "--help"],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=ROOT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`modelroute proxy --help` failed: {exc!r}"
        if out.returncode != 0:
            return "`modelroute proxy` is not available yet"
        return out.stdout

    def _mr_env(self, row: str = "modelroute") -> dict[str, str]:
        # Tracing really on: every span built and the batch processor exports them as
        # OTLP/HTTP protobuf to a local sink (bench/otlp_sink.py), like a collector in the pod.
        # The service name says which row sent a span, so the sink counts each row's spans.
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://{HOST}:{PORT_SINK}/v1/traces",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": f"bench-{row}",
        }

    @staticmethod
    def _mr_unavailable(help_: str | None) -> str | None:
        """Why `modelroute proxy` can't be measured (from its --help), or None when it can."""
        if help_ is None or not help_.startswith("usage"):
            return help_ or "`modelroute proxy` is not available"
        return None

    @staticmethod
    def _mr_argv(port: int, admin_port: int, *extra: str) -> list[str]:
        """`modelroute proxy` on bench/routes.yaml, every modelroute row the same but ports."""
        return [
            str(VENV_BIN / "modelroute"),
            "proxy",
            "--routes",
            str(BENCH / "routes.yaml"),
            "--listen",
            f"{HOST}:{port}",
            "--admin",
            f"{HOST}:{admin_port}",
            *extra,
        ]

    def _modelroute(self) -> Target | str:
        why_not = self._mr_unavailable(self._mr_help())
        if why_not is not None:
            return why_not
        argv = self._mr_argv(PORT_MR, PORT_MR_ADMIN)
        p = self.spawn("modelroute", argv, self.sut_cpu, self._mr_env())
        return Target(
            "modelroute",
            f"http://{HOST}:{PORT_MR}{CHAT}",
            p,
            "1 process; metrics, cost/budget on, tracing on: every span exported (OTLP/HTTP)",
        )

    def _sampled_env(self, row: str = "modelroute-sampled") -> dict[str, str]:
        return {
            **self._mr_env(row),
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": SAMPLED_RATIO,
        }

    def _modelroute_sampled(self) -> Target | str:
        """Tracing on and exporting, but only 1 % of traces sampled – set by standard OTEL_* only.

        ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` is read by the OpenTelemetry SDK
        itself: every request still goes through the tracing observer and the SDK's
        sampler, 1 in 100 traces is built and exported to the same sink, and a request
        arriving with a sampled ``traceparent`` is always traced.
        """
        why_not = self._mr_unavailable(self._mr_help())
        if why_not is not None:
            return why_not
        argv = self._mr_argv(PORT_MRS, PORT_MRS_ADMIN)
        p = self.spawn("modelroute-sampled", argv, self.sut_cpu, self._sampled_env())
        return Target(
            "modelroute-sampled",
            f"http://{HOST}:{PORT_MRS}{CHAT}",
            p,
            "the same, tracing on with OTEL_TRACES_SAMPLER=parentbased_traceidratio, "
            f"OTEL_TRACES_SAMPLER_ARG={SAMPLED_RATIO} (1 % of traces exported)",
        )

    def _modelroute_tail(self) -> Target | str:
        """Tail decisions in the sidecar: every failover, hedge, error, budget hit kept, 1 % of the rest.

        The bench's requests all succeed at the first attempt, so this row prices the
        option at its most common case: a decision per request, 1 % of traces exported.
        """
        why_not = self._mr_unavailable(self._mr_help())
        if why_not is not None:
            return why_not
        argv = self._mr_argv(PORT_MRT, PORT_MRT_ADMIN)
        env = {**self._mr_env("modelroute-tail"), "MODELROUTE_TRACES_TAIL_RATIO": TAIL_RATIO}
        p = self.spawn("modelroute-tail", argv, self.sut_cpu, env)
        return Target(
            "modelroute-tail",
            f"http://{HOST}:{PORT_MRT}{CHAT}",
            p,
            f"the same, tail decisions in the sidecar: MODELROUTE_TRACES_TAIL_RATIO={TAIL_RATIO} "
            "(every failover, hedge, error, budget or latency-budget hit exported, 1 % of the rest)",
            scenarios=("c20", "sat", "rates"),
        )

    def _modelroute_w2(self) -> Target | str:
        help_ = self._mr_help()
        why_not = self._mr_unavailable(help_)
        if why_not is not None:
            return why_not
        if "--workers" not in (help_ or ""):
            # the measurement runs as soon as `modelroute proxy --help` lists --workers
            return "`modelroute proxy` has no --workers flag yet (item 3); measuring code is ready"
        argv = self._mr_argv(PORT_MR2, PORT_MR2_ADMIN, "--workers", "2")
        cpus = f"{self.sut_cpu},{self.load_cpu}" if self.sut_cpu else ""
        # compared with modelroute-sampled (same settings, one process)
        p = self.spawn("modelroute-w2", argv, cpus, self._sampled_env("modelroute-w2"))
        return Target(
            "modelroute-w2",
            f"http://{HOST}:{PORT_MR2}{CHAT}",
            p,
            "modelroute-sampled with --workers 2, on both cores (shared with the upstream "
            "and the load tool)",
            scenarios=("c20", "sat"),
        )

    def _nginx(self) -> Target | str:
        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if not nginx:
            return "nginx is not installed (bench/setup.sh installs it)"
        prefix = RAW / "nginx"
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        shutil.copyfile(BENCH / "nginx.conf", conf)
        p = self.spawn("nginx", [nginx, "-p", f"{prefix}/", "-c", str(conf)], self.sut_cpu)
        return Target(
            "nginx", f"http://{HOST}:{PORT_NGINX}{CHAT}", p, "1 worker, keep-alive upstream"
        )

    def _litellm(self) -> Target | str:
        exe = LITELLM_BIN / "litellm"
        if not exe.exists():
            return "bench/.litellm-venv is missing (bench/setup.sh creates it)"
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_SCHEMA_UPDATE": "True",
        }
        argv = [
            str(exe),
            "--config",
            str(BENCH / "litellm.yaml"),
            "--host",
            HOST,
            "--port",
            str(PORT_LITELLM),
            "--num_workers",
            "1",
            "--log_config",
            str(BENCH / "litellm-logging.json"),
        ]
        p = self.spawn("litellm", argv, self.sut_cpu, env)
        return Target(
            "litellm",
            f"http://{HOST}:{PORT_LITELLM}{CHAT}",
            p,
            "litellm[proxy] 1.102.4, 1 worker, access log off",
        )

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    # -- measuring -----------------------------------------------------------------------

    def out_of_time(self, next_s: float = 0.0) -> bool:
        """Would something taking ``next_s`` seconds end after the time budget?"""
        return bool(time.monotonic() - self.t_start + next_s > self.args.budget_s)

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


def port_of(url: str) -> int:
    m = re.match(r"https?://[^:/]+:(\d+)", url)
    assert m, url
    return int(m.group(1))


# -- summarising --------------------------------------------------------------------------


def med(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return round(statistics.median(vals), 3) if vals else None


def summarise(b: Bench) -> dict[str, Any]:
    names = [t.name for t in b.targets]
    scen_keys = ["c1", "c20", "sat"] + [f"rate{r}" for r in b.args.rates]
    out: dict[str, Any] = {}
    for name in names:
        s: dict[str, Any] = {}
        for key in scen_keys:
            got = [rnd[name].get(key) for rnd in b.rounds if name in rnd]
            runs: list[dict[str, Any]] = [r for r in got if r and "error" not in r]
            if not runs:
                continue
            entry: dict[str, Any] = {"n_rounds": len(runs)}
            for m in (
                "rps",
                "p50",
                "p90",
                "p99",
                "cpu_us_per_req",
                "upstream_util",
                "sut_util",
                "errors",
            ):
                entry[m] = med([r.get(m) for r in runs])
            # added latency: this target minus direct, in the same round, then the median
            for m in ("p50", "p90", "p99"):
                diffs = []
                for rnd in b.rounds:
                    mine, base = (rnd.get(name) or {}).get(key), (rnd.get("direct") or {}).get(key)
                    if mine and base and "error" not in mine and "error" not in base:
                        diffs.append(mine[m] - base[m])
                entry[f"added_{m}"] = med(diffs)
            # against the bare pass-through, same round
            for m in ("p50", "p99"):
                diffs = []
                for rnd in b.rounds:
                    mine, base = (rnd.get(name) or {}).get(key), (rnd.get("bare") or {}).get(key)
                    if mine and base and "error" not in mine and "error" not in base:
                        diffs.append(mine[m] - base[m])
                entry[f"vs_bare_{m}"] = med(diffs)
            ratios = []
            for rnd in b.rounds:
                mine, base = (rnd.get(name) or {}).get(key), (rnd.get("bare") or {}).get(key)
                if mine and base and "error" not in mine and "error" not in base and base["rps"]:
                    ratios.append(mine["rps"] / base["rps"])
            entry["rps_vs_bare"] = round(statistics.median(ratios), 3) if ratios else None
            cpu_ratios = []
            for rnd in b.rounds:
                mine, base = (rnd.get(name) or {}).get(key), (rnd.get("bare") or {}).get(key)
                if mine and base and mine.get("cpu_us_per_req") and base.get("cpu_us_per_req"):
                    cpu_ratios.append(mine["cpu_us_per_req"] / base["cpu_us_per_req"])
            entry["cpu_vs_bare"] = round(statistics.median(cpu_ratios), 3) if cpu_ratios else None
            s[key] = entry
        got_s = [rnd[name].get("stream") for rnd in b.rounds if name in rnd]
        streams: list[dict[str, Any]] = [r for r in got_s if r and "error" not in r and "ttft" in r]
        if streams:
            st: dict[str, Any] = {"n_rounds": len(streams)}
            for m in ("ttfb", "ttft", "total"):
                st[m] = med([r[m]["p50"] for r in streams])
                for base_name in ("direct", "bare"):
                    diffs = []
                    for rnd in b.rounds:
                        mine, base = (
                            (rnd.get(name) or {}).get("stream"),
                            (rnd.get(base_name) or {}).get("stream"),
                        )
                        if mine and base and m in mine and m in base:
                            diffs.append(mine[m]["p50"] - base[m]["p50"])
                    st[f"added_{m}" if base_name == "direct" else f"vs_bare_{m}"] = med(diffs)
            st["tokens_min"] = min(r["tokens_min"] for r in streams)
            st["tokens_max"] = max(r["tokens_max"] for r in streams)
            st["failed"] = sum(r["n"] - r["ok"] for r in streams)
            s["stream"] = st
        t = next(t for t in b.targets if t.name == name)
        s["rss"] = {
            "idle_mb": t.rss.get("idle_mb"),
            "after_load_mb": t.rss.get("after_load_mb"),
            "conns_mb": t.rss.get("conns_mb"),
            "conns": t.rss.get("conns"),
        }
        s["note"] = t.note
        out[name] = s
    return out


def budget(summary: dict[str, Any], name: str = "modelroute") -> list[dict[str, Any]]:
    """The issue's budget for target ``name``, each line a difference or ratio from the same run."""
    mr, bare, lite = summary.get(name), summary.get("bare"), summary.get("litellm")
    rows: list[dict[str, Any]] = []

    def row(check: str, value: float | None, bound: str, ok: bool | None, unit: str = "") -> None:
        rows.append(
            {
                "check": check,
                "value": value,
                "unit": unit,
                "bound": bound,
                "pass": ok if value is not None else None,
            }
        )

    if not mr:
        return [
            {"check": "modelroute measured", "value": None, "unit": "", "bound": "-", "pass": None}
        ]
    for key, label in (
        ("c1", "1 connection"),
        ("c20", "20 connections"),
        ("rate1000", "1,000 req/s"),
    ):
        e = mr.get(key)
        if not e or not bare:
            continue
        v50 = e.get("vs_bare_p50")
        v99 = e.get("vs_bare_p99")
        row(
            f"added p50 over bare, {label}",
            ms(v50),
            "≤ +0.3 ms",
            v50 is not None and v50 <= 300,
            "ms",
        )
        row(
            f"added p99 over bare, {label}",
            ms(v99),
            "≤ +1 ms",
            v99 is not None and v99 <= 1000,
            "ms",
        )
    sat = (mr.get("sat") or {}).get("rps_vs_bare")
    row("saturation req/s vs bare (1 process)", sat, "≥ 0.60", sat is not None and sat >= 0.6, "x")
    ttft = (mr.get("stream") or {}).get("added_ttft")
    row("added TTFT over direct", ms(ttft), "≤ 1 ms", ttft is not None and ttft <= 1000, "ms")
    rss = mr.get("rss") or {}
    idle, conns = rss.get("idle_mb"), rss.get("conns_mb")
    row("RSS idle", idle, "≤ 60 MB", idle is not None and idle <= 60, "MB")
    row(
        "RSS with 1,000 open connections",
        conns,
        "≤ 120 MB",
        conns is not None and conns <= 120,
        "MB",
    )
    if lite:
        for key, label in (("c20", "20 connections"), ("c1", "1 connection")):
            a_l = (lite.get(key) or {}).get("added_p99")
            a_m = (mr.get(key) or {}).get("added_p99")
            if a_l is None or a_m is None:
                continue
            ratio = round(a_l / max(a_m, 1.0), 1)  # added p99 of ≤ 1 µs counts as 1 µs
            row(
                f"LiteLLM added p99 ÷ modelroute added p99, {label}",
                ratio,
                "≥ 50",
                ratio >= 50,
                "x",
            )
    return rows


TRACING_ROWS = ("modelroute", "modelroute-tail", "modelroute-sampled")


def tracing_budget(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's bounds for tracing, per traced row: CPU, saturation and tail against bare.

    Each figure is a ratio or difference to the bare pass-through taken within a round,
    then the median over rounds.
    """
    rows: list[dict[str, Any]] = []
    for key, label in (
        ("c20", "20 connections"),
        ("sat", "saturation"),
        ("rate1000", "1,000 req/s"),
    ):
        values = {
            n: ((summary.get(n) or {}).get(key) or {}).get("cpu_vs_bare") for n in TRACING_ROWS
        }
        rows.append(
            _trow(f"CPU per request ÷ bare's, {label}", "≤ 1.5 x", values, "x", lambda v: v <= 1.5)
        )
    values = {n: ((summary.get(n) or {}).get("sat") or {}).get("rps_vs_bare") for n in TRACING_ROWS}
    rows.append(_trow("saturation req/s vs bare", "≥ 0.60", values, "x", lambda v: v >= 0.6))
    values = {
        n: ms(((summary.get(n) or {}).get("rate1000") or {}).get("vs_bare_p99"))
        for n in TRACING_ROWS
    }
    rows.append(
        _trow("added p99 over bare, 1,000 req/s", "≤ +1 ms", values, "ms", lambda v: v <= 1.0)
    )
    return rows


def _trow(
    check: str,
    bound: str,
    values: dict[str, float | None],
    unit: str,
    ok: Callable[[float], bool],
) -> dict[str, Any]:
    return {
        "check": check,
        "bound": bound,
        "unit": unit,
        "values": values,
        "pass": {n: (None if v is None else ok(v)) for n, v in values.items()},
    }


def ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


# -- writing -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return "not found"
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0][:100] if text else "?"

    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "proxy", "src"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit + (" (+ uncommitted proxy/src changes)" if dirty else ""),
        "wrk": version(["wrk", "--version"]),
        "nginx": version(["nginx", "-v"]),
        "litellm": version(
            [
                str(LITELLM_BIN / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ]
        ),
        "aiohttp": version(
            [str(VENV_BIN / "python"), "-c", "import aiohttp; print(aiohttp.__version__)"]
        ),
    }


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def fms(us: Any, signed: bool = False) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:+.2f}" if signed else f"{us / 1000:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    s, m, cfg = doc["summary"], doc["machine"], doc["config"]
    names = list(s)
    lines = [
        "# modelroute benchmark - latest run",
        "",
        f"{doc['finished']} · {m['nproc']} cores ({m['cpu_model']}) · kernel {m['kernel']} · "
        f"Python {m['python']} · commit {m['commit']}",
        "",
        f"Medians of {cfg['rounds_done']} interleaved rounds; {cfg['duration_s']:g} s per load run "
        f"({cfg['duration_s'] * C1_DURATION_FACTOR:g} s at 1 connection) "
        f"after a {cfg['warmup_s']:g} s warm-up. Upstream: fake provider, 20 ms per answer, "
        "streams of 50 chunks 1 ms apart. Process under test on core 0; upstream, OTLP sink and "
        "load tools on core 1. *added* = this target minus **direct** in the same round (ms); "
        "*vs bare* = minus the bare aiohttp pass-through in the same round. "
        "Reproduce: `make bench` (see docs/performance.md).",
        "",
    ]

    def table(
        title: str, key: str, cols: list[tuple[str, Callable[[dict[str, Any]], str]]]
    ) -> None:
        rows = [(n, s[n][key]) for n in names if key in s[n]]
        if not rows:
            return
        lines.append(f"### {title}")
        lines.append("")
        lines.append("| target | " + " | ".join(c for c, _ in cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for n, e in rows:
            lines.append(f"| {n} | " + " | ".join(f(e) for _, f in cols) + " |")
        lines.append("")

    lat_cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("req/s", lambda e: fmt(e["rps"], 0)),
        ("p50 ms", lambda e: fms(e["p50"])),
        ("p90 ms", lambda e: fms(e["p90"])),
        ("p99 ms", lambda e: fms(e["p99"])),
        ("added p50", lambda e: fms(e["added_p50"], True)),
        ("added p99", lambda e: fms(e["added_p99"], True)),
        ("vs bare p50", lambda e: fms(e["vs_bare_p50"], True)),
        ("vs bare p99", lambda e: fms(e["vs_bare_p99"], True)),
        ("CPU µs/req", lambda e: fmt(e["cpu_us_per_req"], 0)),
        ("errors", lambda e: fmt(e["errors"], 0)),
    ]
    # at ~50 req/s the 10 ms CPU clock tick makes CPU per request meaningless: left out
    table(
        "Fixed concurrency: 1 connection (wrk)", "c1", [c for c in lat_cols if c[0] != "CPU µs/req"]
    )
    table("Fixed concurrency: 20 connections (wrk)", "c20", lat_cols)
    for rate in cfg["rates"]:
        table(
            f"Paced: about {rate:,} req/s offered (wrk, {max(1, round(rate / 20))} connections, "
            f"random think time, mean {THINK_MS:g} ms)",
            f"rate{rate}",
            lat_cols,
        )
    table(
        f"Saturation: {cfg['sat_conns']} connections (wrk)",
        "sat",
        [
            ("req/s", lambda e: fmt(e["rps"], 0)),
            ("x bare", lambda e: fmt(e["rps_vs_bare"], 2)),
            ("p50 ms", lambda e: fms(e["p50"])),
            ("p99 ms", lambda e: fms(e["p99"])),
            ("CPU µs/req", lambda e: fmt(e["cpu_us_per_req"], 0)),
            ("target CPU (cores)", lambda e: fmt(e["sut_util"], 2)),
            ("upstream CPU (cores)", lambda e: fmt(e["upstream_util"], 2)),
            ("errors", lambda e: fmt(e["errors"], 0)),
        ],
    )
    table(
        "Streaming, 1 stream at a time (bench/stream_client.py, own process on core 1)",
        "stream",
        [
            ("TTFT ms", lambda e: fms(e["ttft"])),
            ("added TTFT", lambda e: fms(e["added_ttft"], True)),
            ("vs bare TTFT", lambda e: fms(e["vs_bare_ttft"], True)),
            ("stream ms", lambda e: fms(e["total"])),
            ("added stream", lambda e: fms(e["added_total"], True)),
            ("tokens/stream", lambda e: f"{e['tokens_min']}-{e['tokens_max']}"),
            ("failed", lambda e: fmt(e["failed"], 0)),
        ],
    )
    table(
        "Memory (RSS of the process tree)",
        "rss",
        [
            ("idle MB", lambda e: fmt(e["idle_mb"], 1)),
            ("after load MB", lambda e: fmt(e["after_load_mb"], 1)),
            (f"{cfg['conns']:,} open conns MB", lambda e: fmt(e["conns_mb"], 1)),
            ("conns held", lambda e: fmt((e.get("conns") or {}).get("open"), 0)),
        ],
    )
    lines.append("### Budget (issue 8), modelroute against the same run's peers")
    lines.append("")
    lines.append(
        "The verdict is the **modelroute-sampled** column: every feature on, tracing on and "
        "exporting to a local collector, 1 % of traces sampled (standard `OTEL_TRACES_SAMPLER` "
        "variables only). The **modelroute** column is the same build exporting every span: "
        "what tracing everything costs (docs/performance.md)."
    )
    lines.append("")
    lines.append("| check | bound | modelroute-sampled | met | modelroute (every span) | met |")
    lines.append("|---|---|---:|---|---:|---|")
    all_spans = {r["check"]: r for r in doc.get("budget_all_spans") or []}
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    for r in doc["budget"]:
        o = all_spans.get(r["check"]) or {"value": None, "unit": "", "pass": None}
        lines.append(
            f"| {r['check']} | {r['bound']} | {fmt(r['value'], 3)} {r['unit']} | "
            f"{verdict[r['pass']]} | {fmt(o['value'], 3)} {o['unit']} | {verdict[o['pass']]} |"
        )
    lines.append("")
    if doc.get("tracing_budget"):
        lines.append("### Tracing every span (issue 17), against the same run's bare pass-through")
        lines.append("")
        lines.append(
            "**modelroute** exports every span (the OpenTelemetry default sampler), the verdict "
            "of issue 17; **modelroute-tail** makes tail decisions in the sidecar "
            f"(`MODELROUTE_TRACES_TAIL_RATIO={TAIL_RATIO}`); **modelroute-sampled** is the 1 % "
            "head-sampled row above. CPU is the whole process (every thread: the batch "
            "exporter's too)."
        )
        lines.append("")
        lines.append("| check | bound | " + " | ".join(f"{n} | met" for n in TRACING_ROWS) + " |")
        lines.append("|---|---|" + "---:|---|" * len(TRACING_ROWS))
        for r in doc["tracing_budget"]:
            cells = " | ".join(
                f"{fmt(r['values'][n], 3)} {r['unit'] if r['values'][n] is not None else ''} | "
                f"{verdict[r['pass'][n]]}"
                for n in TRACING_ROWS
            )
            lines.append(f"| {r['check']} | {r['bound']} | {cells} |")
        lines.append("")
    if doc["skipped"]:
        lines.append("### Not measured")
        lines.append("")
        for name, why in doc["skipped"].items():
            lines.append(f"- **{name}**: {why.splitlines()[0]}")
        lines.append("")
    lines.append("### Notes")
    lines.append("")
    for n in names:
        lines.append(f"- **{n}**: {s[n]['note']}")
    checks = doc.get("checks") or {}
    if "metrics" in checks:
        mt = checks["metrics"]
        lines.append(
            f"- modelroute `/metrics` after the run: HTTP {mt.get('status')}, "
            f"{fmt(mt.get('bytes'), 0)} bytes, {len(mt.get('families') or [])} families."
        )
    sink = checks.get("otlp_sink") or {}
    if "requests" in sink:
        lines.append(
            f"- OTLP sink received {sink['requests']:,} export requests "
            f"({sink['bytes']:,} bytes of spans) during the run."
        )
    for name, got in (checks.get("spans_per_row") or {}).items():
        lines.append(
            f"- {name}: answered {got['requests']:,} requests; the sink decoded "
            f"{got['server_spans']:,} SERVER spans ({got['spans']:,} spans in all) from it."
        )
    lines.extend(doc.get("warnings_md", []))
    lines.append("")
    return "\n".join(lines)


def warnings(doc: dict[str, Any]) -> list[str]:
    out = []
    for name, s in doc["summary"].items():
        for key in ("c20", "sat", *(f"rate{r}" for r in doc["config"]["rates"])):
            e = s.get(key)
            if e and name != "direct" and (e.get("upstream_util") or 0) > 0.85:
                out.append(
                    f"- ⚠ {name} / {key}: the upstream used {e['upstream_util']:.2f} of its core "
                    "- the upstream (with the load tool beside it), not the target, may limit."
                )
        for key in (f"rate{r}" for r in doc["config"]["rates"]):
            e = s.get(key)
            rate = int(key[4:])
            if e and e.get("rps") and e["rps"] < 0.9 * rate:
                out.append(
                    f"- {name} could not keep up with {rate:,} req/s offered "
                    f"(served {e['rps']:,.0f} req/s); its latency there is queueing."
                )
    return out


DOC = ROOT / "docs" / "performance.md"
DOC_START, DOC_END = "<!-- latest:start -->", "<!-- latest:end -->"


def sync_docs(md: str) -> None:
    """Put the latest table into docs/performance.md, between its two markers."""
    if not DOC.exists():
        return
    text = DOC.read_text()
    if DOC_START not in text or DOC_END not in text:
        return
    body = md.split("\n", 1)[1].replace("\n### ", "\n#### ")  # drop the H1, demote the rest
    head, rest = text.split(DOC_START, 1)
    tail = rest.split(DOC_END, 1)[1]
    DOC.write_text(f"{head}{DOC_START}\n{body.strip()}\n{DOC_END}{tail}")
    log(f"updated the latest table in {DOC.relative_to(ROOT)}")


def main() -> int:
    p = argparse.ArgumentParser(description="modelroute side-by-side benchmark")
    p.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")))
    p.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", "3")))
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument(
        "--rates", type=lambda v: [int(x) for x in v.split(",")], default=[200, 1000, 3000]
    )
    p.add_argument("--sat-conns", type=int, default=256)
    p.add_argument("--streams", type=int, default=40)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument(
        "--targets",
        default=os.environ.get("BENCH_TARGETS", ""),
        help="comma list among bare,modelroute,modelroute-sampled,modelroute-tail,modelroute-w2,"
        "nginx,litellm "
        "(direct always runs)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=570.0,  # 3 rounds take ~540 s on the bench machine, set-up included
        help="start no round that would end after this many seconds (the whole run stays < 10 min)",
    )
    p.add_argument("--out", default=str(RESULTS / "latest"), help="path stem for .md and .json")
    args = p.parse_args()

    RAW.mkdir(parents=True, exist_ok=True)
    b = Bench(args)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        b.run()
    finally:
        b.stop_all()
    if not b.rounds:
        log("no round completed; nothing written")
        return 1
    summary = summarise(b)
    doc: dict[str, Any] = {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "elapsed_s": round(time.monotonic() - b.t_start, 1),
        "machine": machine(),
        "config": {
            "rounds": args.reps,
            "rounds_done": len(b.rounds),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rates": args.rates,
            "sat_conns": args.sat_conns,
            "streams_per_round": args.streams,
            "conns": args.conns,
            "pinning": {"target": b.sut_cpu or "none", "load+upstream": b.load_cpu or "none"},
            "upstream": {"latency_ms": 20, "output_tokens": 50, "stream_chunk_gap_ms": 1},
            "tracing": "OTEL_TRACES_EXPORTER=otlp, http/protobuf to bench/otlp_sink.py on loopback; "
            "modelroute-sampled adds OTEL_TRACES_SAMPLER=parentbased_traceidratio, "
            f"OTEL_TRACES_SAMPLER_ARG={SAMPLED_RATIO}",
        },
        "summary": summary,
        "skipped": b.skipped,
        "checks": b.extra.get("checks", {}),
        "rounds_raw": b.rounds,
    }
    # the verdict: tracing on, 1 % of traces exported (docs/performance.md says why); the
    # same checks for every span exported beside it
    doc["budget"] = budget(summary, "modelroute-sampled")
    doc["budget_all_spans"] = budget(summary, "modelroute")
    doc["tracing_budget"] = tracing_budget(summary)
    doc["warnings_md"] = warnings(doc)
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    log(f"wrote {stem.with_suffix('.md')} and .json in {doc['elapsed_s']:.0f} s")
    if stem == RESULTS / "latest":
        sync_docs(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
