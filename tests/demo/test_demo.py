"""``modelroute demo`` end to end, in-process, with a shortened workload.

The demo is the first thing a user runs, and its report makes claims: every
category was served by the model its route prefers, a region outage cost no
request, China traffic never left China, money was counted.  These tests run
the real scenario (fakes, proxy, outage) and check the claims against the
per-request records, then check that the printed report says the same.
"""

from __future__ import annotations

import asyncio
import re
from itertools import takewhile
from urllib.parse import urlsplit

import orjson
import pytest

from modelroute.cli import main
from modelroute.cli.demo import WIDTH, render
from modelroute.devtools.demo import CATEGORIES, DemoOptions, run_demo, script

# What each route's first target is (modelroute/examples/demo.yaml).
PREFERRED = {
    "light": "qwen3-8b",
    "general": "deepseek-v4-flash",
    "reasoning": "kimi-k2.5",
    "multimodal": "qwen3-vl-32b",
    "regional-cn": "glm-5",
}


@pytest.fixture(autouse=True)
def no_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(var, raising=False)


async def refuses(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    try:
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    except OSError:
        return True
    writer.close()
    return False


def test_script_is_mostly_auto_and_covers_every_category() -> None:
    steps = script(10.0, 8.0)
    assert len(steps) == 80
    assert {s.category for s in steps} == set(CATEGORIES)
    auto = [s for s in steps if s.model == "auto"]
    assert len(auto) > 0.8 * len(steps)
    assert all(s.model in ("auto", s.category) for s in steps)
    assert all(s.stream for s in steps if s.category == "reasoning")
    assert not any(s.stream for s in steps if s.category in ("light", "multimodal"))
    assert steps == script(10.0, 8.0)  # deterministic: two runs send the same requests


async def test_outage_costs_no_request_and_the_report_says_so() -> None:
    result = await run_demo(DemoOptions(seconds=6.0, rate=10.0))
    requests = result.requests
    assert len(requests) == 60

    # every request answered, as the client saw it and as the proxy counted it
    assert [r for r in requests if r.outcome != "ok"] == []
    assert result.proxy_requests == {"ok": 60.0}

    # the classifier put every "auto" request where the script meant it
    assert result.misclassified == []
    assert all(r.route == r.category for r in requests)

    # before the outage each category was served by its route's first target in us-east-1
    # (regional-cn in cn-north-1); the fakes echo the model they were asked for
    for r in requests:
        if r.attempts and r.attempts[0].at < result.down_at - 0.2:
            region = "cn-north-1" if r.category == "regional-cn" else "us-east-1"
            assert (r.served_model, r.region) == (PREFERRED[r.category], region), r

    # while us-east-1 was down nothing was served there, and some requests fell back in-request
    assert result.back_at is not None
    for r in requests:
        served = r.served
        assert served is not None
        if result.down_at + 0.05 <= served.at < result.back_at:  # the knob flips a tick late
            assert served.region != "us-east-1", r
    fallbacks = [r for r in requests if r.fell_back]
    assert fallbacks
    for r in fallbacks:
        assert r.attempts[0].region == "us-east-1" and r.attempts[0].result == "connect"
    # reasoning's tier-0 model has no other region outside China: it moved to the next tier
    assert any(
        r.category == "reasoning" and r.served_model == "deepseek-r1" and r.region == "eu-west-1"
        for r in fallbacks
    )

    # residency: China traffic stayed in cn-north-1, nothing else went there
    assert all((r.region == "cn-north-1") == (r.category == "regional-cn") for r in requests)

    # money: counted at the seeds' output prices; input tokens unpriced, not $0
    assert result.cost.cost_usd > 0
    assert result.unpriced_input_tokens > 0
    per_request = sum(r.cost_usd or 0.0 for r in requests)
    assert result.cost.cost_usd == pytest.approx(per_request, rel=1e-9)
    assert result.cost.saved_fraction is not None and 0 < result.cost.saved_fraction < 1

    # everything it started is stopped
    assert await refuses(result.proxy_url)
    assert await refuses(result.admin_url)
    for url in result.endpoint_urls.values():
        assert await refuses(url)
    assert result.wall_seconds < result.options.seconds + 10

    # the report tells the same story, within 100 columns
    text = render(result)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    lines = text.splitlines()
    for category in CATEGORIES:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"  {category} "))
        block = [lines[start]]
        block += takewhile(lambda line: line.startswith(" " * 40), lines[start + 1 :])
        region = "cn-north-1" if category == "regional-cn" else "us-east-1"
        assert f"{PREFERRED[category]}@{region} ×" in "\n".join(block)
    assert "60 requests: 60 answered, 0 well-formed errors, 0 lost" in text
    assert "us-east-1 down from 2.1 s to 4.5 s" in text
    assert re.search(r"\d+ requests fell back", text)
    assert "kimi/kimi-k2.5@us-east-1 → deepseek/deepseek-r1@eu-west-1" in text
    auto = sum(1 for r in requests if r.model == "auto")
    assert f'classifier: {auto} of {auto} "auto" requests landed in the category' in text
    assert re.search(r"spent \$0\.\d{7} on [\d,]+ output tokens", text)
    assert "unpriced" in text and "routing saved" in text
    assert "the proxy's /metrics counted 60 requests (ok 60): matches the client" in text


def test_cli_region_without_a_fallback_gives_explained_errors_not_lost_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """cn-north-1 down for good: regional-cn may not leave it, so those requests get a 503
    that says why; everything else is untouched, nothing is lost, and the exit status is 0."""
    args = "demo --seconds 5 --rate 10 --down cn-north-1 --stay-down --quiet --json"
    code = main(args.split())
    out = capsys.readouterr().out
    assert code == 0
    doc = orjson.loads(out)
    totals = doc["totals"]
    assert totals["lost"] == 0 and totals["errors"] > 0
    assert totals["ok"] + totals["errors"] == totals["requests"] == 50
    failed = [r for r in doc["requests"] if r["outcome"] != "ok"]
    for r in failed:
        assert r["category"] == "regional-cn" and r["route"] == "regional-cn"
        assert r["status"] == 503 and r["errorCode"] == "upstream_unavailable"
        assert "residency" in r["error"]
        assert r["attempts"] and all(a["candidate"].endswith("@cn-north-1") for a in r["attempts"])
        assert r["at"] >= doc["failover"]["downAt"]
    by_category = {c["category"]: c for c in doc["categories"]}
    for category in ("light", "general", "reasoning", "multimodal"):
        assert by_category[category]["ok"] == by_category[category]["requests"] > 0
    assert doc["failover"]["backAt"] is None
