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


def private_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A CA of its own (``<name>.crt``/``<name>.key``), the way a cluster's private PKI has one."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    command = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "1", "-subj", f"/CN=modelroute-test-{name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return cert, key


def signed_by(
    ca: tuple[Path, Path], directory: Path, name: str = "server", dns: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 (and ``dns``) signed by ``ca`` (:func:`private_ca`)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    names = ",".join(["IP:127.0.0.1", *(f"DNS:{d}" for d in dns)])
    command = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", f"subjectAltName={names}", "-addext", "extendedKeyUsage=serverAuth",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return cert, key
