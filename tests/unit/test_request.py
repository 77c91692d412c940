"""Request features: what a request needs from a target, read once from the body.

A wrong feature sends a request to a model that can't serve it (an image to
a text-only model) or drops a model that could; a bad body must be refused
with a message naming the field, before anything is sent upstream.
"""

from __future__ import annotations

from typing import Any

import pytest
from modelroute.proxy.errors import InvalidRequest, MissingModel
from modelroute.proxy.request import Endpoint, estimate_text_tokens, extract_features

from modelroute.resources import Capability as C


def chat(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "general", "messages": [{"role": "user", "content": content}], **extra}


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


def test_plain_chat_needs_text_only() -> None:
    f = extract_features(chat("hello"), Endpoint.CHAT)
    assert f.needs == {C.TEXT}
    assert f.model == "general" and not f.stream and f.max_output_tokens == 0
    assert f.endpoint.path == "/chat/completions" and f.endpoint.operation == "chat"


def test_image_part_needs_vision() -> None:
    f = extract_features(chat([{"type": "text", "text": "what?"}, IMAGE]), Endpoint.CHAT)
    assert f.needs == {C.TEXT, C.VISION}
    assert f.describe_needs() == "text, vision"


def test_audio_part_needs_audio() -> None:
    f = extract_features(chat([AUDIO]), Endpoint.CHAT)
    assert C.AUDIO in f.needs and C.VISION not in f.needs


def test_media_in_an_earlier_message_still_counts() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [IMAGE]},
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": "and its colour?"},
        ],
    }
    assert C.VISION in extract_features(body, Endpoint.CHAT).needs


@pytest.mark.parametrize(
    ("extra", "need"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, C.TOOLS),
        ({"functions": [{"name": "f"}]}, C.TOOLS),
        ({"response_format": {"type": "json_object"}}, C.JSON),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, C.JSON),
    ],
)
def test_tools_and_json_mode(extra: dict[str, Any], need: C) -> None:
    assert need in extract_features(chat("hi", **extra), Endpoint.CHAT).needs


def test_empty_tools_and_text_format_need_nothing_extra() -> None:
    body = chat("hi", tools=[], response_format={"type": "text"})
    assert extract_features(body, Endpoint.CHAT).needs == {C.TEXT}


def test_stream_max_tokens_and_usage_request() -> None:
    f = extract_features(
        chat("hi", stream=True, max_tokens=300, stream_options={"include_usage": True}),
        Endpoint.CHAT,
    )
    assert f.stream and f.max_output_tokens == 300 and f.client_wants_usage
    f = extract_features(chat("hi", max_completion_tokens=50, max_tokens=10), Endpoint.CHAT)
    assert f.max_output_tokens == 50  # the newer field wins
    assert not extract_features(chat("hi", stream="yes"), Endpoint.CHAT).stream


def test_completions_prompt_forms() -> None:
    f = extract_features({"model": "m", "prompt": "a" * 40}, Endpoint.COMPLETIONS)
    assert f.needs == {C.TEXT} and f.prompt_tokens == 10
    f = extract_features({"model": "m", "prompt": ["a" * 8, [1, 2, 3]]}, Endpoint.COMPLETIONS)
    assert f.prompt_tokens == 2 + 3  # token-id arrays count one per id
    assert f.endpoint.operation == "text_completion"


def test_completions_token_id_prompts() -> None:
    """The API takes token ids too; they count one token per id (and must not crash)."""
    f = extract_features({"model": "m", "prompt": [101, 102, 103]}, Endpoint.COMPLETIONS)
    assert f.prompt_tokens == 3
    f = extract_features({"model": "m", "prompt": [[1, 2], [3, 4, 5]]}, Endpoint.COMPLETIONS)
    assert f.prompt_tokens == 5


