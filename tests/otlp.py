"""An OTLP/HTTP trace collector on 127.0.0.1 for tests: what the real exporter sent, decoded."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span


@dataclass
class Receiver:
    url: str = ""  # the traces endpoint: http://127.0.0.1:PORT/v1/traces
    received: list[ExportTraceServiceRequest] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def spans(self) -> list[tuple[ResourceSpans, Span]]:
        """Every span received, with the resource it came under, in arrival order."""
        return [
            (resource_spans, span)
            for message in self.received
            for resource_spans in message.resource_spans
            for scope in resource_spans.scope_spans
            for span in scope.spans
        ]


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        receiver.received.append(message)
        receiver.arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        host, port = runner.addresses[0][:2]
        receiver.url = f"http://{host}:{port}/v1/traces"
        yield receiver
    finally:
        await runner.cleanup()
