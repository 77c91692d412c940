"""Small helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


def parse_hostport(value: str) -> tuple[str, int]:
    """``127.0.0.1:15400`` → ``("127.0.0.1", 15400)``; a bare port means 127.0.0.1."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} out of range in {value!r}")
    return host.strip("[]") or "127.0.0.1", number


def run_async(main: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine on uvloop when available; Ctrl-C ends it quietly."""
    runner: Callable[[Coroutine[Any, Any, Any]], Any]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(main)
