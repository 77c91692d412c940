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
