"""Open N keep-alive connections to a proxy, make one request on each, and hold them idle.

Used for "RSS with 1,000 open connections": every connection has carried a
real request (so the server built whatever per-connection state it keeps) and
then sits idle, kept alive.  Prints ``READY {json}`` on stdout once all are
open, then holds them until stdin closes or ``--hold`` seconds pass.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time


async def request_once(
    host: str, port: int, payload: bytes, sem: asyncio.Semaphore
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(payload)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            lines = head.decode("latin-1").lower().split("\r\n")
            if not lines[0].startswith("http/1.1 200"):
                writer.close()
                return None
            length = next(
                (int(h.split(":", 1)[1]) for h in lines if h.startswith("content-length:")), None
            )
            if length is not None:
                await asyncio.wait_for(reader.readexactly(length), 30)
            else:  # chunked
                await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 30)
            return reader, writer
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return None


async def run(host: str, port: int, n: int, parallel: int, hold: float, model: str) -> None:
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    ).encode()
    payload = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sem = asyncio.Semaphore(parallel)
    t0 = time.monotonic()
    conns = await asyncio.gather(*(request_once(host, port, payload, sem) for _ in range(n)))
    held = [c for c in conns if c is not None]
    print(
        "READY "
        + json.dumps(
            {"open": len(held), "failed": n - len(held), "seconds": round(time.monotonic() - t0, 2)}
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), hold)
    for _, writer in held:
        writer.close()


def main() -> None:
    p = argparse.ArgumentParser(description="hold N idle keep-alive connections")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=50, help="requests in flight while opening")
    p.add_argument("--hold", type=float, default=60.0, help="seconds to hold at most")
    p.add_argument("--model", default="bench")
    args = p.parse_args()
    asyncio.run(run(args.host, args.port, args.n, args.parallel, args.hold, args.model))


if __name__ == "__main__":
    main()
