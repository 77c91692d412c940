"""The processes the harness starts, and what they use: CPU, memory, sockets.

Readings come from psutil rather than hand-parsed ``/proc`` files: the same
kernel figures (utime + stime, resident set size, the process tree) without
the field-offset arithmetic, and a process that exits mid-reading is skipped,
as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

from .config import BODY, HOST, PIDFILE, RAW, ROOT

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant (nginx workers, uvicorn/SO_REUSEPORT workers …)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except _GONE:
        kids = []
    return [pid, *(k.pid for k in kids)][:256]


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU time of the processes (what they used, not wall time)."""
    total = 0.0
    for p in pids:
        with contextlib.suppress(*_GONE):
            times = psutil.Process(p).cpu_times()
            total += times.user + times.system
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        with contextlib.suppress(*_GONE):
            total += psutil.Process(p).memory_info().rss
    return round(total / 2**20, 1)


def open_sockets(pids: list[int]) -> int:
    """Sockets the processes hold open: TCP, UDP and Unix ones in the kernel's tables.

    (A socket created but never bound or connected is in no table and not counted;
    a server holding 1,000 connections has none worth speaking of.)
    """
    n = 0
    for p in pids:
        with contextlib.suppress(*_GONE):
            n += len(psutil.Process(p).net_connections(kind="all"))
    return n


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


def taskset(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def port_of(url: str) -> int:
    m = re.match(r"https?://[^:/]+:(\d+)", url)
    assert m, url
    return int(m.group(1))
