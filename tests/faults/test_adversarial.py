"""A hostile client and a broken upstream, one at a time, and what a user then sees.

The contract under test: every request ends in a complete answer or an
OpenAI-shaped error; nothing outlives ``totalMs``; the proxy survives and
keeps serving; hop-by-hop headers stay on their hop; a reload or a stop never
truncates a stream silently.  Raw sockets stand in for clients and upstreams
aiohttp would not let misbehave.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web

from .conftest import (
    Answer,
    FakeFactory,
    ProxyFactory,
    ask,
    primary_backup_yaml,
    provider_yaml,
    route_yaml,
    sse_events,
)
from .test_upstream_faults import raw_upstream

CHAT = b'{"model":"chat","messages":[{"role":"user","content":"hello"}]}'
EXTRA = (
    "  timeouts: {firstByteMs: 500, totalMs: 3000}\n"
    "  retry: {maxAttempts: 2, baseBackoffMs: 10, maxBackoffMs: 20}"
)


def _one_target(url: str, extra: str = EXTRA, credentials: str = "") -> str:
    prov = provider_yaml("primary", [("us-east-1", url)])
    if credentials:
        prov = prov.replace("{env: FAKE_PROVIDER_KEY}", credentials)
    return prov + route_yaml("chat", ["chat"], ["{provider: primary, model: chat-a}"], extra)


def _two_tier(primary_url: str, backup_url: str, extra: str = EXTRA) -> str:
    return primary_backup_yaml(primary_url, backup_url, extra)


# ---------------------------------------------------------------------------------------
# raw HTTP on the client side


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.x response (Content-Length or close-delimited), bounded by the caller."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if status == 100:
        return status, headers, b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.read()
    return status, headers, body


@contextlib.asynccontextmanager
async def _raw_client(api_url: str) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    parts = urlsplit(api_url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), 2)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)


def _post(body: bytes, *, extra_headers: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/{version}\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra_headers}\r\n"
    ).encode() + body


def _openai_error(status: int, body: bytes) -> dict[str, Any]:
    doc = orjson.loads(body)
    err = doc["error"]
    assert isinstance(err["message"], str) and err["message"] and "type" in err, doc
    assert "code" in err
    return dict(err)


@pytest.fixture
async def served(fakes: FakeFactory, proxies: ProxyFactory) -> Any:
    fake = await fakes("us-east-1", latency_ms=5)
    return fake, await proxies(_one_target(fake.url), max_body_bytes=64 * 1024)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": ["chat"], "messages": [{"role": "user", "content": "x"}]}',
        b'{"messages": [{"role": "user", "content": "x"}]}',
        b"",
        b'{"model": "chat", "messages": "hello"}',
        b"[" * 20_000 + b"]" * 20_000,  # nesting past any parser's stack
        b'{"model": "chat", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        b'{"model": "chat", "max_tokens": NaN, "messages": []}',
        b'{"model": "chat", "max_tokens": 1e999, "messages": [{"content": "x"}]}',
    ],
)
async def test_bad_bodies_are_400s_in_openai_shape(
    body: bytes, served: Any, http: aiohttp.ClientSession
) -> None:
    fake, proxy = served
    async with http.post(
        proxy.base_url + "/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    ) as resp:
        raw = await resp.read()
        assert resp.status == 400, raw
        assert resp.content_type == "application/json"
        _openai_error(resp.status, raw)
    assert fake.stats.requests == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/chat/completions", 405), ("POST", "/v1/nope", 404), ("PUT", "/v1/models", 405)],
)
async def test_wrong_method_or_path_is_an_openai_shaped_error(
    method: str, path: str, status: int, served: Any, http: aiohttp.ClientSession
) -> None:
    _, proxy = served
    async with http.request(method, proxy.api_url + path, data=CHAT) as resp:
        raw = await resp.read()
        assert resp.status == status, raw
        _openai_error(resp.status, raw)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_json_body_is_served_whatever_the_content_type(
    content_type: str | None, served: Any, http: aiohttp.ClientSession
) -> None:
    """curl -d sends form-urlencoded; OpenAI itself parses the body anyway: so must we."""
    _, proxy = served
    headers = {"Content-Type": content_type} if content_type else {}
    async with _raw_client(proxy.api_url) as (reader, writer):
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        req = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"{extra}Content-Length: {len(CHAT)}\r\n\r\n"
        ).encode() + CHAT
        writer.write(req)
        status, _, body = await asyncio.wait_for(_read_response(reader), 5)
    assert status == 200, body
    assert orjson.loads(body)["choices"][0]["finish_reason"] == "stop"


async def test_body_over_the_limit_with_content_length_is_a_413(
    served: Any, http: aiohttp.ClientSession
) -> None:
    fake, proxy = served
    big = b'{"model":"chat","messages":[{"role":"user","content":"' + b"x" * 100_000 + b'"}]}'
    async with http.post(
        proxy.base_url + "/chat/completions",
        data=big,
        headers={"Content-Type": "application/json"},
    ) as resp:
        raw = await resp.read()
        assert resp.status == 413
        assert "65536" in _openai_error(413, raw)["message"]
    assert fake.stats.requests == 0


async def test_chunked_body_over_the_limit_is_a_413_without_content_length(
    served: Any, http: aiohttp.ClientSession
) -> None:
    fake, proxy = served
    status, err = await _post_chunked_over_limit(proxy)
    assert status == 413 and "too large" in err["message"]
    assert fake.stats.requests == 0


async def test_chunked_body_over_the_limit_names_the_real_limit(served: Any) -> None:
    """The message tells the operator which flag to raise and to what: it must be the limit."""
    _, proxy = served
    _, err = await _post_chunked_over_limit(proxy)
    assert "65536-byte limit" in err["message"], err["message"]


async def _post_chunked_over_limit(proxy: Any) -> tuple[int, dict[str, Any]]:

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model":"chat","messages":[{"role":"user","content":"'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}]}'

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            proxy.base_url + "/chat/completions",
            data=chunks(),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as resp,
    ):
        assert "content-length" not in {k.lower() for k in resp.request_info.headers}
        raw = await resp.read()
        return resp.status, _openai_error(resp.status, raw)


async def test_expect_100_continue_gets_continue_then_the_answer(served: Any) -> None:
    _, proxy = served
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(CHAT)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    async with _raw_client(proxy.api_url) as (reader, writer):
        writer.write(head)
        status, _, _ = await asyncio.wait_for(_read_response(reader), 5)
        assert status == 100
        writer.write(CHAT)
        status, _, body = await asyncio.wait_for(_read_response(reader), 5)
    assert status == 200 and orjson.loads(body)["choices"][0]["finish_reason"] == "stop"


async def test_http_1_0_without_keep_alive_is_answered_and_closed(served: Any) -> None:
    _, proxy = served
    async with _raw_client(proxy.api_url) as (reader, writer):
        writer.write(_post(CHAT, version="1.0"))
        status, _, body = await asyncio.wait_for(_read_response(reader), 5)
        assert status == 200 and orjson.loads(body)["choices"][0]["finish_reason"] == "stop"
        assert await asyncio.wait_for(reader.read(), 2) == b""  # the proxy closed it


async def test_a_huge_header_is_refused_and_the_proxy_keeps_serving(
    served: Any, http: aiohttp.ClientSession
) -> None:
    _, proxy = served
    async with _raw_client(proxy.api_url) as (reader, writer):
        writer.write(_post(CHAT, extra_headers=f"X-Junk: {'a' * 70_000}\r\n"))
        status, _, _ = await asyncio.wait_for(_read_response(reader), 5)
    assert status in (400, 431)
    assert (await ask(http, proxy.base_url)).complete()


async def test_thirty_pipelined_requests_on_one_connection_are_answered_in_order(
    served: Any,
) -> None:
    fake, proxy = served
    n = 30
    bodies = [
        orjson.dumps(
            {"model": "chat", "messages": [{"role": "user", "content": f"q{i}"}], "user": f"u{i}"}
        )
        for i in range(n)
    ]
    bad = {7, 19}  # a bad request in the pipeline must not desynchronise the ones after it
    async with _raw_client(proxy.api_url) as (reader, writer):
        writer.write(b"".join(_post(b"{oops" if i in bad else b) for i, b in enumerate(bodies)))
        statuses = []
        for _ in range(n):
            status, _, _ = await asyncio.wait_for(_read_response(reader), 5)
            statuses.append(status)
    assert statuses == [400 if i in bad else 200 for i in range(n)]
    assert fake.stats.requests == n - len(bad)


async def test_a_client_that_leaves_mid_body_leaves_no_trace(
    served: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    fake, proxy = served
    for _ in range(5):
        async with _raw_client(proxy.api_url) as (_, writer):
            writer.write(_post(CHAT)[:-20])
            await writer.drain()
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert proxy.proxy.dispatcher.in_flight == 0 and fake.stats.requests == 0
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert (await ask(http, proxy.base_url)).complete()


# ---------------------------------------------------------------------------------------
# broken upstreams


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """An upstream that notes every request's headers and answers a normal completion."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        await request.read()
        return web.json_response(_completion())

    async with raw_upstream(handler) as url:
        yield url.removesuffix("/v1"), seen


