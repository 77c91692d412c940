"""``modelroute demo``: the embedded scenario, with no keys and no cluster.

Fake providers in three regions, the real proxy in front of them, a scripted
workload (mostly ``model: "auto"``), one region taken down midway; then a
report of what served each category, the failover, latency and cost.  The
scenario lives in :mod:`modelroute.devtools.demo`; this module holds the
flags, the text report (kept within 100 columns) and the exit code:
0 when every request got an answer or a well-formed error, 1 when one was
lost, 2 when the demo could not start.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import textwrap
from collections import Counter
from typing import TYPE_CHECKING

import orjson

from modelroute.cli.common import run_async

if TYPE_CHECKING:
    from modelroute.devtools.demo import DemoResult

WIDTH = 100
_ATTEMPT_LIST = re.compile(r";\s*\d+ attempt\(s\):.*$", re.DOTALL)
CN_REGION = "cn-north-1"  # the demo's China region (see modelroute/examples/demo.yaml)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="fake providers in 3 regions, a proxy, a scripted workload and a region outage",
        description=(
            "Starts fake OpenAI-compatible providers in three regions and a modelroute proxy on "
            'free 127.0.0.1 ports, sends a scripted workload (mostly model "auto"), takes a '
            "region down midway, and reports which model served each category, the failover, "
            "p50/p99 latency and cost.  Needs no API key and no cluster; stops by itself."
        ),
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=16.0,
        help="how long to send requests (default 16; the whole demo takes ~1 s more)",
    )
    p.add_argument("--rate", type=float, default=8.0, help="requests per second (default 8)")
    p.add_argument(
        "--down",
        default="us-east-1",
        metavar="REGION",
        help="the region to take down: us-east-1 (default), eu-west-1 or cn-north-1 "
        "(cn-north-1 shows residency refusing to leave China)",
    )
    p.add_argument(
        "--stay-down",
        action="store_true",
        help="keep the region down to the end (default: it comes back at 75 %% of the run)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--verbose", action="store_true", help="show the proxy's own log lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modelroute.devtools.demo import DemoOptions, run_demo
    from modelroute.proxy.sources import ConfigError

    def progress(line: str) -> None:
        print(f"demo: {line}", file=sys.stderr, flush=True)

    options = DemoOptions(
        seconds=args.seconds,
        rate=args.rate,
        down=args.down,
        back_at=None if args.stay_down else DemoOptions.back_at,
        progress=None if args.quiet else progress,
    )
    try:
        options.check()
    except ValueError as exc:
        print(f"modelroute demo: {exc}", file=sys.stderr)
        return 2
    # The report states what the proxy would log (unpriced input tokens, ...); keep its
    # warnings out of the way unless asked for.
    logger = logging.getLogger("modelroute")
    previous = logger.level
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    else:
        logger.setLevel(logging.ERROR)
    outcome: list[DemoResult] = []

    async def main() -> None:
        outcome.append(await run_demo(options))

    try:
        run_async(main())
    except (ValueError, ConfigError, OSError) as exc:
        print(f"modelroute demo: could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        logger.setLevel(previous)
    if not outcome:  # interrupted
        return 130
    result = outcome[0]
    if args.json:
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        _write(render(result))
    return 1 if result.lost else 0


def _write(text: str) -> None:
    """Write the report; a terminal that can't show → × ▼ gets ``?`` rather than a traceback."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        encoding = sys.stdout.encoding or "ascii"
        sys.stdout.write(text.encode(encoding, "replace").decode(encoding))


# ---------------------------------------------------------------------------------------
# the text report


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:.7f}" if value < 1 else f"${value:,.2f}"


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=True,
        break_on_hyphens=False,
    )


def render(result: DemoResult) -> str:
    """The report: setup, categories, the outage, a timeline and the totals."""
    lines: list[str] = []
    lines += _setup(result)
    lines += ["", *_categories(result)]
    lines += ["", *_outage(result)]
    lines += ["", *_timeline(result)]
    lines += ["", *_totals(result)]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _setup(result: DemoResult) -> list[str]:
    requests = result.requests
    auto = sum(1 for r in requests if r.model == "auto")
    streamed = sum(1 for r in requests if r.stream)
    back = f"to {result.back_at:.1f} s" if result.back_at is not None else "to the end of the run"
    out = ["modelroute demo: the real proxy in front of fake providers, no keys, no cluster"]
    for i, region in enumerate(result.regions):
        families = [name for name, regions in result.endpoints.items() if region in regions]
        out.append(f"  {'regions' if i == 0 else '':<12}{region:<12}{', '.join(families)}")
    out += [
        f"  proxy       {result.proxy_url}/v1   admin {result.admin_url}",
        '  routes      modelroute/examples/demo.yaml: model "auto" is classified into light,',
        "              general, reasoning, multimodal or regional-cn; the route of that name serves",
        f"  workload    {len(requests)} requests in {result.sent_until:.1f} s "
        f'({result.options.rate:g}/s): {auto} as model "auto",',
        f"              {len(requests) - auto} naming their category; {streamed} streamed",
        f"  outage      {result.down_region} down from {result.down_at:.1f} s {back}",
    ]
    return out


