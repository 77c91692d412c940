"""A local OTLP/HTTP receiver that accepts and counts export requests, then drops them.

modelroute runs in the benchmark with tracing really on: the OpenTelemetry SDK
creates every span, the batch processor serialises them to protobuf and the
OTLP/HTTP exporter posts them here, as it would to a collector in the pod.
``GET /stats`` tells how many export requests and bytes arrived, so the
harness can show that spans were produced rather than assume it.
"""

from __future__ import annotations

import argparse

from aiohttp import web


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    counts = {"requests": 0, "bytes": 0}

    async def receive(request: web.Request) -> web.Response:
        data = await request.read()
        counts["requests"] += 1
        counts["bytes"] += len(data)
        # an empty ExportTraceServiceResponse is an empty protobuf message
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app.router.add_post("/v1/traces", receive)
    app.router.add_post("/v1/metrics", receive)
    app.router.add_post("/v1/logs", receive)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=18560)
    args = p.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
