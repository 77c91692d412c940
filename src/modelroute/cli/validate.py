"""``modelroute validate FILE…``: the operator's rules, offline."""

from __future__ import annotations

import argparse

from modelroute.proxy.compiler import compile_local
from modelroute.resources import load_files


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="check ModelProvider/ModelRoute/FailoverPolicy files with the operator's rules",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML files or directories")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    resources = load_files(args.files)
    result = compile_local(resources)
    for problem in result.problems:
        print(problem)
    errors = [p for p in result.problems if p.is_error or args.strict]
    n_res = len(resources.providers) + len(resources.routes) + len(resources.policies)
    for other in resources.skipped:
        print(f"skipped: {other}: not a modelroute.io resource")
    if errors:
        print(f"\n{len(errors)} problem(s) in {', '.join(args.files)}; nothing was applied.")
        return 1
    print(
        f"ok: {n_res} resource(s), {len(result.table.routes)} route(s), "
        f"table {result.table.short_hash}"
    )
    return 0
