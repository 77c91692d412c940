"""Endpoint health: connect failures eject an endpoint for every route and model that uses it.

An endpoint is a provider's base URL in one region.  Whether connections to
it can be made is a fact about the network path, so one route's refused
connects take it out of every plan – a rarely used model there doesn't have
to find out by itself, paying a connect timeout per request.
"""

from __future__ import annotations

import aiohttp

from .conftest import FakeFactory, ProxyFactory, ask, dead_port, provider_yaml, route_yaml, status

TIMEOUTS = (
    "  timeouts: {firstByteMs: 500, totalMs: 3000}\n"
    "  retry: {maxAttempts: 3, baseBackoffMs: 5, maxBackoffMs: 20}\n"
    "  circuitBreaker: {failureThreshold: 1000}\n"  # the endpoint rule alone
)


def policy(health_check: str = "{enabled: false}") -> str:
    return f"""
apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {{name: regions}}
spec:
  regionPreference: [us-east-1, eu-west-1]
  outlierDetection: {{consecutiveLocalOriginFailures: 3, baseEjectionMs: 30000}}
  healthCheck: {health_check}
---
"""


def endpoint(doc: dict[str, object], key: str) -> dict[str, object]:
    for e in doc["endpoints"]:  # type: ignore[attr-defined]
        if e["endpoint"] == key:
            return dict(e)
    raise AssertionError(f"{key} not on /status: {doc['endpoints']}")


async def test_refused_connects_eject_the_endpoint_for_every_route_and_model(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    eu = await fakes("eu-west-1")
    proxy = await proxies(
        provider_yaml(
            "global", [("us-east-1", f"http://127.0.0.1:{dead_port()}/v1"), ("eu-west-1", eu.url)]
        )
        + route_yaml("chat", ["chat"], ["{provider: global, model: chat-a}"], TIMEOUTS)
        + route_yaml("rare", ["rare"], ["{provider: global, model: chat-b}"], TIMEOUTS)
        + policy()
    )
    for _ in range(3):  # route chat, model chat-a: refused in us-east-1, served from eu-west-1
        answer = await ask(http, proxy.base_url)
        assert answer.complete() and answer.attempts == 2
    doc = await status(http, proxy)
    us = endpoint(doc, "global@us-east-1")
    assert us["state"] == "ejected" and us["lastError"] == "connect_refused", us
    assert "3 local-origin failures" in str(us["reason"]) and us["ejections"] == 1
    assert endpoint(doc, "global@eu-west-1")["state"] == "healthy"
    # another route and model at the same endpoint never tries it
    for _ in range(3):
        answer = await ask(http, proxy.base_url, model="rare")
        assert answer.complete() and answer.attempts == 1, answer.headers
        assert answer.target == "global/chat-b@eu-west-1"
    assert proxy.explain_url is not None
    async with http.get(proxy.explain_url + "/explain?n=1") as resp:
        explained = await resp.json()
    (last,) = explained["requests"]
    assert [d["reason"] for d in last["dropped"]] == ["endpoint_ejected"], last["dropped"]
    assert "global@us-east-1" in last["dropped"][0]["detail"]
    assert endpoint({"endpoints": explained["endpoints"]}, "global@us-east-1")["ejections"] == 1
