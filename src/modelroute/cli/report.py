"""``modelroute report``: spend per route and model, and what routing saved, from ``/metrics``.

Reads a sidecar's admin ``/metrics`` (``--metrics http://127.0.0.1:15401/metrics``)
or a saved scrape (``--metrics scrape.txt``, ``-`` for stdin).  Exit 0 with
the report, 1 when the source can't be read or holds no modelroute metrics.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from modelroute.proxy.costreport import CostReportError, parse_exposition

DEFAULT_TIMEOUT = 10.0
MAX_BYTES = 64 * 1024 * 1024  # a scrape larger than this is not one sidecar's /metrics


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="spend per route and model, and the 'routing saved you X %%' figure, from /metrics",
        description=(
            "Spend per route and model from a sidecar's /metrics (or a saved scrape), and what "
            "the same output tokens would have cost on each route's most expensive target."
        ),
    )
    p.add_argument(
        "--metrics",
        required=True,
        metavar="URL|FILE",
        help="http(s) URL of a sidecar's /metrics, a saved scrape, or '-' for stdin",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the URL (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


class FetchError(Exception):
    pass


def fetch(source: str, timeout: float) -> str:
    """The exposition text of a URL, a file, or stdin; :class:`FetchError` says what failed."""
    if source == "-":
        return sys.stdin.read()
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"Accept": "text/plain"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body: bytes = response.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"cannot fetch {source}: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise FetchError(f"cannot fetch {source}: {exc.reason}") from exc
        except TimeoutError as exc:
            raise FetchError(f"cannot fetch {source}: no answer within {timeout:g}s") from exc
        except OSError as exc:
            raise FetchError(f"cannot fetch {source}: {exc}") from exc
        if len(body) > MAX_BYTES:
            raise FetchError(f"{source} sent more than {MAX_BYTES} bytes; not a /metrics page")
        return body.decode("utf-8", errors="replace")
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise FetchError(f"cannot read {source}: {exc.strerror}") from exc


def run(args: argparse.Namespace) -> int:
    try:
        text = fetch(args.metrics, args.timeout)
        report = parse_exposition(text, source=args.metrics)
    except (FetchError, CostReportError) as exc:
        print(f"modelroute report: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(report.to_text())
    return 0
