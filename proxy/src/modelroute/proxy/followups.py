"""The Responses API's follow-ups: ``GET``/``DELETE /v1/responses/{id}``, ``…/cancel``, ``…/input_items``.

Each one names a stored response, and only the provider region that created it
has it: the wrapped id (``responses.py``) says which, and the request goes
there and nowhere else – with the provider's key, the client's query string
(``input_items``' ``limit``/``order``/``after``), and the answer's response ids
wrapped again.  What the holder says is scrubbed like every other upstream
answer (``scrub.py``): an error body or detail loses every credential value sent
and every key-shaped token; a stored answer loses only the values we sent.
No route is involved (a follow-up names no model), so no
fallback either: an unreachable holder is a 503 that says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from . import errors
from .credentials import Credentials, MissingCredentials
from .responses import ResponseIds, follow_up_path, holder_unreachable, wrap_document
from .scrub import Scrubber
from .tablestore import TableStore
from .upstream import UpstreamError, UpstreamPool, forwarded_headers

FOLLOW_UP_TIMEOUT = 30.0  # seconds for the whole answer: these are small reads of stored state
MAX_ANSWER = 16 * 1024 * 1024  # a stored response with long outputs; input_items pages are smaller


class FollowUps:
    def __init__(
        self, store: TableStore, pool: UpstreamPool, credentials: Credentials, ids: ResponseIds
    ) -> None:
        self.store = store
        self.pool = pool
        self.credentials = credentials
        self.ids = ids

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/v1", ""):
            base = prefix + "/responses/{id}"
            app.router.add_get(base, self._handler(b"GET", ""))
            app.router.add_delete(base, self._handler(b"DELETE", ""))
            app.router.add_post(base + "/cancel", self._handler(b"POST", "/cancel"))
            app.router.add_get(base + "/input_items", self._handler(b"GET", "/input_items"))

    def _handler(
        self, method: bytes, suffix: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.forward(request, method, suffix)

        return handle

    async def forward(self, request: web.Request, method: bytes, suffix: str) -> web.Response:
        if not self.store.loaded:
            raise errors.NotReady("no route table loaded yet")
        table = self.store.current
        wrapped = request.match_info["id"]
        where = self.ids.unwrap(wrapped, table)
        provider = table.provider(where.provider)
        endpoint = provider.endpoint(where.region)
        headers = {"Accept": "application/json"}
        if method == b"POST":
            headers["Content-Type"] = "application/json"
        if provider.credentials is not None:
            try:
                headers.update(self.credentials.headers_for(provider.credentials))
            except MissingCredentials as exc:
                raise errors.MissingProviderKey(
                    f"no key for provider {provider.name}: {exc}"
                ) from None
        scrubber = Scrubber.for_headers(
            headers, provider.credentials.header if provider.credentials else None
        )
        body = b"{}" if method == b"POST" else b""
        path = follow_up_path(where, suffix, request.query_string)
        response = None
        try:
            async with asyncio.timeout(FOLLOW_UP_TIMEOUT):
                response = await self.pool.pool(provider).post(
                    endpoint.base_url, path, body, headers, method=method
                )
                data = await response.content.read(MAX_ANSWER)
        except TimeoutError:
            raise holder_unreachable(
                wrapped, where, f"no answer in {FOLLOW_UP_TIMEOUT:g} s"
            ) from None
        except UpstreamError as exc:  # RequestNotSent included: the client's one tree
            raise holder_unreachable(wrapped, where, scrubber.text(str(exc))[:200]) from None
        finally:
            if response is not None:
                response.release()
        status = response.status
        if status < 300:
            # a stored answer is the model's words: only an echo of our key is taken out
            data = wrap_document(scrubber.sent(data), self.ids, where.provider, where.region)
        elif status >= 500:
            raise holder_unreachable(wrapped, where, f"it answered {status}")
        else:
            data = scrubber.data(data)
        content_type = response.headers.get("content-type", "application/json").split(";")[0]
        try:  # an upstream error body is passed on only as the JSON it claims to be
            orjson.loads(data)
        except orjson.JSONDecodeError:
            raise holder_unreachable(
                wrapped, where, f"{status} with a body that is not JSON"
            ) from None
        return web.Response(
            status=status,
            body=data,
            content_type=content_type or "application/json",
            headers=forwarded_headers(response.headers),
        )
