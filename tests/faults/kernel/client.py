"""The load side of the kernel fault suite, run *inside* the namespace (``ip netns exec``).

The test process lives in the machine's own network namespace and cannot
reach the namespace's loopback, so the client that talks to the proxy is this
script, started in the namespace.  Two commands:

* ``load`` – waits until the proxy is ready, then sends ``--rate`` chat
  completions a second for ``--seconds`` (open loop: a slow answer does not
  slow the sending), and writes one JSON line per request – start and end
  (``time.monotonic()``, the clock the test process shares), status, whether
  the answer was complete, the target that served it, the attempts it took –
  followed by the proxy's ``/status``.  It prints ``{"event": "start", …}``
  the moment the first request goes out, so the test can time its faults.
* ``silence`` – proves a blackhole is one: a keep-alive connection that was
  answered once gets no answer once the port is dark, and a new connect
  hangs (the parent test darkens the port when told ``ready``).

Standard library and aiohttp only; bounded in time however the proxy behaves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

PAYLOAD = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hello"}]})
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-client"}


async def wait_ready(session: aiohttp.ClientSession, admin: str, within: float) -> None:
    """Poll ``/readyz`` until the proxy has a table and listens (bounded by ``within``)."""
    deadline = time.monotonic() + within
    last = ""
    while time.monotonic() < deadline:
        try:
            async with session.get(admin + "/readyz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                if r.status == 200:
                    return
                last = f"/readyz {r.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = type(exc).__name__
        await asyncio.sleep(0.05)
    raise SystemExit(f"proxy not ready after {within:g}s ({last})")


async def one(session: aiohttp.ClientSession, url: str, i: int, limit: float) -> dict[str, Any]:
    """One request and what it saw; a client-side timeout or reset is a record, not a crash."""
    rec: dict[str, Any] = {"i": i, "start": time.monotonic()}
    try:
        async with session.post(
            url, data=PAYLOAD, headers=HEADERS, timeout=aiohttp.ClientTimeout(total=limit)
        ) as resp:
            body = await resp.read()
            rec["status"] = resp.status
            rec["target"] = resp.headers.get("x-modelroute-target", "")
            rec["attempts"] = int(resp.headers.get("x-modelroute-attempts", "0") or 0)
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            choices = doc.get("choices") if isinstance(doc, dict) else None
            first = choices[0] if isinstance(choices, list) and choices else {}
            rec["ok"] = resp.status == 200 and first.get("finish_reason") == "stop"
            if not rec["ok"]:
                rec["error"] = body[:300].decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        rec.update(status=0, ok=False, target="", attempts=0, error=f"{type(exc).__name__} {exc}")
    rec["end"] = time.monotonic()
    return rec


async def load(args: argparse.Namespace) -> int:
    base = f"http://127.0.0.1:{args.proxy_port}"
    admin = f"http://127.0.0.1:{args.admin_port}"
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_ready(session, admin, args.ready_timeout)
        url = base + "/v1/chat/completions"
        total = int(args.rate * args.seconds)
        tasks: list[asyncio.Task[dict[str, Any]]] = []
        t0 = time.monotonic()
        print(json.dumps({"event": "start", "t": t0}), flush=True)
        for i in range(total):
            delay = t0 + i / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(session, url, i, args.limit)))
        records = await asyncio.gather(*tasks)
        try:
            async with session.get(admin + "/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
                status = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            status = {"error": f"{type(exc).__name__} {exc}"}
    lines = [json.dumps(rec) for rec in records]
    lines.append(json.dumps({"event": "status", "status": status}))
    # after the load, so a blocking write costs no request anything
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")  # noqa: ASYNC240
    print(
        json.dumps({"event": "done", "t": time.monotonic(), "requests": len(records)}), flush=True
    )
    return 0


def silence(args: argparse.Namespace) -> int:
    """Keep-alive answered once, then (port darkened by the parent) silent; new connects hang."""
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(PAYLOAD)}\r\n\r\n{PAYLOAD}"
    ).encode()
    kept = socket.create_connection(("127.0.0.1", args.port), timeout=5)
    kept.sendall(request)
    first = kept.recv(65536)
    answered_before = first.startswith(b"HTTP/1.1 200")
    print(json.dumps({"event": "ready", "answered": answered_before}), flush=True)
    sys.stdin.readline()  # the parent darkened the port
    kept.settimeout(args.wait)
    kept.sendall(request)
    try:
        kept_answer = kept.recv(65536)
    except TimeoutError:
        kept_answer = b""
    fresh = socket.socket()
    fresh.settimeout(args.wait)
    try:
        fresh.connect(("127.0.0.1", args.port))
        connected = True
    except TimeoutError:
        connected = False
    finally:
        fresh.close()
        kept.close()
    report = {
        "event": "result",
        "answered_before": answered_before,
        "kept_answered_after": bool(kept_answer),
        "new_connect_completed": connected,
    }
    print(json.dumps(report), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("load")
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--admin-port", type=int, required=True)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--limit", type=float, default=10.0, help="client timeout per request, s")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=lambda a: asyncio.run(load(a)))
    s = sub.add_parser("silence")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--wait", type=float, default=0.5)
    s.set_defaults(func=silence)
    args = parser.parse_args()
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
