"""A fake OpenAI-compatible provider as its own process (``modelroute fake-provider``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .controlplane import free_port

MODELROUTE = Path(sys.executable).parent / "modelroute"


@dataclass
class FakeProvider:
    workdir: Path
    region: str = "us-east"
    flags: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 15) -> FakeProvider:
        argv = [
            str(MODELROUTE), "fake-provider", "--listen", f"127.0.0.1:{self.port}",
            "--region", self.region, *self.flags,
        ]  # fmt: skip
        with (self.workdir / "fake.log").open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"fake provider on {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