def _categories(result: DemoResult) -> list[str]:
    head = (
        f"  {'CATEGORY':<12}{'REQS':>4}{'OK':>5}{'STREAM':>7}{'P50':>6}{'P99':>6}{'TTFT':>6}"
        f"  {'COST USD':<10}  SERVED BY (model@region ×requests)"
    )
    out = [
        "What served each category (ms as the client saw them: P50/P99 to the last byte,",
        "TTFT the median time to the first token of the streamed ones)",
        head,
    ]
    for c in result.categories():
        served = [f"{m}@{g} ×{n}" for m, g, n in c.served_by] or ["-"]
        row = (
            f"  {c.category:<12}{c.requests:>4}{c.ok:>5}{c.streamed:>7}{_ms(c.p50):>6}"
            f"{_ms(c.p99):>6}{_ms(c.ttft_p50):>6}  {_usd(c.cost_usd):<10}  "
        )
        out.append(row + served[0])
        out += [" " * len(row) + s for s in served[1:]]
    auto = [r for r in result.requests if r.model == "auto"]
    routed = [r for r in auto if r.route is not None]
    wrong = result.misclassified
    out.append(
        f'  classifier: {len(routed) - len(wrong)} of {len(routed)} "auto" requests landed in '
        "the category the script meant" + (f"; {len(wrong)} elsewhere" if wrong else "")
    )
    for r in wrong[:5]:
        out += _wrap(f"#{r.index} meant {r.category}, got {r.route}: {r.reason}", "      ", "    ")
    cn = [c for c in result.categories() if c.category == "regional-cn"]
    if cn:
        in_cn = sum(n for _, g, n in cn[0].served_by if g == CN_REGION)
        others = sum(
            n
            for c in result.categories()
            if c.category != "regional-cn"
            for _, g, n in c.served_by
            if g == CN_REGION
        )
        out.append(
            f"  residency: {in_cn} of {cn[0].ok} answered regional-cn requests served in "
            f"{CN_REGION}, {others} others there"
        )
    return out


def _outage(result: DemoResult) -> list[str]:
    f = result.failover()
    back = f"{f.back_at:.1f} s" if f.back_at is not None else "the end"
    during_failed = f.during - f.during_ok
    out = [
        f"The outage: {f.region} down from {f.down_at:.1f} s to {back}",
        f"  {f.during} requests sent while it was down: {f.during_ok} answered"
        + (f", {during_failed} not (see below)" if during_failed else ", none failed"),
    ]
    total = sum(x.requests for x in f.fallbacks)
    if total:
        out.append(
            f"  {total} requests fell back: the first attempt failed and the next candidate "
            "answered in the"
        )
        out.append(f"  same request (median time lost: {f.extra_ms_p50 or 0:.1f} ms)")
        for fb in f.fallbacks:
            out.append(f"    {fb.requests:>3}  {fb.first} → {fb.served}  ({fb.why})")
    else:
        out.append("  no request fell back")
    if f.out_of_rotation:
        out.append("  taken out of rotation (as /metrics showed it, polled every 0.1 s):")
        for e in f.out_of_rotation:
            out.append(f"    {e.at:5.1f} s  {e.describe()}")
    if f.window_end is not None:
        out += _wrap(
            f"failover window {f.down_at:.1f} s → {f.window_end:.1f} s: "
            f"{f.failed_attempts - f.probes} failed attempts on {f.region} before it was out "
            "of rotation.  Each candidate leaves on evidence: its own failures (circuit) or its "
            "region's error rate (ejection), so rarely used ones take longest.",
            "    ",
            "  ",
        )
    if f.probes:
        out += _wrap(
            f"probes: {f.probes} later attempts re-tried {f.region} after the failback delay "
            "or the circuit's open interval, to find out whether it was back.",
            "    ",
            "  ",
        )
    if f.back_at is not None:
        if f.failback_at is not None:
            out.append(
                f"  failback: {f.region} served again from {f.failback_at:.1f} s, "
                f"{f.failback_at - f.back_at:.1f} s after it came back"
            )
        else:
            out.append(f"  failback: {f.region} served nothing after it came back (run too short)")
    out += _problems(result)
    return out


