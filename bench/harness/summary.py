"""From rounds to figures: medians over rounds, differences to direct and bare, the budgets."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from .runner import Bench


def med(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return round(statistics.median(vals), 3) if vals else None


def summarise(b: Bench) -> dict[str, Any]:
    names = [t.name for t in b.targets]
    scen_keys = ["c1", "c20", "sat"] + [f"rate{r}" for r in b.args.rates]
    out: dict[str, Any] = {}
    for name in names:
        s: dict[str, Any] = {}
        for key in scen_keys:
            got = [rnd[name].get(key) for rnd in b.rounds if name in rnd]
            runs: list[dict[str, Any]] = [r for r in got if r and "error" not in r]
            if not runs:
                continue
            entry: dict[str, Any] = {"n_rounds": len(runs)}
            for m in (
                "rps",
                "p50",
                "p90",
                "p99",
                "cpu_us_per_req",
                "upstream_util",
                "sut_util",
                "errors",
            ):
                entry[m] = med([r.get(m) for r in runs])
            # added latency: this target minus direct, in the same round, then the median
            for m in ("p50", "p90", "p99"):
                diffs = []
                for rnd in b.rounds:
                    mine, base = (rnd.get(name) or {}).get(key), (rnd.get("direct") or {}).get(key)
                    if mine and base and "error" not in mine and "error" not in base:
                        diffs.append(mine[m] - base[m])
                entry[f"added_{m}"] = med(diffs)
            # against the bare pass-through, same round
            for m in ("p50", "p99"):
                diffs = []
                for rnd in b.rounds:
                    mine, base = (rnd.get(name) or {}).get(key), (rnd.get("bare") or {}).get(key)
                    if mine and base and "error" not in mine and "error" not in base:
                        diffs.append(mine[m] - base[m])
                entry[f"vs_bare_{m}"] = med(diffs)
            ratios = []
            for rnd in b.rounds:
                mine, base = (rnd.get(name) or {}).get(key), (rnd.get("bare") or {}).get(key)
                if mine and base and "error" not in mine and "error" not in base and base["rps"]:
                    ratios.append(mine["rps"] / base["rps"])
            entry["rps_vs_bare"] = round(statistics.median(ratios), 3) if ratios else None
            cpu_ratios = []
            for rnd in b.rounds:
                mine, base = (rnd.get(name) or {}).get(key), (rnd.get("bare") or {}).get(key)
                if mine and base and mine.get("cpu_us_per_req") and base.get("cpu_us_per_req"):
                    cpu_ratios.append(mine["cpu_us_per_req"] / base["cpu_us_per_req"])
            entry["cpu_vs_bare"] = round(statistics.median(cpu_ratios), 3) if cpu_ratios else None
            s[key] = entry
        got_s = [rnd[name].get("stream") for rnd in b.rounds if name in rnd]
        streams: list[dict[str, Any]] = [r for r in got_s if r and "error" not in r and "ttft" in r]
        if streams:
            st: dict[str, Any] = {"n_rounds": len(streams)}
            for m in ("ttfb", "ttft", "total"):
                st[m] = med([r[m]["p50"] for r in streams])
                for base_name in ("direct", "bare"):
                    diffs = []
                    for rnd in b.rounds:
                        mine, base = (
                            (rnd.get(name) or {}).get("stream"),
                            (rnd.get(base_name) or {}).get("stream"),
                        )
                        if mine and base and m in mine and m in base:
                            diffs.append(mine[m]["p50"] - base[m]["p50"])
                    st[f"added_{m}" if base_name == "direct" else f"vs_bare_{m}"] = med(diffs)
            st["tokens_min"] = min(r["tokens_min"] for r in streams)
            st["tokens_max"] = max(r["tokens_max"] for r in streams)
            st["failed"] = sum(r["n"] - r["ok"] for r in streams)
            s["stream"] = st
        t = next(t for t in b.targets if t.name == name)
        s["rss"] = {
            "idle_mb": t.rss.get("idle_mb"),
            "after_load_mb": t.rss.get("after_load_mb"),
            "conns_mb": t.rss.get("conns_mb"),
            "conns": t.rss.get("conns"),
        }
        s["note"] = t.note
        out[name] = s
    return out


def budget(summary: dict[str, Any], name: str = "modelroute") -> list[dict[str, Any]]:
    """The issue's budget for target ``name``, each line a difference or ratio from the same run."""
    mr, bare, lite = summary.get(name), summary.get("bare"), summary.get("litellm")
    rows: list[dict[str, Any]] = []

    def row(check: str, value: float | None, bound: str, ok: bool | None, unit: str = "") -> None:
        rows.append(
            {
                "check": check,
                "value": value,
                "unit": unit,
                "bound": bound,
                "pass": ok if value is not None else None,
            }
        )

    if not mr:
        return [
            {"check": "modelroute measured", "value": None, "unit": "", "bound": "-", "pass": None}
        ]
    for key, label in (
        ("c1", "1 connection"),
        ("c20", "20 connections"),
        ("rate1000", "1,000 req/s"),
    ):
        e = mr.get(key)
        if not e or not bare:
            continue
        v50 = e.get("vs_bare_p50")
        v99 = e.get("vs_bare_p99")
        row(
            f"added p50 over bare, {label}",
            ms(v50),
            "≤ +0.3 ms",
            v50 is not None and v50 <= 300,
            "ms",
        )
        row(
            f"added p99 over bare, {label}",
            ms(v99),
            "≤ +1 ms",
            v99 is not None and v99 <= 1000,
            "ms",
        )
    sat = (mr.get("sat") or {}).get("rps_vs_bare")
    row("saturation req/s vs bare (1 process)", sat, "≥ 0.60", sat is not None and sat >= 0.6, "x")
    ttft = (mr.get("stream") or {}).get("added_ttft")
    row("added TTFT over direct", ms(ttft), "≤ 1 ms", ttft is not None and ttft <= 1000, "ms")
    rss = mr.get("rss") or {}
    idle, conns = rss.get("idle_mb"), rss.get("conns_mb")
    row("RSS idle", idle, "≤ 60 MB", idle is not None and idle <= 60, "MB")
    row(
        "RSS with 1,000 open connections",
        conns,
        "≤ 120 MB",
        conns is not None and conns <= 120,
        "MB",
    )
    if lite:
        for key, label in (("c20", "20 connections"), ("c1", "1 connection")):
            a_l = (lite.get(key) or {}).get("added_p99")
            a_m = (mr.get(key) or {}).get("added_p99")
            if a_l is None or a_m is None:
                continue
            ratio = round(a_l / max(a_m, 1.0), 1)  # added p99 of ≤ 1 µs counts as 1 µs
            row(
                f"LiteLLM added p99 ÷ modelroute added p99, {label}",
                ratio,
                "≥ 50",
                ratio >= 50,
                "x",
            )
    return rows


