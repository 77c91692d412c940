"""``modelroute explain``: where a request would go and why, without sending anything.

Exit status: 0 when a route would serve the request, 2 when the proxy would
refuse it (the reason is printed), 1 when the route files have errors (printed
as ``modelroute validate`` prints them) or a file can't be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from modelroute.proxy.compiler import compile_local
from modelroute.proxy.explain import DEFAULT_OUTPUT_TOKENS, DEFAULT_SEED, explain_json
from modelroute.proxy.request import Endpoint
from modelroute.resources import load_files


def _header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'name: value', got {value!r}")
    return name.strip().lower(), rest.strip()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "explain",
        help="show which route, category and targets a request would get, and why (sends nothing)",
        description=(
            "Explain a request with the proxy's own routing code: route and category, candidates "
            "in order, dropped targets with their reasons, and an estimated cost at catalogue "
            f"prices ({DEFAULT_OUTPUT_TOKENS:,} output tokens when the request sets no max_tokens). "
            "Exit 0: would serve; 2: would be refused; 1: the route files have errors."
        ),
    )
    p.add_argument(
        "--routes",
        action="append",
        required=True,
        metavar="FILE",
        help="ModelProvider/ModelRoute/FailoverPolicy YAML file or directory (repeatable)",
    )
    p.add_argument(
        "--request",
        required=True,
        metavar="REQ.json",
        help="the request body as the app would send it ('-' reads stdin)",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        type=_header,
        metavar="'NAME: VALUE'",
        help="a request header (repeatable); routes may match on headers, the classifier reads some",
    )
    p.add_argument(
        "--endpoint",
        choices=[e.value for e in Endpoint],
        default=Endpoint.CHAT.value,
        help="which API the request is for (default: chat)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of the weighted order within a tier (default {DEFAULT_SEED}; fixed so the "
        "output repeats)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    resources = load_files(args.routes)
    result = compile_local(resources)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    if result.errors:
        print(
            f"\n{len(result.errors)} problem(s) in {', '.join(args.routes)}; "
            "fix them first (`modelroute validate` checks the same rules).",
            file=sys.stderr,
        )
        return 1
    try:
        raw = sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
    except OSError as exc:
        print(f"cannot read the request {args.request}: {exc.strerror}", file=sys.stderr)
        return 1
    headers = dict(args.header)
    answer = explain_json(result.table, raw, headers, Endpoint(args.endpoint), seed=args.seed)
    if args.json:
        doc = {"table": result.table.short_hash, **answer.to_dict()}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(f"table:    {result.table.short_hash} (from {', '.join(args.routes)})")
        sys.stdout.write(answer.to_text())
    return 0 if answer.would_serve else 2
