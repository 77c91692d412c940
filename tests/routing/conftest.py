"""Fixtures for the routing proofs (issue 7): the proxy suite's fakes and proxies, plus a recorder.

``fakes``/``proxies``/``provider_key`` are the ones of ``tests/proxy`` (re-used,
not copied).  :class:`Recorder` is a tiny OpenAI-shaped upstream that stamps
when each request arrived and when its answer left, on the test's own clock,
so a test can prove *ordering* (the shadow copy starts after the primary
answered), which the fake provider's counters can't.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from ..proxy.conftest import fakes, provider_key, proxies  # noqa: F401  (fixtures re-used)


@dataclass
class Seen:
    """One request a :class:`Recorder` received."""

    arrived: float  # perf_counter when the handler started
    body: dict[str, Any]
    answered: float | None = None  # perf_counter when the answer was handed to aiohttp


@dataclass
class Recorder:
    """An upstream that answers after ``delay`` seconds (or fails with ``status``), and remembers."""

    delay: float = 0.0
    status: int = 200
    output_tokens: int = 20
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def marker(self, i: int) -> list[Seen]:
        """The requests whose last message is ``req-<i>`` (the tests' request marker)."""
        tag = f"req-{i}"
        return [s for s in self.seen if s.body.get("messages", [{}])[-1].get("content") == tag]

    async def chat(self, request: web.Request) -> web.Response:
        seen = Seen(time.perf_counter(), orjson.loads(await request.read()))
        self.seen.append(seen)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status != 200:
                return web.json_response(
                    {"error": {"message": "recorder told to fail", "type": "server_error"}},
                    status=self.status,
                )
            answer = {
                "id": f"chatcmpl-rec-{len(self.seen)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": seen.body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "rec " * self.output_tokens},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": self.output_tokens,
                    "total_tokens": 10 + self.output_tokens,
                },
            }
            seen.answered = time.perf_counter()
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        finally:
            self.in_flight -= 1


RecorderFactory = Callable[..., Awaitable[Recorder]]


@pytest.fixture
async def recorders() -> AsyncIterator[RecorderFactory]:
    runners: list[web.AppRunner] = []

    async def make(**kwargs: Any) -> Recorder:
        rec = Recorder(**kwargs)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", rec.chat)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        rec.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return rec

    yield make
    for runner in runners:
        await runner.cleanup()


def samples(exposition: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text exposition as (name, labels, value)."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    ]


def metric_sum(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        value
        for n, have, value in samples(exposition)
        if n == name and all(have.get(k) == v for k, v in labels.items())
    )
