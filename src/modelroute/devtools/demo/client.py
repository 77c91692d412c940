"""The demo's client: send one scripted request and judge what came back.

Why strict: the demo's main claim is that no request is lost, so an answer
counts as ok only when complete (a JSON body with choices, or a stream that
reaches ``[DONE]``), as an error only when it is a well-formed OpenAI error,
and as lost otherwise.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from .records import RequestResult
from .workload import Step


async def send(
    session: aiohttp.ClientSession, url: str, step: Step, t0: float, within: float
) -> RequestResult:
    """Send one scripted request and judge the answer: complete, a well-formed error, or lost."""
    sent = time.perf_counter()
    result = RequestResult(step.index, sent - t0, step.category, step.model, step.stream)
    headers = {"x-request-id": step.request_id, "Authorization": "Bearer demo-app-key"}
    try:
        async with asyncio.timeout(within):
            async with session.post(url, data=orjson.dumps(step.body), headers=headers) as resp:
                result.status = resp.status
                h = resp.headers
                result.route = h.get("x-modelroute-route")
                result.target = h.get("x-modelroute-target")
                result.reason = h.get("x-modelroute-reason")
                attempts = h.get("x-modelroute-attempts")
                result.attempts_header = int(attempts) if attempts and attempts.isdigit() else None
                if resp.status == 200 and step.stream:
                    await read_stream(resp, result, sent)
                else:
                    judge_body(await resp.read(), resp.status, result)
    except TimeoutError:
        result.outcome = "lost"
        result.error = f"no complete answer within {within:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        result.outcome = "lost"
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    result.latency = time.perf_counter() - sent
    return result


def judge_body(body: bytes, status: int, result: RequestResult) -> None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        result.outcome = "lost"
        result.error = f"HTTP {status} with a body that is not JSON: {body[:80]!r}"
        return
    if not isinstance(doc, dict):
        result.outcome = "lost"
        result.error = f"HTTP {status} with a JSON body that is not an object"
        return
    error = doc.get("error")
    if status == 200 and isinstance(doc.get("choices"), list) and doc["choices"]:
        result.outcome = "ok"
    elif status >= 400 and isinstance(error, dict) and isinstance(error.get("message"), str):
        result.outcome = "error"
        result.error = error["message"]
        code = error.get("code")
        result.error_code = str(code) if code is not None else None
    else:
        result.outcome = "lost"
        result.error = f"HTTP {status} that is neither an answer nor an OpenAI error"


async def read_stream(resp: aiohttp.ClientResponse, result: RequestResult, sent: float) -> None:
    """Read SSE to the end: ok only with ``[DONE]`` and no error event on the way."""
    done = False
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            result.outcome = "lost"
            result.error = f"a stream event that is not JSON: {data[:80]!r}"
            return
        if not isinstance(doc, dict):
            continue
        error = doc.get("error")
        if isinstance(error, dict):
            result.outcome = "error"
            result.error = str(error.get("message", ""))
            code = error.get("code")
            result.error_code = str(code) if code is not None else "stream_error"
            return
        if result.ttft is None and any(
            isinstance(c, dict) and (c.get("delta") or {}).get("content")
            for c in doc.get("choices") or ()
        ):
            result.ttft = time.perf_counter() - sent
    if done:
        result.outcome = "ok"
    else:
        result.outcome = "lost"
        result.error = "the stream ended without [DONE] or an error event"
