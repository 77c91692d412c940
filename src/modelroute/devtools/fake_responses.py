"""The Responses API as a fake provider region serves it: stored responses, typed events, follow-ups.

One :class:`ResponseStore` per fake (a fake is one region), so a follow-up
sent to the wrong region gets the ``previous_response_not_found`` /
``404`` a real provider gives.  Create answers a ``response`` object, or with
``stream: true`` the typed events in OpenAI's order (``response.created``,
``…in_progress``, ``…output_item.added``, ``…content_part.added``,
``…output_text.delta`` per token, the ``done`` events, ``response.completed``
with the usage), each with its ``event:`` line and ``sequence_number``.
Usage itemises ``cached_tokens`` (the previous turn's input, as a provider's
prompt cache would) and ``reasoning_tokens`` (the ``reasoning_tokens`` knob).
``GET``/``DELETE /v1/responses/{id}``, ``…/cancel`` and ``…/input_items``
work on what is stored; ``store: false`` keeps nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Stored:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    input_tokens: int


@dataclass
class ResponseStore:
    responses: dict[str, Stored] = field(default_factory=dict)


def _input_items(body: dict[str, Any], new_id: Callable[[str], str]) -> list[dict[str, Any]]:
    value = body.get("input")
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    items = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        content = item.get("content")
        if isinstance(content, str):
            content = [{"type": "input_text", "text": content}]
        items.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "role": item.get("role", "user"),
                "status": "completed",
                "content": content,
            }
        )
    return items


def not_found(message: str, param: str | None, code: str) -> web.Response:
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        },
        status=404,
    )


class FakeResponses:
    """The handlers; the fake provider owns the knobs, ids and the failure prelude."""

    def __init__(
        self,
        store: ResponseStore,
        new_id: Callable[[str], str],
        knobs: Callable[[], Any],
        headers: Callable[[], dict[str, str]],
    ) -> None:
        self.store = store
        self.new_id = new_id
        self.knobs = knobs
        self.headers = headers

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/responses/{id}", self.retrieve)
        app.router.add_delete("/v1/responses/{id}", self.delete)
        app.router.add_post("/v1/responses/{id}/cancel", self.cancel)
        app.router.add_get("/v1/responses/{id}/input_items", self.input_items)

    def _stored(self, request: web.Request) -> Stored | web.Response:
        if self.knobs().down:  # the region is gone for follow-ups too
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        rid = request.match_info["id"]
        found = self.store.responses.get(rid)
        if found is None:
            return not_found(f"Response with id '{rid}' not found.", None, "not_found")
        return found

    # -- create ----------------------------------------------------------------------------

    async def create(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        k = self.knobs()
        previous = body.get("previous_response_id")
        cached = 0
        if previous is not None:
            before = self.store.responses.get(str(previous))
            if before is None:
                return not_found(
                    f"Previous response with id '{previous}' not found.",
                    "previous_response_id",
                    "previous_response_not_found",
                )
            cached = before.input_tokens + before.response["usage"]["output_tokens"]
        items = _input_items(body, self.new_id)
        text_in = orjson.dumps(body.get("input") or "") + orjson.dumps(
            body.get("instructions") or ""
        )
        input_tokens = max(1, len(text_in) // 4) + cached
        output_tokens = k.output_tokens
        rid = self.new_id("resp")
        message_id = self.new_id("msg")
        text = " ".join(["tok"] * output_tokens)
        response: dict[str, Any] = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body.get("model"),
            "previous_response_id": previous,
            "instructions": body.get("instructions"),
            "output": [
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "store": body.get("store", True) is not False,
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": k.reasoning_tokens},
                "total_tokens": input_tokens + output_tokens,
            },
        }
        if response["store"]:
            self.store.responses[rid] = Stored(response, items, input_tokens)
        if body.get("stream"):
            return await self._stream(request, response, text)
        return web.Response(
            body=orjson.dumps(response), content_type="application/json", headers=self.headers()
        )

    async def _stream(
        self, request: web.Request, response: dict[str, Any], text: str
    ) -> web.StreamResponse:
        k = self.knobs()
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self.headers(),
            }
        )
        await resp.prepare(request)
        if k.ttft_ms:
            await asyncio.sleep(k.ttft_ms / 1000)
        seq = 0

        async def send(kind: str, **data: Any) -> None:
            nonlocal seq
            doc = {"type": kind, "sequence_number": seq, **data}
            seq += 1
            await resp.write(f"event: {kind}\n".encode() + b"data: " + orjson.dumps(doc) + b"\n\n")

        pending = {**response, "status": "in_progress", "output": [], "usage": None}
        await send("response.created", response=pending)
        await send("response.in_progress", response=pending)
        message = response["output"][0]
        mid = message["id"]
        await send(
            "response.output_item.added",
            output_index=0,
            item={**message, "status": "in_progress", "content": []},
        )
        empty_part = {"type": "output_text", "text": "", "annotations": []}
        await send(
            "response.content_part.added",
            item_id=mid,
            output_index=0,
            content_index=0,
            part=empty_part,
        )
        pause = 1.0 / k.tokens_per_second if k.tokens_per_second else 0.0
        for i in range(k.output_tokens):
            if k.cut_after is not None and i >= k.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return resp
            delta = "tok" if i == 0 else " tok"
            await send(
                "response.output_text.delta",
                item_id=mid,
                output_index=0,
                content_index=0,
                delta=delta,
            )
            if pause:
                await asyncio.sleep(pause)
        part = message["content"][0]
        await send(
            "response.output_text.done", item_id=mid, output_index=0, content_index=0, text=text
        )
        await send(
            "response.content_part.done", item_id=mid, output_index=0, content_index=0, part=part
        )
        await send("response.output_item.done", output_index=0, item=message)
        await send("response.completed", response=response)
        await resp.write_eof()
        return resp

    # -- follow-ups ----------------------------------------------------------------------------

    async def retrieve(self, request: web.Request) -> web.Response:
        found = self._stored(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(found.response, headers=self.headers())

    async def delete(self, request: web.Request) -> web.Response:
        found = self._stored(request)
        if isinstance(found, web.Response):
            return found
        rid = found.response["id"]
        del self.store.responses[rid]
        return web.json_response(
            {"id": rid, "object": "response.deleted", "deleted": True}, headers=self.headers()
        )

    async def cancel(self, request: web.Request) -> web.Response:
        found = self._stored(request)
        if isinstance(found, web.Response):
            return found
        if found.response["status"] not in ("queued", "in_progress"):
            return web.json_response(
                {
                    "error": {
                        "message": "Only responses created with background can be cancelled.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=400,
            )
        found.response["status"] = "cancelled"
        return web.json_response(found.response, headers=self.headers())

    async def input_items(self, request: web.Request) -> web.Response:
        found = self._stored(request)
        if isinstance(found, web.Response):
            return found
        items = list(found.input_items)
        if request.query.get("order", "desc") == "desc":
            items.reverse()
        after = request.query.get("after")
        if after:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = items[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            },
            headers=self.headers(),
        )
