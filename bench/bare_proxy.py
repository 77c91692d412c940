"""The floor for any Python proxy: a bare aiohttp pass-through.

One pooled ClientSession, no routing, no metrics, no parsing: the request body
goes upstream as bytes and the answer comes back as bytes (SSE chunk by chunk,
as it arrives).  Runs on uvloop, like ``modelroute proxy``, so the two differ
only in what modelroute does on top.

    python bench/bare_proxy.py --listen 127.0.0.1:18510 --upstream http://127.0.0.1:18500
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "host"}


def make_app(upstream: str, limit: int) -> web.Application:
    app = web.Application()
    base = upstream.rstrip("/")

    async def start(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=60)
        app["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with session.post(base + request.path_qs, data=body, headers=headers) as up:
            out = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
            if up.content_type != "text/event-stream":
                return web.Response(status=up.status, body=await up.read(), headers=out)
            resp = web.StreamResponse(status=up.status, headers=out)
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/{tail:.*}", forward)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:18510", metavar="HOST:PORT")
    p.add_argument("--upstream", default="http://127.0.0.1:18500", help="base URL, no /v1")
    p.add_argument("--limit", type=int, default=512, help="pooled upstream connections")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    web.run_app(
        make_app(args.upstream, args.limit),
        host=host or "127.0.0.1",
        port=int(port),
        access_log=None,
        print=None,
        shutdown_timeout=1.0,
    )


if __name__ == "__main__":
    main()
