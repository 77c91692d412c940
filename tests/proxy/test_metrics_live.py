"""``/metrics`` of a running proxy after real requests: the numbers a cost dashboard shows.

``tests/observability/test_metrics.py`` pins the Prometheus observer on
hand-built records; here the requests go through the proxy to a fake provider
and the exposition is fetched over HTTP from the admin port, parsed with
prometheus_client's own parser and linted by ``promtool check metrics``.

Two routes: ``flash`` on the built-in ``deepseek-v4-flash`` (the catalogue
quotes $0.25/M output and no input price, so its input tokens must be counted
as unpriced, never as $0) and ``priced`` on a provider ``models:`` override
with both prices (input is then part of the cost and nothing is unpriced).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..observability.conftest import promtool  # noqa: F401  (fixture re-used: skip/fail rule)
from .conftest import FakeFactory, ProxyFactory, provider_yaml, route_yaml

OUTPUT_TOKENS = 20
FLASH_REQUESTS = 10
PRICED_REQUESTS = 3
# picodollars per token: $0.25/M output (catalogue); the override's $0.50/M input, $1.50/M output
FLASH_OUT_PD = 250_000
PRICED_IN_PD, PRICED_OUT_PD = 500_000, 1_500_000

PRICED_MODELS = """  models:
    - {name: priced-m, upstreamModel: priced-up, inputUSDPerMTok: 0.5, outputUSDPerMTok: 1.5,
       contextTokens: 32000, capabilities: [text]}
"""

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(exposition: str) -> Samples:
    """Sample name -> {sorted label pairs: value}, via prometheus_client's parser."""
    out: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for key, v in samples.get(name, {}).items() if want <= set(key))


async def test_cost_tokens_and_requests_after_real_traffic(
    fakes: FakeFactory,
    proxies: ProxyFactory,
    promtool: str,  # noqa: F811
) -> None:
    fake = await fakes("us-east-1", output_tokens=OUTPUT_TOKENS)
    routes = (
        provider_yaml("api", [("us-east-1", fake.url)])
        + provider_yaml("own", [("us-east-1", fake.url)], PRICED_MODELS)
        + route_yaml("flash", ["flash"], ["{provider: api, model: deepseek-v4-flash}"])
        + route_yaml("priced", ["priced"], ["{provider: own, model: priced-m}"])
    )
    proxy = await proxies(routes)

    prompt_tokens: dict[str, list[int]] = {"flash": [], "priced": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for route, n in (("flash", FLASH_REQUESTS), ("priced", PRICED_REQUESTS)):
            for i in range(n):
                body = {"model": route, "messages": [{"role": "user", "content": "hi " * (i + 1)}]}
                async with http.post(proxy.base_url + "/chat/completions", json=body) as resp:
                    assert resp.status == 200, await resp.text()
                    usage = (await resp.json())["usage"]
                assert usage["completion_tokens"] == OUTPUT_TOKENS
                prompt_tokens[route].append(usage["prompt_tokens"])
        async with http.get(proxy.admin_url + "/metrics") as resp:
            assert resp.status == 200
            exposition = await resp.text()
    assert fake.fake.stats.requests == FLASH_REQUESTS + PRICED_REQUESTS
    flash_in, priced_in = sum(prompt_tokens["flash"]), sum(prompt_tokens["priced"])
    assert len(set(prompt_tokens["flash"])) > 1  # varied prompts: a sum, not n × one number

    s = parse(exposition)
    flash = {"route": "flash", "model": "deepseek-v4-flash", "provider": "api"}
    priced = {"route": "priced", "model": "priced-m", "provider": "own"}

    # requests, labelled with the target that served them
    assert value(s, "modelroute_requests_total", outcome="ok", **flash) == FLASH_REQUESTS
    assert value(s, "modelroute_requests_total", outcome="ok", **priced) == PRICED_REQUESTS
    assert value(s, "modelroute_requests_total") == FLASH_REQUESTS + PRICED_REQUESTS
    assert value(s, "modelroute_upstream_attempts_total", result="ok") == fake.fake.stats.requests

    # tokens: what the upstream reported, output and input
    assert value(s, "modelroute_tokens_total", type="output", **flash) == 200
    assert value(s, "modelroute_tokens_total", type="input", **flash) == flash_in
    assert value(s, "modelroute_tokens_total", type="output", **priced) == 3 * OUTPUT_TOKENS
    assert value(s, "modelroute_tokens_total", type="input", **priced) == priced_in

    # cost, exact: 10 × 20 tokens × $0.25/M = $0.00005 (output only: the catalogue has no
    # input price); the priced route's input is part of its cost
    assert value(s, "modelroute_cost_usd_total", **flash) == 0.00005
    priced_pd = priced_in * PRICED_IN_PD + PRICED_REQUESTS * OUTPUT_TOKENS * PRICED_OUT_PD
    assert value(s, "modelroute_cost_usd_total", **priced) == priced_pd / 1e12
    assert FLASH_REQUESTS * OUTPUT_TOKENS * FLASH_OUT_PD / 1e12 == 0.00005

    # unpriced is not free: flash's input tokens are counted as unpriced, priced has none
    assert value(s, "modelroute_unpriced_tokens_total", type="input", **flash) == flash_in
    assert value(s, "modelroute_unpriced_tokens_total", type="output", **flash) == 0
    assert value(s, "modelroute_unpriced_tokens_total", **priced) == 0
    assert value(s, "modelroute_estimated_tokens_total") == 0

    # the same body passes Prometheus' own linter
    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=exposition.encode(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "", result.stdout.decode()