def _completion(content: str = "hi") -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": "chat-a-up",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


@pytest.mark.parametrize("code", [307, 302])
async def test_a_redirecting_upstream_is_a_failure_and_never_gets_our_key_elsewhere(
    code: int,
    recorder: tuple[str, list[dict[str, str]]],
    proxies: ProxyFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Client sees: an error (or the backup), and the redirect target never sees the key."""
    target, seen = recorder

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        raise (
            web.HTTPFound(target + "/v1/chat/completions")
            if code == 302
            else (web.HTTPTemporaryRedirect(target + "/v1/chat/completions"))
        )

    async with raw_upstream(handler) as url:
        proxy = await proxies(
            _one_target(url, credentials="{env: FAKE_PROVIDER_KEY, header: api-key}")
        )
        answer = await ask(http, proxy.base_url)
    leaked = [h for h in seen if h.get("api-key") == "sk-provider-secret"]
    print(f"[redirect {code}] client saw {answer.status}; redirect target got {seen}")
    assert not leaked  # the provider key never goes where an upstream points
    assert not seen  # nor anything else: a 3xx is not an answer
    assert answer.status >= 400 and answer.well_formed_error()


async def test_a_gzip_encoded_answer_reaches_the_client_as_plain_json(
    proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(
            body=gzip.compress(orjson.dumps(_completion("zipped"))),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    async with raw_upstream(handler) as url:
        proxy = await proxies(_one_target(url))
        async with http.post(
            proxy.base_url + "/chat/completions",
            data=CHAT,
            headers={"Content-Type": "application/json", "Accept-Encoding": "identity"},
        ) as resp:
            raw = await resp.read()
            assert resp.status == 200
            assert "content-encoding" not in {k.lower() for k in resp.headers}
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "zipped"


@contextlib.asynccontextmanager
async def raw_tcp_upstream(reply: bytes, *, then: str = "close") -> AsyncIterator[str]:
    """An upstream speaking raw bytes: reads one request, writes ``reply``, then closes/aborts."""
    conns: list[asyncio.StreamWriter] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(reply)
            await writer.drain()
            if then == "abort":
                writer.transport.abort()
            elif then == "close":
                writer.close()
            else:
                await asyncio.sleep(10)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        for w in conns:
            w.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


@pytest.mark.parametrize("then", ["close", "abort"])
async def test_a_body_shorter_than_its_content_length_falls_over_to_the_backup(
    then: str, fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Content-Length 500, 40 bytes, then FIN (or RST): not an answer, the backup serves."""
    backup = await fakes("eu-west-1")
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        + orjson.dumps(_completion())[:40]
    )
    async with raw_tcp_upstream(reply, then=then) as url:
        proxy = await proxies(_two_tier(url, backup.url))
        answer = await ask(http, proxy.base_url, limit=5)
    assert answer.complete() and answer.target.startswith("backup/"), answer.body[:300]
    assert answer.elapsed < 1.5


