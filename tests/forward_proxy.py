"""A real forward proxy on loopback for the egress tests: Debian's ``tinyproxy``.

Installed by ``scripts/install-test-tools.sh``; missing, the tests skip with
the reason locally and FAIL under ``CI=true``.  Each proxy runs in the
foreground on a free 127.0.0.1 port with its own config and log, asks for
HTTP Basic credentials, and is stopped (by its pid) when the test ends.  Its
log (``LogLevel Connect``) records every CONNECT and every forwarded request,
which is how a test tells what went through it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER, PASSWORD = "egress-user", "pr0xy-s3cret"


@dataclass
class ForwardProxy:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_with_auth(self) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def requests(self) -> list[str]:
        """What it was asked to do: ``CONNECT host:port HTTP/1.1`` or ``POST http://… HTTP/1.1``."""
        return [
            line.split("): ", 1)[1] for line in self.lines() if "Request (file descriptor" in line
        ]


def _tinyproxy() -> str:
    found = shutil.which("tinyproxy") or (
        "/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None
    )
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("tinyproxy is missing in CI: scripts/install-test-tools.sh must install it")
        pytest.skip("tinyproxy is not installed (run scripts/install-test-tools.sh)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def tinyproxy(directory: Path, auth: bool = True) -> Iterator[ForwardProxy]:
    binary = _tinyproxy()
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # the free port may be taken between probing and binding: try another
        port = _free_port()
        log = directory / f"tinyproxy-{port}.log"
        conf = directory / f"tinyproxy-{port}.conf"
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 50",
            "LogLevel Connect",
            f'LogFile "{log}"',
        ]
        if auth:
            lines.append(f"BasicAuth {USER} {PASSWORD}")
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen(
            [binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        else:
            proc.kill()
            proc.wait(5)
            continue
        try:
            yield ForwardProxy(port, log)
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return
    pytest.fail("tinyproxy did not start on a free loopback port in 5 tries")
