"""``modelroute validate``: the operator's rules offline, one line per problem, non-zero on errors.

Each line must name the resource, the field to fix and why, because that is
all a user sees in CI before ``kubectl apply``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelroute.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

PROVIDER = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: gateway, namespace: team}
spec:
  endpoints:
    - {region: us-east, baseURL: "http://127.0.0.1:1/v1"}
    - {region: cn-east, baseURL: "http://127.0.0.1:2/v1"}
  credentials: {env: GATEWAY_KEY}
---
"""


def route(name: str, spec: str) -> str:
    return (
        "apiVersion: modelroute.io/v1alpha1\nkind: ModelRoute\n"
        f"metadata: {{name: {name}, namespace: team}}\nspec:\n  models: [{name}]\n{spec}---\n"
    )


def validate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, *flags: str
) -> tuple[int, list[str]]:
    path = tmp_path / "routes.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["validate", *flags, str(path)])
    return code, capsys.readouterr().out.splitlines()


def problem_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith(("error:", "warning:"))]


GOOD = route("general", "  targets:\n    - {provider: gateway, model: deepseek-v4-flash}\n")


def test_issue_example_validates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, example_text: str
) -> None:
    code, lines = validate(capsys, tmp_path, example_text)
    assert code == 0, lines
    assert lines[-1].startswith("ok: 2 resource(s), 1 route(s), table ")


def test_good_file_exits_zero_with_the_table_hash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, lines = validate(capsys, tmp_path, PROVIDER + GOOD)
    assert code == 0
    (line,) = lines
    assert line.startswith("ok: 2 resource(s), 1 route(s), table ")
    assert len(line.rsplit(" ", 1)[1]) == 12


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "  targets:\n    - {provider: gatewy, model: glm-5}\n",
            [
                "error: ModelRoute team/bad: spec.targets[0].provider: no ModelProvider named "
                "'gatewy'",
                "did you mean 'gateway'",
            ],
        ),
        (
            "  targets:\n    - {provider: gateway, model: glm-6}\n",
            [
                "error: ModelRoute team/bad: spec.targets[0].model: ModelProvider 'gateway' "
                "serves no model 'glm-6'",
                "did you mean 'glm-5'",
            ],
        ),
        (
            "  targets: []\n",
            ["error: ModelRoute team/bad: spec: targets: at least one target is needed"],
        ),
        (
            "  targets:\n    - {provider: gateway, model: glm-5}\n  budget: {usdPerDay: -5}\n",
            ["error: ModelRoute team/bad: spec.budget.usdPerDay: ", "greater than 0"],
        ),
        (
            "  requires: [vision]\n  targets:\n    - {provider: gateway, model: kimi-k2.5}\n",
            [
                "error: ModelRoute team/bad: spec.targets[0].model: 'kimi-k2.5' lacks ['vision']",
                "pick a model with vision",
            ],
        ),
        (
            "  targets:\n    - {provider: gateway, model: glm-5}\n  latencyBudgetMS: 900\n",
            ["error: ModelRoute team/bad: spec.latencyBudgetMS: unknown field"],
        ),
        (
            "  targets:\n    - {provider: gateway, model: glm-5}\n"
            "  timeouts: {firstByteMs: 9000, totalMs: 3000}\n",
            ["error: ModelRoute team/bad: spec.timeouts: ", "firstByteMs (9000)"],
        ),
        (
            "  targets:\n    - {provider: gateway, model: glm-5}\n"
            "  residency: {regions: [eu-west]}\n",
            ["error: ModelRoute team/bad: spec.residency.regions: ", "eu-west"],
        ),
    ],
)
def test_each_bad_route_is_named_with_field_and_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str, expected: list[str]
) -> None:
    code, lines = validate(capsys, tmp_path, PROVIDER + GOOD + route("bad", spec))
    assert code == 1
    errors = [ln for ln in problem_lines(lines) if ln.startswith("error:")]
    assert len(errors) == 1, lines
    for words in expected:
        assert words in errors[0], errors[0]
    assert "nothing was applied" in lines[-1]


def test_vision_route_without_any_vision_target(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = (
        "  requires: [vision]\n  targets:\n"
        "    - {provider: gateway, model: deepseek-v4-flash}\n"
        "    - {provider: gateway, model: glm-5, tier: 1}\n"
    )
    code, lines = validate(capsys, tmp_path, PROVIDER + route("mm", spec))
    assert code == 1
    errors = problem_lines(lines)
    assert [e.split(": ")[2] for e in errors] == ["spec.targets[0].model", "spec.targets[1].model"]
    assert all("vision" in e for e in errors)


def test_every_problem_is_reported_not_just_the_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = (
        PROVIDER
        + route("a", "  targets:\n    - {provider: nope, model: glm-5}\n")
        + route("b", "  targets: []\n")
        + route("c", "  targets:\n    - {provider: gateway, model: glm-5}\n  budget: {}\n")
    )
    code, lines = validate(capsys, tmp_path, text)
    assert code == 1
    named = {ln.split(": ")[1] for ln in problem_lines(lines)}
    assert named == {"ModelRoute team/a", "ModelRoute team/b", "ModelRoute team/c"}
    assert lines[-1].startswith("3 problem(s) in ")


def test_warnings_pass_unless_strict(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    unpriced = route("u", "  targets:\n    - {provider: gateway, model: qwen3.5-32b}\n")
    code, lines = validate(capsys, tmp_path, PROVIDER + unpriced)
    assert code == 0
    (warning,) = problem_lines(lines)
    assert warning.startswith("warning: ModelRoute team/u: spec.targets[0].model:")
    assert "no known output price" in warning
    code, lines = validate(capsys, tmp_path, PROVIDER + unpriced, "--strict")
    assert code == 1


def test_yaml_syntax_error_and_missing_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, lines = validate(capsys, tmp_path, "kind: [unclosed\n")
    assert code == 1 and "not valid YAML" in lines[0] and "line" in lines[0]
    code = main(["validate", str(tmp_path / "nope.yaml")])
    out = capsys.readouterr().out
    assert code == 1 and "nope.yaml" in out and "cannot read" in out


def test_examples_directory_validates_with_the_console_script() -> None:
    cli = Path(sys.executable).with_name("modelroute")
    done = subprocess.run(
        [str(cli), "validate", str(EXAMPLES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error:" not in done.stdout
    assert "ok: " in done.stdout and "6 route(s)" in done.stdout
