"""A local OTLP/HTTP receiver that accepts and counts export requests, then drops them.

modelroute runs in the benchmark with tracing really on: the OpenTelemetry SDK
creates every span, the batch processor serialises them to protobuf and the
OTLP/HTTP exporter posts them here, as it would to a collector in the pod.
``GET /stats`` tells how many export requests and bytes arrived, and how many
spans (and SERVER spans) each ``service.name`` sent – decoded with the official
protobuf classes, so a malformed request is a 400 and counted as such – so the
harness can show that every span was produced and accepted rather than assume it.
"""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

SERVER = Span.SpanKind.SPAN_KIND_SERVER


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    counts: dict[str, Any] = {"requests": 0, "bytes": 0, "malformed": 0, "services": {}}

    async def receive(request: web.Request) -> web.Response:
        data = await request.read()
        counts["requests"] += 1
        counts["bytes"] += len(data)
        if request.path == "/v1/traces":
            message = ExportTraceServiceRequest()
            try:
                message.ParseFromString(data)
            except Exception:  # a collector answers 400 to what it can't decode
                counts["malformed"] += 1
                return web.Response(status=400, text="not an ExportTraceServiceRequest")
            for resource_spans in message.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                row = counts["services"].setdefault(service, {"spans": 0, "server_spans": 0})
                for scope in resource_spans.scope_spans:
                    row["spans"] += len(scope.spans)
                    row["server_spans"] += sum(1 for sp in scope.spans if sp.kind == SERVER)
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
