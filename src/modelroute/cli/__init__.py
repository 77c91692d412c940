"""The one ``modelroute`` console script.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``; the module's heavy imports (aiohttp, kopf) happen
inside its ``run`` function so ``modelroute validate`` starts fast and the
operator image doesn't pay for the proxy's imports, nor the other way round.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Sub-command modules, in the order `--help` lists them.
COMMANDS = (
    "proxy",
    "demo",
    "validate",
    "catalog",
    "fake_provider",
    "explain",
    "report",
    "operator",
    "crds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelroute",
        description="Route a pod's LLM traffic across providers and regions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"modelroute.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"modelroute.cli.{name}":
                continue  # a command not built into this install
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
