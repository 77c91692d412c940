"""How each row is started: the fake upstream and sink, then every target under test."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    BENCH,
    CHAT,
    HOST,
    LITELLM_BIN,
    PORT_BARE,
    PORT_LITELLM,
    PORT_MR,
    PORT_MR2,
    PORT_MR2_ADMIN,
    PORT_MR_ADMIN,
    PORT_MRS,
    PORT_MRS_ADMIN,
    PORT_MRT,
    PORT_MRT_ADMIN,
    PORT_NGINX,
    PORT_SINK,
    PORT_UPSTREAM,
    RAW,
    ROOT,
    SAMPLED_RATIO,
    TAIL_RATIO,
    VENV_BIN,
    log,
)
from .procs import Proc, port_free, taskset, wait_ready


@dataclass
class Target:
    name: str
    url: str  # full URL of the chat endpoint
    proc: Proc  # the process under test (for direct: the upstream itself)
    note: str = ""
    scenarios: tuple[str, ...] = ("c1", "c20", "sat", "rates", "stream")
    rss: dict[str, Any] = field(default_factory=dict)


class TargetStarters:
    """The start-up half of :class:`.runner.Bench`: spawn the rows and wait until each answers."""

    args: argparse.Namespace
    sut_cpu: str
    load_cpu: str
    procs: list[Proc]
    targets: list[Target]
    skipped: dict[str, str]
    upstream: Proc | None
    sink: Proc | None

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
