"""A throw-away TLS certificate for servers on 127.0.0.1 (the openssl CLI, as cert-manager would)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, dns: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """``tls.crt``/``tls.key`` for IP 127.0.0.1 (and ``dns`` names), valid for a day; its own CA."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    names = ",".join(["IP:127.0.0.1", *(f"DNS:{name}" for name in dns)])
    command = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", f"subjectAltName={names}",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return cert, key