TRACING_ROWS = ("modelroute", "modelroute-tail", "modelroute-sampled")


def tracing_budget(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 17's bounds for tracing, per traced row: CPU, saturation and tail against bare.

    Each figure is a ratio or difference to the bare pass-through taken within a round,
    then the median over rounds.
    """
    rows: list[dict[str, Any]] = []
    for key, label in (
        ("c20", "20 connections"),
        ("sat", "saturation"),
        ("rate1000", "1,000 req/s"),
    ):
        values = {
            n: ((summary.get(n) or {}).get(key) or {}).get("cpu_vs_bare") for n in TRACING_ROWS
        }
        rows.append(
            _trow(f"CPU per request ÷ bare's, {label}", "≤ 1.5 x", values, "x", lambda v: v <= 1.5)
        )
    values = {n: ((summary.get(n) or {}).get("sat") or {}).get("rps_vs_bare") for n in TRACING_ROWS}
    rows.append(_trow("saturation req/s vs bare", "≥ 0.60", values, "x", lambda v: v >= 0.6))
    values = {
        n: ms(((summary.get(n) or {}).get("rate1000") or {}).get("vs_bare_p99"))
        for n in TRACING_ROWS
    }
    rows.append(
        _trow("added p99 over bare, 1,000 req/s", "≤ +1 ms", values, "ms", lambda v: v <= 1.0)
    )
    return rows


def _trow(
    check: str,
    bound: str,
    values: dict[str, float | None],
    unit: str,
    ok: Callable[[float], bool],
) -> dict[str, Any]:
    return {
        "check": check,
        "bound": bound,
        "unit": unit,
        "values": values,
        "pass": {n: (None if v is None else ok(v)) for n, v in values.items()},
    }


def ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 3)
