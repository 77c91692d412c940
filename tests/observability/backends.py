"""The real observability backends the tests run on loopback: Jaeger and Prometheus.

Each is a subprocess with a generated config, every listener on 127.0.0.1 at a
free port, storage in memory or a temporary directory, and it is stopped (and
waited for) when the ``with`` block ends.  Neither server reports which port
``:0`` became, so a port is picked free and the start is retried when another
suite took it in between.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .conftest import free_port

START_TIMEOUT = 20.0  # seconds for a server to answer its API after exec (a loaded CI machine)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return json.load(response)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log: Path
    url: str  # the query API's base: http://127.0.0.1:PORT

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _start(cmd: list[str], log: Path, ready_url: str, base_url: str) -> Server | None:
    """Start ``cmd``; the server once ``ready_url`` answers, None if it exited first."""
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, log, base_url)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None  # most likely a port taken meanwhile: the caller retries
        try:
            with urllib.request.urlopen(ready_url, timeout=1):
                return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    _stop(server)
    raise AssertionError(
        f"{cmd[0]} did not answer {ready_url} in {START_TIMEOUT}s:\n{server.log_text()}"
    )


def _stop(server: Server, grace: float = 10.0) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@dataclass
class Jaeger(Server):
    otlp_traces: str = ""  # OTLP/HTTP traces endpoint: http://127.0.0.1:PORT/v1/traces


def jaeger_config(query_http: int, query_grpc: int, otlp_http: int) -> dict[str, Any]:
    """Jaeger v2 all-in-one, cut down: OTLP/HTTP in, memory storage, query API out."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"]}
            },
            # its own metrics would listen on :8888 for every instance: off
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {"mem": {"memory": {"max_traces": 10000}}}},
            "jaeger_query": {
                "storage": {"traces": "mem"},
                "http": {"endpoint": f"127.0.0.1:{query_http}"},
                "grpc": {"endpoint": f"127.0.0.1:{query_grpc}"},
            },
        },
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_http}"}}}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "mem"}},
    }


@contextlib.contextmanager
def run_jaeger(binary: str, workdir: Path, attempts: int = 3) -> Iterator[Jaeger]:
    for attempt in range(attempts):
        query_http, query_grpc, otlp_http = free_port(), free_port(), free_port()
        config = workdir / "jaeger.yaml"
        config.write_text(yaml.safe_dump(jaeger_config(query_http, query_grpc, otlp_http)))
        base = f"http://127.0.0.1:{query_http}"
        log = workdir / f"jaeger-{attempt}.log"
        server = _start([binary, "--config", f"file:{config}"], log, f"{base}/api/services", base)
        if server is None:
            continue
        # the query API answering doesn't prove the receiver is up: wait for it as well
        otlp = f"http://127.0.0.1:{otlp_http}/v1/traces"
        jaeger = Jaeger(server.process, server.log, server.url, otlp_traces=otlp)
        try:
            _wait_listening(otlp_http)
            yield jaeger
        finally:
            # its HTTP servers wait ~10 s for idle keep-alive clients on SIGTERM; the
            # storage is memory, so there is nothing to lose by not waiting
            _stop(jaeger, grace=1.0)
        return
    raise AssertionError(f"jaeger exited at start {attempts} times:\n{log.read_text()[-4000:]}")


def _wait_listening(port: int) -> None:
    import socket

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def prometheus_config(
    targets: list[tuple[str, dict[str, str]]], rule_files: list[str], interval: str
) -> dict[str, Any]:
    """One static scrape job per target (``host:port``, labels), the way a PodMonitor
    labels a sidecar (namespace, pod, container), and the given rule files."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": f"target-{i}",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [address], "labels": labels}],
            }
            for i, (address, labels) in enumerate(targets)
        ],
    }


@contextlib.contextmanager
def run_prometheus(
    binary: str,
    workdir: Path,
    targets: list[tuple[str, dict[str, str]]],
    rule_files: list[str] = (),  # type: ignore[assignment]
    interval: str = "1s",
    attempts: int = 3,
) -> Iterator[Server]:
    """Debian's Prometheus server on a free loopback port, its TSDB in ``workdir``."""
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, list(rule_files), interval)))
    for attempt in range(attempts):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = workdir / f"prometheus-{attempt}.log"
        cmd = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / f'tsdb-{attempt}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ]
        server = _start(cmd, log, f"{base}/-/ready", base)
        if server is None:
            continue
        try:
            yield server
        finally:
            _stop(server)
        return
    raise AssertionError(f"prometheus exited at start {attempts} times:\n{log.read_text()[-4000:]}")


def query(server: Server, promql: str) -> list[dict[str, Any]]:
    """An instant query through the HTTP API; the result vector (fails on a query error)."""
    from urllib.parse import urlencode

    doc = get_json(f"{server.url}/api/v1/query?{urlencode({'query': promql})}")
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])
