"""The built-in catalogue against the seed articles, and ``modelroute catalog`` that prints it.

The seeds are the only source of names and prices: every model they name
for DeepSeek, Qwen, Kimi and GLM must be served, with exactly the output
price they quote, and nothing they don't quote (no input prices at all, no
output price for Qwen3.5-32B, which they name without one).

``SEED_MODELS`` spells each model as the seeds' tables do; the seed
cross-check proves each (name, price) pair really appears on one line of a
seed article, so this list can't drift into invention either.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from modelroute.cli import main
from modelroute.resources import BUILTIN_BY_NAME, BUILTIN_CATALOGUE, Capability

SEEDS = Path("/work/shared/seeds")

# catalogue id -> (how a seed article writes it, $/M output as quoted, or None: named, no price)
SEED_MODELS: dict[str, tuple[str, float | None]] = {
    "deepseek-v4-flash": ("V4 Flash", 0.25),
    "deepseek-v3.2": ("V3.2", 0.38),
    "deepseek-v4-pro": ("V4 Pro", 0.78),
    "deepseek-r1": ("R1 (Reasoner)", 2.50),
    "deepseek-coder": ("Coder", 0.25),
    "qwen3-8b": ("Qwen3-8B", 0.01),
    "qwen3-32b": ("Qwen3-32B", 0.28),
    "qwen3-coder-30b": ("Qwen3-Coder-30B", 0.35),
    "qwen3-vl-32b": ("Qwen3-VL-32B", 0.52),
    "qwen3-omni-30b": ("Qwen3-Omni-30B", 0.52),
    "qwen3.5-397b": ("Qwen3.5-397B", 2.34),
    "qwen3.5-32b": ("Qwen3.5-32B", None),
    "qwen3.6-35b": ("Qwen3.6-35B", 1.00),
    "kimi-k2.5": ("K2.5", 3.00),
    "kimi-k2.5-thinking": ("K2.5 (thinking mode)", 3.50),
    "glm-4-9b": ("GLM-4-9B", 0.01),
    "glm-4-9b-chat": ("GLM-4-9B-Chat", 0.01),
    "glm-4.6v": ("GLM-4.6V", 0.15),
    "glm-5": ("GLM-5", 1.92),
}

FAMILIES = ("deepseek", "qwen", "kimi", "glm")


def catalog_json() -> list[dict[str, Any]]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["catalog", "--json"]) == 0
    doc = json.loads(out.getvalue())
    assert isinstance(doc, list)
    return doc


def seed_lines() -> list[str]:
    if not SEEDS.is_dir():
        pytest.skip(f"seed articles not present at {SEEDS}")
    return [line for f in sorted(SEEDS.glob("*.txt")) for line in f.read_text("utf-8").splitlines()]


def _price_on_line(name: str, price: float, line: str) -> bool:
    quoted = f"${price:.2f}" if price != int(price) else f"${int(price)}"
    # the name as a cell or word of its own ("Qwen3-32B" must not match "Qwen3-32B-Chat")
    named = re.search(rf"(^|[\s|(]){re.escape(name)}($|[\s|:@,])", line) is not None
    return named and (quoted in line or f"${price:.2f}" in line)


@pytest.mark.parametrize(("model_id", "seed"), sorted(SEED_MODELS.items()))
def test_seed_pair_really_is_in_the_seeds(model_id: str, seed: tuple[str, float | None]) -> None:
    lines = seed_lines()
    name, price = seed
    if price is None:
        assert any(name in line for line in lines), f"{name} is not named in the seeds"
        priced = [ln for ln in lines if name in ln and re.search(rf"{re.escape(name)}\W+\$", ln)]
        assert priced == [], f"the seeds do price {name}: {priced}"
    else:
        assert any(_price_on_line(name, price, ln) for ln in lines), (
            f"no seed line gives {name} at ${price}"
        )


def test_every_seed_model_is_in_catalog_json_with_its_exact_price() -> None:
    served = {m["name"]: m for m in catalog_json()}
    for model_id, (name, price) in SEED_MODELS.items():
        assert model_id in served, f"{name} ({model_id}) missing from `modelroute catalog`"
        assert served[model_id]["outputUSDPerMTok"] == price, model_id


def test_catalogue_serves_only_the_four_seed_families() -> None:
    assert {m.family for m in BUILTIN_CATALOGUE} == set(FAMILIES)
    assert set(BUILTIN_BY_NAME) == set(SEED_MODELS), "a model the seeds don't name"


def test_ids_are_lowercase_and_unique() -> None:
    names = [m.name for m in BUILTIN_CATALOGUE]
    assert len(names) == len(set(names))
    for name in names:
        assert name == name.lower() and " " not in name, name


def test_no_input_price_is_invented() -> None:
    for model in BUILTIN_CATALOGUE:
        assert model.input_usd_per_mtok is None, model.name
    for entry in catalog_json():
        assert entry["inputUSDPerMTok"] is None, entry["name"]
        assert entry["outputUSDPerMTok"] != 0, f"{entry['name']}: unknown must not be $0"


def test_unpriced_model_has_no_output_price_either() -> None:
    assert BUILTIN_BY_NAME["qwen3.5-32b"].output_usd_per_mtok is None


def test_price_ranges_match_the_seed_tables() -> None:
    """The seeds' per-family ranges bound every priced model of the family."""
    ranges = {
        "deepseek": (0.25, 2.50),
        "qwen": (0.01, 3.20),
        "kimi": (3.00, 3.50),
        "glm": (0.01, 1.92),
    }
    for model in BUILTIN_CATALOGUE:
        low, high = ranges[model.family or ""]
        if model.output_usd_per_mtok is not None:
            assert low <= model.output_usd_per_mtok <= high, model.name


