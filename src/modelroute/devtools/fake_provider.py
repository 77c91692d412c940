"""An OpenAI-compatible fake upstream that can be told to misbehave.

Used by the tests, the demo and the benchmarks, so every knob maps to a
failure the seeds describe: a slow region, a 429 storm with ``Retry-After``,
a 5xx brown-out, a stream cut mid-way, a hang after the headers, garbage JSON,
a provider slow only at p99.  Knobs are set at start (CLI flags) and changed
live with ``POST /_control`` (JSON merge), so a test can take a region down
in the middle of a run; ``GET /_stats`` tells what the fake saw.

The answer is deterministic: ``output_tokens`` tokens of the form ``tok``,
usage computed from the request, the region echoed in ``x-fake-region``.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson
from aiohttp import web

from .fake_responses import FakeResponses, ResponseStore


@dataclass
class Knobs:
    region: str = "local"
    latency_ms: float = 0.0  # time before a non-stream answer (and before stream headers)
    ttft_ms: float = 0.0  # extra time before the first stream chunk
    tokens_per_second: float = 0.0  # 0 = as fast as possible
    output_tokens: int = 20
    error_rate: float = 0.0  # share of requests answered with error_status
    error_status: int = 503
    retry_after: float | None = None  # seconds, sent with 429/503 errors
    cut_after: int | None = None  # stream: drop the connection after N content chunks
    hang_after_headers: bool = False  # send 200 headers then never a body
    garbage: bool = False  # 200 with a body that is not JSON
    slow_share: float = 0.0  # share of requests that get slow_extra_ms more (a p99 tail)
    slow_extra_ms: float = 0.0
    down: bool = False  # refuse with a reset connection (as close to "gone" as a live server gets)
    echo_headers: bool = False  # include the request headers seen in the JSON answer (tests)
    reasoning_tokens: int = 0  # Responses API: how many of output_tokens were reasoning

    def update(self, patch: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(patch) - names
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}; known: {sorted(names)}")
        for key, value in patch.items():
            setattr(self, key, value)


@dataclass
class Stats:
    requests: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    errors_sent: int = 0
    in_flight: int = 0
    cancelled: int = 0
    last_authorization: str | None = None
    last_body: dict[str, Any] | None = None


def _estimate_tokens(body: dict[str, Any]) -> int:
    text = orjson.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")
    return max(1, len(text) // 4)


class FakeProvider:
    def __init__(self, knobs: Knobs | None = None, seed: int | None = None) -> None:
        self.knobs = knobs or Knobs()
        self.stats = Stats()
        self.rng = random.Random(seed)
        self._counter = 0
        self.responses = FakeResponses(ResponseStore(), self._id, lambda: self.knobs, self._headers)

    # -- app -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/responses", self.create_response)
        self.responses.add_routes(app)
        app.router.add_post("/_control", self.control)
        app.router.add_get("/_stats", self.stats_view)
        return app

    async def control(self, request: web.Request) -> web.Response:
        try:
            self.knobs.update(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.knobs))

    async def stats_view(self, request: web.Request) -> web.Response:
        s = self.stats
        return web.json_response(
            {
                "requests": s.requests,
                "byPath": dict(s.by_path),
                "byModel": dict(s.by_model),
                "errorsSent": s.errors_sent,
                "inFlight": s.in_flight,
                "cancelled": s.cancelled,
                "lastAuthorization": s.last_authorization,
                "lastBody": s.last_body,
                "knobs": asdict(self.knobs),
            }
        )

    # -- behaviour shared by every endpoint ----------------------------------------------

    async def _prelude(
        self, request: web.Request
    ) -> tuple[dict[str, Any], web.StreamResponse | None]:
        """Read the body, count it, and apply the failure knobs; returns an early answer if any."""
        k = self.knobs
        self.stats.requests += 1
        self.stats.by_path[request.path] += 1
        self.stats.last_authorization = request.headers.get("Authorization")
        if k.down:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # the connection is gone; aiohttp stops this handler
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return {}, self._error(400, "invalid_request_error", "body is not JSON")
        if not isinstance(body, dict):
            return {}, self._error(400, "invalid_request_error", "body must be an object")
        self.stats.last_body = body
        self.stats.by_model[str(body.get("model"))] += 1
        delay = k.latency_ms
        if k.slow_share and self.rng.random() < k.slow_share:
            delay += k.slow_extra_ms
        if delay:
            await asyncio.sleep(delay / 1000)
        if k.error_rate and self.rng.random() < k.error_rate:
            self.stats.errors_sent += 1
            headers = {"Retry-After": f"{k.retry_after:g}"} if k.retry_after is not None else {}
            return body, self._error(k.error_status, "server_error", "injected failure", headers)
        return body, None

    def _error(
        self, status: int, type_: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": type_, "code": status}},
            status=status,
            headers={"x-fake-region": self.knobs.region, **(headers or {})},
        )

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await asyncio.sleep(3600)
        return resp

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self.knobs.region}-{self._counter}"

    def _usage(self, body: dict[str, Any]) -> dict[str, int]:
        prompt = _estimate_tokens(body)
        completion = self.knobs.output_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _headers(self) -> dict[str, str]:
        return {"x-fake-region": self.knobs.region}

    # -- endpoints -------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.stats.in_flight += 1
        try:
            body, early = await self._prelude(request)
            if early is not None:
                return early
            if self.knobs.hang_after_headers:
                return await self._hang(request)
            if self.knobs.garbage:
                return web.Response(
                    body=b"<html>502 Bad Gateway</html>{not json",
                    content_type="application/json",
                    headers=self._headers(),
                )
            if body.get("stream"):
                return await self._stream_chat(request, body)
            text = " ".join(["tok"] * self.knobs.output_tokens)
            answer: dict[str, Any] = {
                "id": self._id("chatcmpl"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage(body),
            }
            if self.knobs.echo_headers:
                answer["x_headers"] = dict(request.headers)
            return web.Response(
                body=orjson.dumps(answer), content_type="application/json", headers=self._headers()
            )
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        except ConnectionResetError:  # the caller (the proxy) closed the connection mid-stream
            self.stats.cancelled += 1
            return web.Response(status=499)
        finally:
            self.stats.in_flight -= 1

    async def _stream_chat(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        k = self.knobs
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self._headers(),
            }
        )
        await resp.prepare(request)
        if k.ttft_ms:
            await asyncio.sleep(k.ttft_ms / 1000)
        cid = self._id("chatcmpl")
        created = int(time.time())
        model = body.get("model")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            doc = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + orjson.dumps(doc) + b"\n\n"

        await resp.write(chunk({"role": "assistant", "content": ""}))
        pause = 1.0 / k.tokens_per_second if k.tokens_per_second else 0.0
        for i in range(k.output_tokens):
            if k.cut_after is not None and i >= k.cut_after:
                assert request.transport is not None
                request.transport.abort()  # mid-stream death, no [DONE]
                return resp
            await resp.write(chunk({"content": "tok "}))
            if pause:
                await asyncio.sleep(pause)
        await resp.write(chunk({}, "stop"))
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            usage_doc: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": self._usage(body),
            }
            await resp.write(b"data: " + orjson.dumps(usage_doc) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._prelude(request)
        if early is not None:
            return early
        if body.get("stream"):
            return await self._stream_completion(request, body)
        answer = {
            "id": self._id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "text": " ".join(["tok"] * self.knobs.output_tokens),
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": self._usage(body),
        }
        return web.Response(
            body=orjson.dumps(answer), content_type="application/json", headers=self._headers()
        )

    async def _stream_completion(
        self, request: web.Request, body: dict[str, Any]
    ) -> web.StreamResponse:
        """Legacy completions streamed as OpenAI does: ``text_completion`` chunks, then [DONE]."""
        k = self.knobs
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self._headers(),
            }
        )
        await resp.prepare(request)
        if k.ttft_ms:
            await asyncio.sleep(k.ttft_ms / 1000)
        cid = self._id("cmpl")
        created = int(time.time())

        def chunk(text: str, finish: str | None = None) -> bytes:
            doc = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": body.get("model"),
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            }
            return b"data: " + orjson.dumps(doc) + b"\n\n"

        pause = 1.0 / k.tokens_per_second if k.tokens_per_second else 0.0
        for i in range(k.output_tokens):
            if k.cut_after is not None and i >= k.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return resp
            await resp.write(chunk("tok "))
            if pause:
                await asyncio.sleep(pause)
        await resp.write(chunk("", "stop"))
        options = body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            usage_doc: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": body.get("model"),
                "choices": [],
                "usage": self._usage(body),
            }
            await resp.write(b"data: " + orjson.dumps(usage_doc) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._prelude(request)
        if early is not None:
            return early
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        prompt = _estimate_tokens(body)
        # `encoding_format: "base64"` (what the Node SDK asks for by default, and the Python
        # SDK when not told otherwise): little-endian float32s, base64-encoded, as OpenAI sends
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i in range(len(items)):
            vector = [0.1, 0.2, 0.3, float(i)]
            encoded: object = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        answer = {
            "object": "list",
            "model": body.get("model"),
            "data": data,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
        return web.Response(
            body=orjson.dumps(answer), content_type="application/json", headers=self._headers()
        )

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._prelude(request)
        if early is not None:
            return early
        if self.knobs.hang_after_headers:
            return await self._hang(request)
        return await self.responses.create(request, body)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []}, headers=self._headers())


async def start_fake_provider(
    host: str = "127.0.0.1", port: int = 0, knobs: Knobs | None = None, seed: int | None = None
) -> tuple[FakeProvider, web.AppRunner, int]:
    """Start a fake on ``host:port`` (0 = any free port); returns it, its runner and the bound port."""
    fake = FakeProvider(knobs, seed)
    # handler_cancellation: a caller that hangs up cancels the handler, so stats.cancelled
    # counts abandoned non-stream requests too (aiohttp leaves it off by default)
    runner = web.AppRunner(
        fake.app(),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return fake, runner, int(bound)
