"""``modelroute crds``: print or (re)write the generated CRD manifests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Both copies are generated from one source: crds/ for kubectl users, the chart's crds/ for helm.
DEFAULT_DIRS = ("crds", "charts/modelroute/crds")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("crds", help="generate the CRD manifests from the resource models")
    p.add_argument("--write", action="store_true", help="write into crds/ and the chart's crds/")
    p.add_argument("--root", default=".", help="repository root (for --write)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modelroute.operator import crdgen

    if args.write:
        root = Path(args.root)
        for path in crdgen.write_all([root / d for d in DEFAULT_DIRS]):
            print(f"wrote {path}")
        return 0
    for crd in crdgen.build_crds().values():
        sys.stdout.write("---\n" + crdgen.render(crd))
    return 0
