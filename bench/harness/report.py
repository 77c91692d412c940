"""Writing it down: the machine, the Markdown table, the warnings, docs/performance.md."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import C1_DURATION_FACTOR, LITELLM_BIN, ROOT, TAIL_RATIO, THINK_MS, VENV_BIN, log
from .summary import TRACING_ROWS


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return "not found"
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0][:100] if text else "?"

    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "proxy", "src"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit + (" (+ uncommitted proxy/src changes)" if dirty else ""),
        "wrk": version(["wrk", "--version"]),
        "nginx": version(["nginx", "-v"]),
        "litellm": version(
            [
                str(LITELLM_BIN / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ]
        ),
        "aiohttp": version(
            [str(VENV_BIN / "python"), "-c", "import aiohttp; print(aiohttp.__version__)"]
        ),
    }


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def fms(us: Any, signed: bool = False) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:+.2f}" if signed else f"{us / 1000:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    s, m, cfg = doc["summary"], doc["machine"], doc["config"]
    names = list(s)
    lines = [
        "# modelroute benchmark - latest run",
        "",
        f"{doc['finished']} · {m['nproc']} cores ({m['cpu_model']}) · kernel {m['kernel']} · "
        f"Python {m['python']} · commit {m['commit']}",
        "",
        f"Medians of {cfg['rounds_done']} interleaved rounds; {cfg['duration_s']:g} s per load run "
        f"({cfg['duration_s'] * C1_DURATION_FACTOR:g} s at 1 connection) "
        f"after a {cfg['warmup_s']:g} s warm-up. Upstream: fake provider, 20 ms per answer, "
        "streams of 50 chunks 1 ms apart. Process under test on core 0; upstream, OTLP sink and "
        "load tools on core 1. *added* = this target minus **direct** in the same round (ms); "
        "*vs bare* = minus the bare aiohttp pass-through in the same round. "
        "Reproduce: `make bench` (see docs/performance.md).",
        "",
    ]

    def table(
        title: str, key: str, cols: list[tuple[str, Callable[[dict[str, Any]], str]]]
    ) -> None:
        rows = [(n, s[n][key]) for n in names if key in s[n]]
        if not rows:
            return
        lines.append(f"### {title}")
        lines.append("")
        lines.append("| target | " + " | ".join(c for c, _ in cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for n, e in rows:
            lines.append(f"| {n} | " + " | ".join(f(e) for _, f in cols) + " |")
        lines.append("")

    lat_cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("req/s", lambda e: fmt(e["rps"], 0)),
        ("p50 ms", lambda e: fms(e["p50"])),
        ("p90 ms", lambda e: fms(e["p90"])),
        ("p99 ms", lambda e: fms(e["p99"])),
        ("added p50", lambda e: fms(e["added_p50"], True)),
        ("added p99", lambda e: fms(e["added_p99"], True)),
        ("vs bare p50", lambda e: fms(e["vs_bare_p50"], True)),
        ("vs bare p99", lambda e: fms(e["vs_bare_p99"], True)),
        ("CPU µs/req", lambda e: fmt(e["cpu_us_per_req"], 0)),
        ("errors", lambda e: fmt(e["errors"], 0)),
    ]
    # at ~50 req/s the 10 ms CPU clock tick makes CPU per request meaningless: left out
    table(
        "Fixed concurrency: 1 connection (wrk)", "c1", [c for c in lat_cols if c[0] != "CPU µs/req"]
    )
    table("Fixed concurrency: 20 connections (wrk)", "c20", lat_cols)
    for rate in cfg["rates"]:
        table(
            f"Paced: about {rate:,} req/s offered (wrk, {max(1, round(rate / 20))} connections, "
            f"random think time, mean {THINK_MS:g} ms)",
            f"rate{rate}",
            lat_cols,
        )
    table(
        f"Saturation: {cfg['sat_conns']} connections (wrk)",
        "sat",
        [
            ("req/s", lambda e: fmt(e["rps"], 0)),
            ("x bare", lambda e: fmt(e["rps_vs_bare"], 2)),
            ("p50 ms", lambda e: fms(e["p50"])),
            ("p99 ms", lambda e: fms(e["p99"])),
            ("CPU µs/req", lambda e: fmt(e["cpu_us_per_req"], 0)),
            ("target CPU (cores)", lambda e: fmt(e["sut_util"], 2)),
            ("upstream CPU (cores)", lambda e: fmt(e["upstream_util"], 2)),
            ("errors", lambda e: fmt(e["errors"], 0)),
        ],
    )
    table(
        "Streaming, 1 stream at a time (bench/stream_client.py, own process on core 1)",
        "stream",
        [
            ("TTFT ms", lambda e: fms(e["ttft"])),
            ("added TTFT", lambda e: fms(e["added_ttft"], True)),
            ("vs bare TTFT", lambda e: fms(e["vs_bare_ttft"], True)),
            ("stream ms", lambda e: fms(e["total"])),
            ("added stream", lambda e: fms(e["added_total"], True)),
            ("tokens/stream", lambda e: f"{e['tokens_min']}-{e['tokens_max']}"),
            ("failed", lambda e: fmt(e["failed"], 0)),
        ],
    )
    table(
        "Memory (RSS of the process tree)",
        "rss",
        [
            ("idle MB", lambda e: fmt(e["idle_mb"], 1)),
            ("after load MB", lambda e: fmt(e["after_load_mb"], 1)),
            (f"{cfg['conns']:,} open conns MB", lambda e: fmt(e["conns_mb"], 1)),
            ("conns held", lambda e: fmt((e.get("conns") or {}).get("open"), 0)),
        ],
    )
    lines.append("### Budget (issue 8), modelroute against the same run's peers")
    lines.append("")
    lines.append(
        "The verdict is the **modelroute-sampled** column: every feature on, tracing on and "
        "exporting to a local collector, 1 % of traces sampled (standard `OTEL_TRACES_SAMPLER` "
        "variables only). The **modelroute** column is the same build exporting every span: "
        "what tracing everything costs (docs/performance.md)."
    )
    lines.append("")
    lines.append("| check | bound | modelroute-sampled | met | modelroute (every span) | met |")
    lines.append("|---|---|---:|---|---:|---|")
    all_spans = {r["check"]: r for r in doc.get("budget_all_spans") or []}
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    for r in doc["budget"]:
        o = all_spans.get(r["check"]) or {"value": None, "unit": "", "pass": None}
        lines.append(
            f"| {r['check']} | {r['bound']} | {fmt(r['value'], 3)} {r['unit']} | "
            f"{verdict[r['pass']]} | {fmt(o['value'], 3)} {o['unit']} | {verdict[o['pass']]} |"
        )
    lines.append("")
    if doc.get("tracing_budget"):
        lines.append("### Tracing every span (issue 17), against the same run's bare pass-through")
        lines.append("")
        lines.append(
            "**modelroute** exports every span (the OpenTelemetry default sampler), the verdict "
            "of issue 17; **modelroute-tail** makes tail decisions in the sidecar "
            f"(`MODELROUTE_TRACES_TAIL_RATIO={TAIL_RATIO}`); **modelroute-sampled** is the 1 % "
            "head-sampled row above. CPU is the whole process (every thread: the batch "
            "exporter's too)."
        )
        lines.append("")
        lines.append("| check | bound | " + " | ".join(f"{n} | met" for n in TRACING_ROWS) + " |")
        lines.append("|---|---|" + "---:|---|" * len(TRACING_ROWS))
        for r in doc["tracing_budget"]:
            cells = " | ".join(
                f"{fmt(r['values'][n], 3)} {r['unit'] if r['values'][n] is not None else ''} | "
                f"{verdict[r['pass'][n]]}"
                for n in TRACING_ROWS
            )
            lines.append(f"| {r['check']} | {r['bound']} | {cells} |")
        lines.append("")
    if doc["skipped"]:
        lines.append("### Not measured")
        lines.append("")
        for name, why in doc["skipped"].items():
            lines.append(f"- **{name}**: {why.splitlines()[0]}")
        lines.append("")
    lines.append("### Notes")
    lines.append("")
    for n in names:
        lines.append(f"- **{n}**: {s[n]['note']}")
    checks = doc.get("checks") or {}
    if "metrics" in checks:
        mt = checks["metrics"]
        lines.append(
            f"- modelroute `/metrics` after the run: HTTP {mt.get('status')}, "
            f"{fmt(mt.get('bytes'), 0)} bytes, {len(mt.get('families') or [])} families."
        )
    sink = checks.get("otlp_sink") or {}
    if "requests" in sink:
        lines.append(
            f"- OTLP sink received {sink['requests']:,} export requests "
            f"({sink['bytes']:,} bytes of spans) during the run."
        )
    for name, got in (checks.get("spans_per_row") or {}).items():
        lines.append(
            f"- {name}: answered {got['requests']:,} requests; the sink decoded "
            f"{got['server_spans']:,} SERVER spans ({got['spans']:,} spans in all) from it."
        )
    lines.extend(doc.get("warnings_md", []))
    lines.append("")
    return "\n".join(lines)


def warnings(doc: dict[str, Any]) -> list[str]:
    out = []
    for name, s in doc["summary"].items():
        for key in ("c20", "sat", *(f"rate{r}" for r in doc["config"]["rates"])):
            e = s.get(key)
            if e and name != "direct" and (e.get("upstream_util") or 0) > 0.85:
                out.append(
                    f"- ⚠ {name} / {key}: the upstream used {e['upstream_util']:.2f} of its core "
                    "- the upstream (with the load tool beside it), not the target, may limit."
                )
        for key in (f"rate{r}" for r in doc["config"]["rates"]):
            e = s.get(key)
            rate = int(key[4:])
            if e and e.get("rps") and e["rps"] < 0.9 * rate:
                out.append(
                    f"- {name} could not keep up with {rate:,} req/s offered "
                    f"(served {e['rps']:,.0f} req/s); its latency there is queueing."
                )
    return out


DOC = ROOT / "docs" / "performance.md"
DOC_START, DOC_END = "<!-- latest:start -->", "<!-- latest:end -->"


def sync_docs(md: str) -> None:
    """Put the latest table into docs/performance.md, between its two markers."""
    if not DOC.exists():
        return
    text = DOC.read_text()
    if DOC_START not in text or DOC_END not in text:
        return
    body = md.split("\n", 1)[1].replace("\n### ", "\n#### ")  # drop the H1, demote the rest
    head, rest = text.split(DOC_START, 1)
    tail = rest.split(DOC_END, 1)[1]
    DOC.write_text(f"{head}{DOC_START}\n{body.strip()}\n{DOC_END}{tail}")
    log(f"updated the latest table in {DOC.relative_to(ROOT)}")
