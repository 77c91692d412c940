"""The SSE scanner: bytes pass through untouched (or minus the usage event), facts on the side.

TCP splits a stream anywhere, so every property is checked with the stream
cut at every byte offset, byte by byte, and at random multi-cuts.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import httpx2
import openai
import orjson
import pytest
from modelroute.proxy.sse import SSEScanner, error_event


def event(doc: object) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def chunk(content: str | None = None, finish: str | None = None) -> dict[str, object]:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "glm-5",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE_ONLY = event(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "glm-5",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
)
BODY = [
    event(chunk("")),
    event(chunk("你好")),  # multi-byte characters get cut in the middle too
    event(chunk(", world")),
    b": keep-alive comment\n\n",
    event(chunk(None, "stop")),
]
DONE = b"data: [DONE]\n\n"
STREAM = b"".join([*BODY, USAGE_ONLY, DONE])
STRIPPED = b"".join([*BODY, DONE])


def run(chunks: Iterable[bytes], strip: bool) -> tuple[bytes, SSEScanner]:
    scanner = SSEScanner(strip_usage_event=strip)
    out = b"".join(scanner.feed(c) for c in chunks) + scanner.flush()
    return out, scanner


def assert_facts(scanner: SSEScanner) -> None:
    facts = scanner.facts
    assert facts.model == "glm-5"
    assert (facts.input_tokens, facts.output_tokens) == (12, 3)
    assert facts.finish_reasons == ["stop"]
    assert facts.saw_done and facts.saw_event and facts.complete
    assert facts.error is None


@pytest.mark.parametrize("strip", [False, True])
def test_whole_stream_in_one_chunk(strip: bool) -> None:
    out, scanner = run([STREAM], strip)
    assert out == (STRIPPED if strip else STREAM)
    assert_facts(scanner)


@pytest.mark.parametrize("strip", [False, True])
def test_split_at_every_byte_offset(strip: bool) -> None:
    expected = STRIPPED if strip else STREAM
    for cut in range(1, len(STREAM)):
        out, scanner = run([STREAM[:cut], STREAM[cut:]], strip)
        assert out == expected, f"cut at {cut}"
        assert_facts(scanner)


@pytest.mark.parametrize("strip", [False, True])
def test_one_byte_at_a_time(strip: bool) -> None:
    out, scanner = run([STREAM[i : i + 1] for i in range(len(STREAM))], strip)
    assert out == (STRIPPED if strip else STREAM)
    assert_facts(scanner)


@pytest.mark.parametrize("strip", [False, True])
def test_random_multi_cuts(strip: bool) -> None:
    rng = random.Random(11)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(2, 12)))
        pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
        out, scanner = run(pieces, strip)
        assert out == (STRIPPED if strip else STREAM), cuts
        assert_facts(scanner)


@pytest.mark.parametrize("strip", [False, True])
def test_complete_events_go_out_at_once_and_half_an_event_waits_for_its_end(strip: bool) -> None:
    """No latency for whole events; an unfinished one is never forwarded on its own.

    Were half an event forwarded and the stream then broke, the client would be left
    mid-line and the proxy's closing error event glued onto that line, unreadable.
    """
    first, second = BODY[0], BODY[1]
    scanner = SSEScanner(strip_usage_event=strip)
    assert scanner.feed(first) == first  # a whole event: forwarded as it came
    half = len(second) // 2
    assert scanner.feed(second[:half]) == b""  # half an event: held
    assert scanner.feed(second[half:]) == second  # its end: the whole event goes out
    broken = SSEScanner(strip_usage_event=strip)
    assert broken.feed(first + second[:half]) == first  # the whole one now, not the half


def test_usage_on_a_chunk_with_choices_is_never_stripped() -> None:
    last = chunk(None, "stop") | {"usage": {"prompt_tokens": 4, "completion_tokens": 2}}
    stream = event(chunk("hi")) + event(last) + DONE
    out, scanner = run([stream], strip=True)
    assert out == stream
    assert (scanner.facts.input_tokens, scanner.facts.output_tokens) == (4, 2)


def test_usage_event_with_spaced_json_is_recognised() -> None:
    """Some upstreams pretty-print (``"usage": {``); the event is still found and stripped."""
    spaced = b'data: {"model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 9}}\n\n'
    stream = event(chunk("x")) + spaced + DONE
    out, scanner = run([stream], strip=True)
    assert out == event(chunk("x")) + DONE
    assert scanner.facts.output_tokens == 9


def test_error_event_is_recorded() -> None:
    err = {"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}}
    stream = event(chunk("partial")) + event(err)
    out, scanner = run([stream], strip=False)
    assert out == stream
    assert scanner.facts.error == err["error"]
    assert not scanner.facts.complete  # no [DONE], no finish reason: a cut stream


def test_cut_stream_is_not_complete() -> None:
    _, scanner = run([event(chunk("a")), event(chunk("b"))[:20]], strip=True)
    assert not scanner.facts.complete and scanner.facts.model == "glm-5"


def test_finish_reason_alone_makes_a_stream_complete() -> None:
    _, scanner = run([event(chunk("a")) + event(chunk(None, "length"))], strip=False)
    assert scanner.facts.complete and not scanner.facts.saw_done
    assert scanner.facts.finish_reasons == ["length"]


def test_partial_tail_is_flushed_when_holding() -> None:
    tail = b'data: {"choices":[{"delta":{"content":"x"}}]}'  # no blank line before EOF
    out, _ = run([event(chunk("a")), tail], strip=True)
    assert out == event(chunk("a")) + tail


def test_crlf_separated_stream() -> None:
    """SSE allows CRLF line ends (sse-starlette sends them); the facts and stripping still work."""
    crlf = STREAM.replace(b"\n", b"\r\n")
    for strip in (False, True):
        for cut in range(1, len(crlf), 7):
            out, scanner = run([crlf[:cut], crlf[cut:]], strip)
            expected = STRIPPED.replace(b"\n", b"\r\n") if strip else crlf
            assert out == expected, (strip, cut)
            assert_facts(scanner)


def test_bare_cr_separated_stream() -> None:
    cr = STREAM.replace(b"\n", b"\r")
    for cut in range(1, len(cr), 5):
        out, scanner = run([cr[:cut], cr[cut:]], strip=True)
        assert out == STRIPPED.replace(b"\n", b"\r"), cut
        assert_facts(scanner)


def test_crlf_cut_between_cr_and_lf_is_not_two_line_ends() -> None:
    first = event(chunk("a")).replace(b"\n", b"\r\n")
    # "data: …\r" | "\n\r\n": had the lone CR counted as a line end, "\n" + "\r\n" would look
    # like a blank line one line early and the event would be cut in two
    pieces = [first[:-3], first[-3:-1], first[-1:] + DONE.replace(b"\n", b"\r\n")]
    assert pieces[0].endswith(b"\r")
    scanner = SSEScanner(strip_usage_event=True)
    assert scanner.feed(pieces[0]) == b""
    assert scanner.feed(pieces[1]) == b""
    assert scanner.feed(pieces[2]) == first + DONE.replace(b"\n", b"\r\n")
    assert scanner.facts.saw_done


def test_usage_only_tail_without_blank_line_is_stripped_at_flush() -> None:
    out, scanner = run([event(chunk("a")), USAGE_ONLY.rstrip(b"\n")], strip=True)
    assert out == event(chunk("a"))
    assert scanner.facts.output_tokens == 3


def test_extra_blank_lines_pass_through_exactly() -> None:
    stream = event(chunk("a")) + b"\n\n" + event(chunk("b")) + b"\n" + DONE
    for strip in (False, True):
        out, _ = run([stream[:30], stream[30:]], strip)
        assert out == stream


def test_oversized_event_is_refused() -> None:
    scanner = SSEScanner(strip_usage_event=True)
    for _ in range(10):
        assert scanner.feed(b"data: " + b"x" * 100_000) == b""
    with pytest.raises(ValueError, match="1 MiB"):
        scanner.feed(b"x" * 100_000)


# -- error_event: what the OpenAI SDK makes of it --------------------------------------------


def test_error_event_is_the_openai_error_shape() -> None:
    raw = error_event("upstream cut the stream", "upstream_stream_error", "general")
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    doc = orjson.loads(raw[len(b"data: ") :])
    assert doc == {
        "error": {
            "message": "upstream cut the stream",
            "type": "server_error",
            "code": "upstream_stream_error",
            "route": "general",
        }
    }
    assert "route" not in orjson.loads(error_event("m", "c", None)[6:])["error"]


def test_openai_sdk_raises_our_error_event() -> None:
    body = event(chunk("partial")) + error_event("upstream cut the stream", "cut", "general")

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=body, request=request
        )

    client = openai.OpenAI(
        api_key="unused",
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )
    stream = client.chat.completions.create(
        model="general", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.content == "partial"
    with pytest.raises(openai.APIError, match="upstream cut the stream") as info:
        next(iter(stream))
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "cut"


@pytest.mark.parametrize("strip", [False, True])
def test_streamed_text_is_collected_only_when_the_route_records_content(strip: bool) -> None:
    collecting = SSEScanner(strip_usage_event=strip, collect_content=True)
    out = b"".join(collecting.feed(STREAM[i : i + 7]) for i in range(0, len(STREAM), 7))
    out += collecting.flush()
    assert out == (STRIPPED if strip else STREAM)  # what the client gets is unchanged
    assert "".join(collecting.facts.content) == "你好, world"
    assert_facts(collecting)
    _, plain = run([STREAM], strip)
    assert plain.facts.content == []


def test_collected_text_is_bounded() -> None:
    scanner = SSEScanner(strip_usage_event=False, collect_content=True)
    for _ in range(2000):
        scanner.feed(event(chunk("x" * 100)))
    kept = "".join(scanner.facts.content)
    assert len(kept) == 64 * 1024 and scanner.facts.content_chars == 200_000


def test_an_event_over_one_mebibyte_is_refused_and_not_forwarded() -> None:
    scanner = SSEScanner(strip_usage_event=True)
    assert scanner.feed(event(chunk("ok"))) == event(chunk("ok"))
    for _ in range(15):  # just under 1 MiB of one unfinished event is still carried...
        assert scanner.feed(b"data: " + b"x" * 65536) == b""
    with pytest.raises(ValueError, match="over 1 MiB"):  # ...past it, refused
        scanner.feed(b"data: " + b"x" * 65536)
    assert scanner.flush() == b""  # the partial garbage is dropped, not flushed to the client


def test_an_error_event_is_not_counted_as_generated_tokens() -> None:
    """A stream that is only an error event generated nothing: no estimate is charged."""
    scanner = SSEScanner(strip_usage_event=True)
    scanner.feed(event({"error": {"message": "overloaded", "type": "server_error"}}))
    assert scanner.facts.error is not None and scanner.facts.data_events == 0
