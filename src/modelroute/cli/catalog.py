"""``modelroute catalog``: the built-in model catalogue as a table or JSON."""

from __future__ import annotations

import argparse
import sys

import orjson

from modelroute.resources import BUILTIN_CATALOGUE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("catalog", help="print the built-in model catalogue (prices from the seeds)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _price(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.2f}"


def run(args: argparse.Namespace) -> int:
    if args.json:
        doc = [m.model_dump(by_alias=True, mode="json") for m in BUILTIN_CATALOGUE]
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    header = ("MODEL", "FAMILY", "UPSTREAM", "OUTPUT $/M", "INPUT $/M", "CONTEXT", "CAPABILITIES")
    rows = [
        (
            m.name,
            m.family or "",
            m.upstream,
            _price(m.output_usd_per_mtok),
            _price(m.input_usd_per_mtok),
            f"{m.context_tokens:,}",
            ",".join(c.value for c in m.capabilities),
        )
        for m in BUILTIN_CATALOGUE
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print("\nPrices are USD per million tokens as the seed articles give them; the seeds quote no")
    print("input prices, so input tokens are counted as unpriced, never as $0.")
    return 0