def _problems(result: DemoResult) -> list[str]:
    out: list[str] = []
    errors = result.errors
    if errors:
        groups: Counter[tuple[str, str, str]] = Counter()
        tried: dict[tuple[str, str, str], Counter[str]] = {}
        for r in errors:
            # the proxy's message ends with every attempt; the attempts are summarised below
            key = (
                r.served_as,
                f"{r.status} {r.error_code or ''}".strip(),
                _ATTEMPT_LIST.sub("", r.error),
            )
            groups[key] += 1
            tried.setdefault(key, Counter()).update(a.result for a in r.attempts)
        out.append(f"  {len(errors)} requests got a well-formed error from the proxy:")
        for key, n in sorted(groups.items(), key=lambda kv: -kv[1])[:6]:
            route, status, message = key
            attempts = ", ".join(f"{k} ×{v}" for k, v in tried[key].most_common())
            text = f"{n} × {route}, HTTP {status}: {message[:300]}"
            if attempts:
                text += f" (their attempts: {attempts})"
            out += _wrap(text, "        ", "    ")
    lost = result.lost
    if lost:
        out.append(f"  {len(lost)} requests LOST (no answer and no well-formed error):")
        for r in lost[:10]:
            out += _wrap(f"#{r.index} {r.category} at {r.at:.1f} s: {r.error}", "        ", "    ")
    return out


def _timeline(result: DemoResult) -> list[str]:
    width, buckets = result.timeline()
    unit = f"{width:g} s" if width != 1 else "1 s"
    down_label = f"{result.down_region} down"
    label = max(12, len(down_label) + 1, *(len(g) + 1 for g in result.regions))
    out = [f"Timeline (one column per {unit}; requests by the region that served them)"]

    def row(name: str, values: list[str]) -> str:
        return f"  {name:<{label}}" + "".join(f"{v:>3}" for v in values)

    out.append(row("second", [f"{i * width:g}" for i in range(len(buckets))]))
    end = result.back_at if result.back_at is not None else float("inf")
    marks = [
        "▼" if result.down_at < (i + 1) * width and i * width < end else ""
        for i in range(len(buckets))
    ]
    out.append(row(down_label, marks))
    out.append(row("sent", [str(b["sent"]) for b in buckets]))
    for region in result.regions:
        out.append(row(region, [str(b[region]) if b[region] else "." for b in buckets]))
    out.append(row("fell back", [str(b["fallbacks"]) if b["fallbacks"] else "." for b in buckets]))
    out.append(row("failed", [str(b["failed"]) if b["failed"] else "." for b in buckets]))
    return out


def _totals(result: DemoResult) -> list[str]:
    n = len(result.requests)
    p50, p99 = result.latency_percentiles()
    cost = result.cost
    out = [
        "Totals",
        f"  {n} requests: {result.count('ok')} answered, {result.count('error')} well-formed "
        f"errors, {result.count('lost')} lost; p50 {_ms(p50)} ms, p99 {_ms(p99)} ms",
        f"  spent {_usd(cost.cost_usd)} on {result.output_tokens:,.0f} output tokens at the "
        "seeds' output prices",
    ]
    if cost.counterfactual_usd is not None and cost.saved_fraction is not None:
        out.append(
            f"  all on each route's most expensive target: {_usd(cost.counterfactual_usd)}; "
            f"routing saved {cost.saved_fraction * 100:.1f} %"
        )
    out.append(
        f"  input tokens: {result.unpriced_input_tokens:,.0f}, unpriced (the seeds quote output "
        "prices only): left out, not $0"
    )
    counted = result.proxy_requests
    counted_total = sum(counted.values())
    by_outcome = ", ".join(f"{k} {v:g}" for k, v in counted.items())
    agree = "matches the client" if counted_total == n else f"the client sent {n}"
    out.append(f"  the proxy's /metrics counted {counted_total:g} requests ({by_outcome}): {agree}")
    out.append(
        f"  done in {result.wall_seconds:.1f} s; every fake and the proxy are stopped"
        + ("" if not result.lost else "; exit status 1 because requests were lost")
    )
    return out
