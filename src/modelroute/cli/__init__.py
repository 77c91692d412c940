"""The one ``modelroute`` console script.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``; the module's heavy imports (aiohttp, kopf) happen
inside its ``run`` function so ``modelroute validate`` starts fast and the
operator image doesn't pay for the proxy's imports, nor the other way round.
When the command line names a sub-command, only that one module is imported:
the sidecar (``modelroute proxy``) lives for days and shouldn't keep the
report's exposition parser or the demo's code in memory for a ``--help``
it never prints.
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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``modelroute`` parser with every sub-command, or with ``only`` that module's."""
    parser = argparse.ArgumentParser(
        prog="modelroute",
        description="Route a pod's LLM traffic across providers and regions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"modelroute.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"modelroute.cli.{name}":
                continue  # a command not built into this install
            raise
        module.register(sub)
    if only is not None and not sub.choices:  # not built into this install: say what is
        return build_parser()
    return parser


def command_module(argv: Sequence[str]) -> str | None:
    """The module of the sub-command ``argv`` starts with (``fake-provider`` → ``fake_provider``).

    None when it starts with anything else (``--help``, a typo): then the parser is built
    with every sub-command, so the help and the "invalid choice" error list them all.
    """
    if not argv or "_" in argv[0]:  # commands are spelt with dashes
        return None
    name = argv[0].replace("-", "_")
    return name if name in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    only = command_module(args_list)
    parser = build_parser(only)
    args = parser.parse_args(args_list)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