def test_vision_and_audio_only_where_the_seeds_say() -> None:
    vision = {m.name for m in BUILTIN_CATALOGUE if Capability.VISION in m.capabilities}
    audio = {m.name for m in BUILTIN_CATALOGUE if Capability.AUDIO in m.capabilities}
    assert vision == {"qwen3-vl-32b", "qwen3-omni-30b", "glm-4.6v"}
    assert audio == {"qwen3-omni-30b"}


def test_kimi_is_text_only() -> None:
    """Seeds: "No vision — Strictly text", "doesn't do multimodal at all"."""
    kimi = [m for m in BUILTIN_CATALOGUE if m.family == "kimi"]
    assert {m.name for m in kimi} == {"kimi-k2.5", "kimi-k2.5-thinking"}
    modalities = {Capability.VISION, Capability.AUDIO, Capability.EMBEDDINGS}
    for model in kimi:
        assert Capability.TEXT in model.capabilities
        assert not modalities.intersection(model.capabilities), model.name


def test_context_window_is_the_seeds_128k() -> None:
    assert {m.context_tokens for m in BUILTIN_CATALOGUE} == {128_000}


def test_upstream_names_the_seeds_show_are_sent() -> None:
    """Where a seed's code shows the string it sends, that is what goes upstream."""
    shown = {
        "deepseek-v4-flash": "deepseek-v4-flash",
        "deepseek-r1": "deepseek-r1",
        "qwen3-32b": "Qwen/Qwen3-32B",
        "qwen3-vl-32b": "Qwen/Qwen3-VL-32B",
        "kimi-k2.5": "moonshot-k2.5",
        "glm-4.6v": "glm-4.6v",
    }
    for model_id, upstream in shown.items():
        assert BUILTIN_BY_NAME[model_id].upstream == upstream


def test_catalog_table_lists_the_same_models_as_json() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["catalog"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:2] == ["MODEL", "FAMILY"]
    rows = {line.split()[0]: line for line in lines[1:] if line and line.split()[0] in SEED_MODELS}
    assert set(rows) == {m["name"] for m in catalog_json()}
    assert "$0.25" in rows["deepseek-v4-flash"]
    assert "unknown" in rows["qwen3.5-32b"]  # no output price: said so, not $0.00
    assert "$0.00" not in out.getvalue()
    assert "vision" in rows["glm-4.6v"] and "vision" not in rows["kimi-k2.5"]


def test_catalog_json_round_trips_to_the_catalogue() -> None:
    from modelroute.resources import CatalogueModel

    parsed = [CatalogueModel.model_validate(entry) for entry in catalog_json()]
    assert tuple(parsed) == BUILTIN_CATALOGUE