async def test_headers_then_reset_without_body_falls_over_to_the_backup(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    backup = await fakes("eu-west-1")
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n"
    async with raw_tcp_upstream(reply, then="abort") as url:
        proxy = await proxies(_two_tier(url, backup.url))
        answer = await ask(http, proxy.base_url, limit=5)
    assert answer.complete() and answer.target.startswith("backup/"), answer.body[:300]


def _chunk_event(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "chat-a-up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def test_an_sse_stream_with_crlf_line_ends_is_forwarded_whole(
    proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ("one ", "two ", "three"):
            await resp.write(b"data: " + orjson.dumps(_chunk_event(word)) + b"\r\n\r\n")
            await asyncio.sleep(0.01)
        # split a CRLF pair across two writes, the way a TCP segment may
        await resp.write(b"data: " + orjson.dumps(_chunk_event(None, "stop")) + b"\r\n\r")
        await asyncio.sleep(0.02)
        await resp.write(b"\n")
        usage = {**_chunk_event(None), "choices": [], "usage": {"prompt_tokens": 3}}
        usage["usage"]["completion_tokens"] = 3
        await resp.write(b"data: " + orjson.dumps(usage) + b"\r\n\r\ndata: [DONE]\r\n\r\n")
        return resp

    async with raw_upstream(handler) as url:
        proxy = await proxies(_one_target(url))
        answer = await ask(http, proxy.base_url, stream=True)
    assert answer.complete(), answer.body
    assert answer.content_chunks() == 3
    # the proxy asked for usage on its own account: the usage event is not forwarded
    assert not any(isinstance(e, dict) and e.get("usage") for e in sse_events(answer.body))


async def test_an_event_stream_for_a_non_stream_request_is_not_passed_off_as_json(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    backup = await fakes("eu-west-1")

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + orjson.dumps(_chunk_event("x", "stop")) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async with raw_upstream(handler) as url:
        proxy = await proxies(_two_tier(url, backup.url))
        answer = await ask(http, proxy.base_url)
    assert answer.complete() and answer.target.startswith("backup/"), answer.body[:300]


async def test_a_json_answer_to_a_stream_request_never_reaches_an_sdk_as_an_empty_stream(
    fakes: FakeFactory, proxies: ProxyFactory
) -> None:
    """An upstream that ignores ``stream: true``: the SDK must get the text or an error."""
    import openai

    backup = await fakes("eu-west-1")

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response(_completion("the whole answer"))

    async with raw_upstream(handler) as url:
        proxy = await proxies(_two_tier(url, backup.url))
        client = openai.AsyncOpenAI(
            base_url=proxy.base_url, api_key="sk-client", max_retries=0, timeout=5
        )
        text = ""
        try:
            stream = await client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hello"}], stream=True
            )
            async for chunk in stream:
                text += "".join(c.delta.content or "" for c in chunk.choices)
        except openai.APIError:
            text = "<error>"  # an error the app sees is fine too
        finally:
            await client.close()
    assert text, "the SDK's stream ended without a chunk and without an error"


async def test_an_endless_event_stream_for_a_non_stream_request_falls_over_at_once(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Content-Type says it is not the JSON asked for: the backup, well before totalMs."""
    backup = await fakes("eu-west-1")

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"data: " + orjson.dumps(_chunk_event("x")) + b"\n\n")
            await asyncio.sleep(0.1)
        return resp

    async with raw_upstream(handler) as url:
        proxy = await proxies(_two_tier(url, backup.url))
        answer = await ask(http, proxy.base_url, limit=5)
    assert answer.status != 200 or answer.target.startswith("backup/")
    assert answer.complete(), (answer.status, answer.body[:200])
    assert answer.elapsed < 1.0  # firstByteMs 500, totalMs 3000


async def test_a_gzip_encoded_event_stream_is_forwarded_decoded(
    proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        )
        await resp.prepare(request)
        z = zlib.compressobj(wbits=31)
        events = [_chunk_event(w) for w in ("a", "b", "c")] + [_chunk_event(None, "stop")]
        for ev in events:
            await resp.write(z.compress(b"data: " + orjson.dumps(ev) + b"\n\n"))
            await resp.write(z.flush(zlib.Z_SYNC_FLUSH))
            await asyncio.sleep(0.01)
        await resp.write(z.compress(b"data: [DONE]\n\n") + z.flush())
        return resp

    async with raw_upstream(handler) as url:
        proxy = await proxies(_one_target(url))
        answer = await ask(http, proxy.base_url, stream=True)
    assert answer.complete(), answer.body[:300]
    assert answer.content_chunks() == 3 and "content-encoding" not in answer.headers


async def test_an_upstream_closing_every_connection_still_serves_every_request(
    proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    count = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal count
        count += 1
        await request.read()
        resp = web.json_response(_completion(str(count)))
        resp.force_close()  # "Connection: close" on every answer
        return resp

    async with raw_upstream(handler) as url:
        proxy = await proxies(_one_target(url))
        answers = [await ask(http, proxy.base_url, limit=5) for _ in range(8)]
        answers += await asyncio.gather(*(ask(http, proxy.base_url, limit=5) for _ in range(8)))
    assert all(a.complete() and a.attempts == 1 for a in answers), [a.status for a in answers]
    assert count == 16


HOP_BY_HOP = ("connection", "keep-alive", "upgrade", "proxy-authenticate", "te", "trailer")


@pytest.mark.parametrize("stream", [False, True])
async def test_hop_by_hop_headers_of_the_upstream_stay_behind(
    stream: bool, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    if stream:
        body = b"data: " + orjson.dumps(_chunk_event("x", "stop")) + b"\n\ndata: [DONE]\n\n"
        ctype = b"text/event-stream"
    else:
        body = orjson.dumps(_completion())
        ctype = b"application/json"
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: keep-alive, X-Secret-Hop\r\nKeep-Alive: timeout=600\r\n"
        b"Upgrade: h2c\r\nProxy-Authenticate: Basic\r\nTrailer: X-Checksum\r\n"
        b"X-Secret-Hop: internal\r\nx-request-id: req-123\r\n\r\n" + body
    )
    async with raw_tcp_upstream(reply, then="close") as url:
        proxy = await proxies(_one_target(url))
        answer = await ask(http, proxy.base_url, stream=stream)
    assert answer.complete(), answer.body
    assert answer.headers.get("x-request-id") == "req-123"  # end-to-end headers do pass
    for name in (*HOP_BY_HOP, "x-secret-hop"):
        if name == "connection":  # ours may say keep-alive/close, never the upstream's tokens
            assert "x-secret-hop" not in answer.headers.get(name, "").lower()
            continue
        assert name not in answer.headers, (name, answer.headers)


# ---------------------------------------------------------------------------------------
# lifecycle


async def _start_stream(
    http: aiohttp.ClientSession, base_url: str
) -> tuple[aiohttp.ClientResponse, Callable[[], Awaitable[Answer]]]:
    payload = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "stream": True}
    started = time.perf_counter()
    resp = await http.post(
        base_url + "/chat/completions",
        data=orjson.dumps(payload),
        headers={"Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=10),
    )
    assert resp.status == 200
    first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 3)

    async def finish() -> Answer:
        rest = b""
        try:  # chunk by chunk: what arrived before a cut is what the client saw
            async for chunk in resp.content.iter_any():
                rest += chunk
        except aiohttp.ClientPayloadError:
            rest += b"\n\n<cut without a proper end>"
        finally:
            resp.release()
        return Answer(
            status=resp.status,
            body=first + rest,
            headers={k.lower(): v for k, v in resp.headers.items()},
            started=started,
            elapsed=time.perf_counter() - started,
            stream=True,
        )

    return resp, finish


async def test_a_route_change_mid_stream_leaves_that_stream_whole(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    old = await fakes("us-east-1", tokens_per_second=20, output_tokens=20)
    new = await fakes("eu-west-1")
    extra = "  timeouts: {firstByteMs: 1000, totalMs: 5000}"
    proxy = await proxies(_one_target(old.url, extra), reload_seconds=0.05)
    resp, finish = await _start_stream(http, proxy.base_url)
    routes = tmp_path / "routes-0.yaml"
    routes.write_text(
        provider_yaml("other", [("eu-west-1", new.url)])
        + route_yaml("chat", ["chat"], ["{provider: other, model: chat-b}"], extra)
    )
    deadline = time.monotonic() + 3
    while proxy.proxy.store.current.routes[0].targets[0].provider != "other":
        assert time.monotonic() < deadline, "the new route file was never loaded"
        await asyncio.sleep(0.05)
    assert not resp.content.at_eof()  # the stream is still going after the reload
    answer = await finish()
    assert answer.complete(), answer.body[-300:]
    assert answer.content_chunks() == 20 and answer.target.startswith("primary/")
    after = await ask(http, proxy.base_url, stream=True)
    assert after.complete() and after.target.startswith("other/")
    assert old.stats.requests == 1 and new.stats.requests == 1


async def test_stop_with_drain_lets_a_short_stream_finish(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    fake = await fakes("us-east-1", tokens_per_second=40, output_tokens=20)
    proxy = await proxies(_one_target(fake.url, "  timeouts: {firstByteMs: 1000, totalMs: 5000}"))
    _, finish = await _start_stream(http, proxy.base_url)
    reading = asyncio.ensure_future(finish())
    await asyncio.wait_for(proxy.stop(drain=3.0), 5)
    answer = await asyncio.wait_for(reading, 5)
    assert answer.complete(), answer.body[-300:]


async def test_stop_cutting_a_stream_ends_it_with_a_stream_interrupted_event(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    fake = await fakes("us-east-1", tokens_per_second=10, output_tokens=100)
    proxy = await proxies(_one_target(fake.url, "  timeouts: {firstByteMs: 1000, totalMs: 20000}"))
    _, finish = await _start_stream(http, proxy.base_url)
    reading = asyncio.ensure_future(finish())
    await asyncio.wait_for(proxy.stop(drain=0.2), 5)
    answer = await asyncio.wait_for(reading, 5)
    assert not answer.complete()
    err = answer.error()
    assert err is not None and err["code"] == "stream_interrupted", answer.body[-300:]


async def test_stop_cutting_a_plain_request_answers_503_shutting_down(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """A request still waiting on its upstream when the drain period ends gets a reason.

    Not a reset connection: an OpenAI-shaped 503 with code ``shutting_down``, which the
    SDKs retry like any 503, against another sidecar.
    """
    fake = await fakes("us-east-1", latency_ms=3000)
    proxy = await proxies(_one_target(fake.url, "  timeouts: {firstByteMs: 10000, totalMs: 20000}"))
    asking = asyncio.ensure_future(ask(http, proxy.base_url))
    for _ in range(100):  # until the request is in flight
        if fake.stats.in_flight:
            break
        await asyncio.sleep(0.02)
    await asyncio.wait_for(proxy.stop(drain=0.2), 5)
    answer = await asyncio.wait_for(asking, 5)
    assert answer.status == 503 and answer.well_formed_error()
    err = answer.error()
    assert err is not None and err["code"] == "shutting_down", err
    assert "shutting down" in err["message"]