def test_embeddings_need_an_embeddings_model_and_never_stream() -> None:
    f = extract_features(
        {"model": "m", "input": ["abcd" * 10, "x"], "stream": True}, Endpoint.EMBEDDINGS
    )
    assert f.needs == {C.EMBEDDINGS} and not f.stream
    assert f.prompt_tokens == 10  # the longest input is what must fit
    f = extract_features({"model": "m", "input": [[1, 2, 3, 4, 5]]}, Endpoint.EMBEDDINGS)
    assert f.prompt_tokens == 5
    f = extract_features({"model": "m", "input": [7] * 600}, Endpoint.EMBEDDINGS)
    assert f.prompt_tokens == 600  # one input of 600 token ids, not 600 one-token inputs


# -- the token estimate ------------------------------------------------------------------


def test_ascii_is_about_four_characters_a_token() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abcd") == 1
    assert estimate_text_tokens("abcde") == 2
    assert estimate_text_tokens("x" * 4000) == 1000


def test_cjk_counts_about_a_token_per_character() -> None:
    assert estimate_text_tokens("请把这段录音转成文字" * 10) == 100  # 100 CJK characters
    assert estimate_text_tokens("x" * 100) == 25
    assert estimate_text_tokens("привет") == 6  # any non-ASCII character: errs long


def test_mixed_text_counts_both_parts() -> None:
    # 120 ASCII characters (30 tokens) + 100 CJK characters: neither part is undercounted
    assert estimate_text_tokens("hello world " * 10 + "你好" * 50) == 30 + 100
    assert estimate_text_tokens("好" + "x" * 8) == 1 + 2


def test_prompt_tokens_include_every_message() -> None:
    one = extract_features(chat("x" * 400), Endpoint.CHAT).prompt_tokens
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}] * 3}
    assert extract_features(body, Endpoint.CHAT).prompt_tokens == 3 * one
    assert one >= 100


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "endpoint", "field"),
    [
        ([], Endpoint.CHAT, "JSON object"),
        ({"model": 4, "messages": [{"content": "x"}]}, Endpoint.CHAT, "`model`"),
        ({"model": "m"}, Endpoint.CHAT, "`messages`"),
        ({"model": "m", "messages": []}, Endpoint.CHAT, "`messages`"),
        ({"model": "m", "messages": "hi"}, Endpoint.CHAT, "`messages`"),
        ({"model": "m", "messages": ["hi"]}, Endpoint.CHAT, "`messages`"),
        ({"model": "m", "prompt": 3}, Endpoint.COMPLETIONS, "`prompt`"),
        ({"model": "m"}, Endpoint.COMPLETIONS, "`prompt`"),
        ({"model": "m", "input": []}, Endpoint.EMBEDDINGS, "`input`"),
        ({"model": "m", "input": 5}, Endpoint.EMBEDDINGS, "`input`"),
        ({"model": "m", "input": ["ok", {"text": "x"}]}, Endpoint.EMBEDDINGS, "`input`"),
        ({"model": "m", "prompt": [1, "two"]}, Endpoint.COMPLETIONS, "`prompt`"),
        ({"model": "m", "prompt": [None]}, Endpoint.COMPLETIONS, "`prompt`"),
        ({"model": "m", "prompt": []}, Endpoint.COMPLETIONS, "`prompt`"),
        (chat("hi", max_tokens=True), Endpoint.CHAT, "`max_tokens`"),
        (chat("hi", max_tokens=-1), Endpoint.CHAT, "`max_tokens`"),
        (chat("hi", max_tokens="many"), Endpoint.CHAT, "`max_tokens`"),
    ],
)
def test_invalid_shapes_name_the_field(body: Any, endpoint: Endpoint, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        extract_features(body, endpoint)
    assert field in info.value.message
    assert info.value.status == 400 and info.value.type == "invalid_request_error"


@pytest.mark.parametrize("body", [{"messages": [{"content": "x"}]}, {"model": "", "messages": []}])
def test_missing_model_says_where_to_look(body: dict[str, Any]) -> None:
    with pytest.raises(MissingModel, match="/v1/models"):
        extract_features(body, Endpoint.CHAT)
