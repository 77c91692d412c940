"""The YAML in ``docs/routing.md`` compiles, and means what the page says it means.

Every ``yaml`` block of the page is loaded together and compiled with the
code ``modelroute validate`` and local mode use, so an example that drifts
from the resource schema fails here rather than on a reader's cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

from modelroute.proxy.compiler import compile_local
from modelroute.proxy.table import CompiledTable

from modelroute.resources import load_text

DOC = Path(__file__).resolve().parents[2] / "docs" / "routing.md"


def compiled() -> CompiledTable:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 4  # providers, classifier routes, sticky route, mirror
    result = compile_local(load_text("---\n".join(blocks), str(DOC)))
    assert result.ok, [str(p) for p in result.errors]
    assert not result.errors
    return result.table


def test_the_routing_page_examples_compile_as_documented() -> None:
    table = compiled()
    routes = {r.name: r for r in table.routes}
    assert set(routes) == {
        "auto",
        "light",
        "general",
        "reasoning",
        "multimodal",
        "regional-cn",
        "coding",
    }
    assert routes["auto"].classify and not routes["auto"].targets
    # every category the default classifier answers with has a route capturing it
    aliases = {a for r in table.routes if not r.classify for a in r.aliases}
    assert {"light", "general", "reasoning", "multimodal", "regional-cn"} <= aliases

    general = routes["general"]
    assert general.sticky is not None and general.sticky.header == "x-user-id"
    assert [(t.model, t.tier, t.weight) for t in general.targets] == [
        ("deepseek-v4-flash", 0, 3),
        ("qwen3-32b", 0, 1),
        ("kimi-k2.5", 1, 1),
    ]

    mirror = routes["coding"].mirror
    assert mirror is not None
    assert (mirror.percent, mirror.max_concurrent) == (10, 4)
    assert mirror.target.upstream_model == "cand-x-2026"
    assert (mirror.target.output_usd_per_mtok, mirror.target.input_usd_per_mtok) == (3.0, 1.0)
    assert routes["regional-cn"].residency_regions == ("cn-north-1",)
