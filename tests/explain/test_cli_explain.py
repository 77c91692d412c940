"""``modelroute explain`` as a user runs it: exit codes, config errors, headers, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelroute.cli import main

from .helpers import GOLDEN, REQUESTS, ROUTES

EXAMPLES = Path(__file__).parents[2] / "examples"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_served_request_exits_0_and_prints_the_explanation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(
        capsys, "--routes", str(ROUTES), "--request", str(REQUESTS / "plain_chat.json")
    )
    assert code == 0
    first, rest = out.split("\n", 1)
    assert first.startswith("table:    ")
    assert rest == (GOLDEN / "plain_chat.txt").read_text(encoding="utf-8")
    assert "qwen3.5-32b" in err  # the compiler's warnings are shown, as validate shows them


def test_a_refused_request_exits_2_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "--routes", str(ROUTES), "--request", str(REQUESTS / "unknown_model.json")
    )
    assert code == 2
    assert "REFUSED, 404 model_not_found" in out
    assert "served models: ab, assistant, auto" in out


def test_headers_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "--routes",
        str(ROUTES),
        "--request",
        str(REQUESTS / "auto_light.json"),
        "--header",
        "X-User-Region: cn",
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["route"] == "regional-cn"
    assert doc["categoryReason"] == "regional-cn: header x-user-region: cn"
    assert doc["seed"] == 0
    assert len(doc["table"]) == 12
    assert {c["region"] for c in doc["candidates"]} == {"cn-east"}


def test_embeddings_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "--routes",
        str(ROUTES),
        "--request",
        str(REQUESTS / "embeddings.json"),
        "--endpoint",
        "embeddings",
    )
    assert code == 2
    assert "request needs embeddings" in out


def test_config_errors_are_printed_like_validate_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text(
        """apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: general}
spec:
  models: [general]
  targets: [{provider: nowhere, model: glm-5}]
""",
        encoding="utf-8",
    )
    code, out, err = _run(
        capsys, "--routes", str(bad), "--request", str(REQUESTS / "plain_chat.json")
    )
    assert code == 1
    assert out == ""
    assert "error: ModelRoute general: spec.targets[0].provider: no ModelProvider named" in err
    assert "1 problem(s)" in err


def test_an_unreadable_request_file_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "--routes", str(ROUTES), "--request", str(tmp_path / "nope.json"))
    assert code == 1
    assert "cannot read the request" in err


@pytest.mark.parametrize(
    ("alias", "first_model"),
    [
        ("light", "qwen3-8b"),
        ("general", "deepseek-v4-flash"),
        ("reasoning", "kimi-k2.5"),
        ("regional-cn", "glm-5"),
    ],
)
def test_the_shipped_examples_explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alias: str, first_model: str
) -> None:
    req = tmp_path / "req.json"
    req.write_text(
        json.dumps({"model": alias, "messages": [{"role": "user", "content": "hi"}]}),
        encoding="utf-8",
    )
    code, out, _ = _run(capsys, "--routes", str(EXAMPLES), "--request", str(req), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["candidates"][0]["model"] == first_model
    if alias == "regional-cn":
        assert {c["region"] for c in doc["candidates"]} == {"cn-east"}
