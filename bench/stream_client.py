"""Streaming timer: time to first token and total stream time, in its own process.

The harness pins this process to the load-generator core (``taskset``), away
from the proxy under test, so the proxy's event loop and this client never
share a core.  Streams run one after another (concurrency 1 by default):
what is measured is the proxy's added delay on an otherwise quiet path.

Prints one JSON document on stdout: per-stream figures in microseconds
(``ttfb`` = response headers, ``first_event`` = first body bytes,
``ttft`` = first content token, ``total`` = last byte) and the number of
content tokens each stream carried, so a proxy that drops or merges chunks
is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import aiohttp

TOKEN = b"tok "


async def one(session: aiohttp.ClientSession, url: str, body: bytes) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        t_headers = time.perf_counter()
        first_event = ttft = 0.0
        tokens = 0
        tail = b""
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            if not first_event:
                first_event = now
            window = tail + chunk
            found = window.count(TOKEN)
            if found and not ttft:
                ttft = now
            tokens += found
            # keep the last few bytes so a token split across reads is counted once
            cut = window.rfind(TOKEN)
            tail = window[cut + len(TOKEN) :] if cut >= 0 else window
            tail = tail[-(len(TOKEN) - 1) :]
        t_end = time.perf_counter()
        status = resp.status

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 1) if t else -1.0

    return {
        "status": status,
        "ttfb": us(t_headers),
        "first_event": us(first_event),
        "ttft": us(ttft),
        "total": us(t_end),
        "tokens": tokens,
    }


async def run(
    url: str, n: int, warmup: int, concurrency: int, model: str, deadline: float
) -> dict[str, Any]:
    body = json.dumps(
        {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "max_tokens": 50,
        }
    ).encode()
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    stop_at = time.monotonic() + deadline
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(warmup):
            await one(session, url, body)
        queue = iter(range(n))

        async def worker() -> None:
            for _ in queue:
                if time.monotonic() > stop_at:
                    return
                try:
                    results.append(await one(session, url, body))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(repr(exc))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    ok = [r for r in results if r["status"] == 200 and r["ttft"] > 0]
    summary: dict[str, Any] = {"n": len(results), "ok": len(ok), "errors": errors[:5]}
    for key in ("ttfb", "first_event", "ttft", "total"):
        values = sorted(r[key] for r in ok)
        if values:
            summary[key] = {
                "p50": statistics.median(values),
                "p90": values[min(len(values) - 1, int(len(values) * 0.9))],
                "mean": round(statistics.fmean(values), 1),
            }
    summary["tokens_min"] = min((r["tokens"] for r in ok), default=0)
    summary["tokens_max"] = max((r["tokens"] for r in ok), default=0)
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description="time to first token through a proxy")
    p.add_argument("url", help="full URL of /v1/chat/completions")
    p.add_argument("-n", type=int, default=40, help="streams to time")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("--model", default="bench")
    p.add_argument("--deadline", type=float, default=20.0, help="stop starting streams after N s")
    args = p.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    out = asyncio.run(
        run(args.url, args.n, args.warmup, args.concurrency, args.model, args.deadline)
    )
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
