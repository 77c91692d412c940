"""A path that dies after the request was acknowledged: TCP keepalive ends the wait.

The silence watch sees a request the upstream's TCP never acknowledged.  Here
the upstream has the request (acknowledged) and is "thinking" – the preferred
region's fake answers after 6 s – when its port goes dark, both directions.
Nothing is outstanding on our side, so without keepalive each request waited
the route's ``firstByteMs`` (20 s here, a reasoning model's setting) before the
other region was tried.  With the kernel's keepalive probes
(``upstream/tcp_keepalive.py``: after 1 s idle, two probes 1 s apart) the
connection fails ~3 s after the last byte and the request moves on.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ADMIN_PORT, PROXY_PORT, World, worst
from .netns import NetNS

SLOW, FAST = ("us-east-1", 18111), ("eu-west-1", 18112)
THINK_MS = 6000  # the preferred region's fake answers after this: requests are in flight
FIRST_BYTE_MS = 20_000
GOAL_S = 5.0  # keepalive: ~3 s after the fault, then the other region's 20 ms answer


def _routes() -> str:
    endpoints = "\n".join(
        f'    - {{region: {region}, baseURL: "http://127.0.0.1:{port}/v1"}}'
        for region, port in (SLOW, FAST)
    )
    return (
        "apiVersion: modelroute.io/v1alpha1\nkind: ModelProvider\n"
        "metadata: {name: p, namespace: default}\n"
        f"spec:\n  api: openai\n  endpoints:\n{endpoints}\n"
        "  credentials: {env: FAKE_PROVIDER_KEY}\n"
        "  models:\n    - {name: chat-a, upstreamModel: chat-a-up, outputUSDPerMTok: 1.0, "
        "inputUSDPerMTok: 0.5, contextTokens: 32000}\n---\n"
        "apiVersion: modelroute.io/v1alpha1\nkind: ModelRoute\n"
        "metadata: {name: chat, namespace: default}\n"
        "spec:\n  models: [chat]\n  targets: [{provider: p, model: chat-a}]\n"
        f"  timeouts: {{firstByteMs: {FIRST_BYTE_MS}, totalMs: 30000}}\n---\n"
        "apiVersion: modelroute.io/v1alpha1\nkind: FailoverPolicy\n"
        f"metadata: {{name: regions}}\nspec:\n  regionPreference: [{SLOW[0]}, {FAST[0]}]\n"
    )


@pytest.fixture
def thinking(world_env: dict[str, str], tmp_path: Path) -> Iterator[World]:
    ns = NetNS.create()
    w = World(ns, tmp_path, world_env)
    try:
        py = sys.executable
        for (region, port), latency in ((SLOW, THINK_MS), (FAST, 20)):
            w.spawn(
                f"fake-{region}",
                py, "-m", "modelroute", "fake-provider", "--listen", f"127.0.0.1:{port}",
                "--region", region, "--latency-ms", str(latency), "--seed", "1",
            )  # fmt: skip
            w.wait_for_line(f"fake-{region}", "fake provider (")
        routes = tmp_path / "routes.yaml"
        routes.write_text(_routes())
        w.spawn(
            "proxy",
            py, "-m", "modelroute", "proxy", "--routes", str(routes),
            "--listen", f"127.0.0.1:{PROXY_PORT}", "--admin", f"127.0.0.1:{ADMIN_PORT}",
            "--drain-seconds", "0.5", "--log-level", "warning",
        )  # fmt: skip
        yield w
    finally:
        try:
            w.stop()
        finally:
            ns.delete()


def test_a_request_acknowledged_before_the_path_died_moves_on_in_seconds(
    thinking: World, figures: list[str]
) -> None:
    port = SLOW[1]
    run = thinking.run(1.0, [(1.0, "dark", lambda: thinking.ns.blackhole(port))], rate=4)
    dark = run.at("dark")
    records = run.records
    assert len(records) == 4 and all(r.start < dark for r in records)  # all in flight
    answered = [r for r in records if r.ok]
    after = [r.end - dark for r in records]
    figures.append(
        f"[kernel acknowledged-then-dark] {len(answered)}/4 answered, by "
        f"{sorted({r.region() for r in answered})}; answered {min(after):.2f}–{max(after):.2f} s "
        f"after the fault (goal ≤ {GOAL_S:g} s; firstByteMs {FIRST_BYTE_MS / 1000:g} s, the "
        f"thinking region {THINK_MS / 1000:g} s); worst request {worst(records):.2f} s"
    )
    assert len(answered) == 4, [(r.status, r.error[:200]) for r in records]
    assert {r.region() for r in answered} == {FAST[0]}
    assert max(after) <= GOAL_S, after
