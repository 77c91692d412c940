"""``python -m bench.harness``: parse the options, run, summarise, write (bench/run.sh calls it)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .config import RAW, RESULTS, SAMPLED_RATIO, log
from .report import machine, markdown, sync_docs, warnings
from .runner import Bench
from .summary import budget, summarise, tracing_budget


def main() -> int:
    p = argparse.ArgumentParser(
        prog="bench/harness", description="modelroute side-by-side benchmark"
    )
    p.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")))
    p.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", "3")))
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument(
        "--rates", type=lambda v: [int(x) for x in v.split(",")], default=[200, 1000, 3000]
    )
    p.add_argument("--sat-conns", type=int, default=256)
    p.add_argument("--streams", type=int, default=40)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument(
        "--targets",
        default=os.environ.get("BENCH_TARGETS", ""),
        help="comma list among bare,modelroute,modelroute-sampled,modelroute-tail,modelroute-w2,"
        "nginx,litellm "
        "(direct always runs)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=570.0,  # 3 rounds take ~540 s on the bench machine, set-up included
        help="start no round that would end after this many seconds (the whole run stays < 10 min)",
    )
    p.add_argument("--out", default=str(RESULTS / "latest"), help="path stem for .md and .json")
    args = p.parse_args()

    RAW.mkdir(parents=True, exist_ok=True)
    b = Bench(args)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        b.run()
    finally:
        b.stop_all()
    if not b.rounds:
        log("no round completed; nothing written")
        return 1
    summary = summarise(b)
    doc: dict[str, Any] = {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "elapsed_s": round(time.monotonic() - b.t_start, 1),
        "machine": machine(),
        "config": {
            "rounds": args.reps,
            "rounds_done": len(b.rounds),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rates": args.rates,
            "sat_conns": args.sat_conns,
            "streams_per_round": args.streams,
            "conns": args.conns,
            "pinning": {"target": b.sut_cpu or "none", "load+upstream": b.load_cpu or "none"},
            "upstream": {"latency_ms": 20, "output_tokens": 50, "stream_chunk_gap_ms": 1},
            "tracing": "OTEL_TRACES_EXPORTER=otlp, http/protobuf to bench/otlp_sink.py on loopback; "
            "modelroute-sampled adds OTEL_TRACES_SAMPLER=parentbased_traceidratio, "
            f"OTEL_TRACES_SAMPLER_ARG={SAMPLED_RATIO}",
        },
        "summary": summary,
        "skipped": b.skipped,
        "checks": b.extra.get("checks", {}),
        "rounds_raw": b.rounds,
    }
    # the verdict: tracing on, 1 % of traces exported (docs/performance.md says why); the
    # same checks for every span exported beside it
    doc["budget"] = budget(summary, "modelroute-sampled")
    doc["budget_all_spans"] = budget(summary, "modelroute")
    doc["tracing_budget"] = tracing_budget(summary)
    doc["warnings_md"] = warnings(doc)
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    log(f"wrote {stem.with_suffix('.md')} and .json in {doc['elapsed_s']:.0f} s")
    if stem == RESULTS / "latest":
        sync_docs(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
