"""Panic mode spreads a request's attempts over distinct candidates.

When every candidate is unhealthy (each breaker open) the plan tries them
anyway – a sick upstream is a better bet than a certain error.  Issue 14's
chaos run found the defect this holds: panic spent every attempt of a
request on the plan's first candidate, a dead region, so the route answered
503 for the whole open period although the other region had healed.
"""

from __future__ import annotations

import aiohttp

from .conftest import (
    FakeFactory,
    ProxyFactory,
    ask,
    dead_port,
    provider_yaml,
    route_yaml,
    status,
)

BREAKER = "  circuitBreaker: {failureThreshold: 2, windowSeconds: 30, openSeconds: 30}\n"
TIMEOUTS = (
    "  timeouts: {firstByteMs: 500, totalMs: 3000}\n"
    "  retry: {maxAttempts: 3, baseBackoffMs: 5, maxBackoffMs: 20}\n"
)


def states(doc: dict[str, object]) -> dict[str, str]:
    return {str(c["candidate"]): str(c["state"]) for c in doc["circuits"]}  # type: ignore[attr-defined]


async def test_with_every_breaker_open_a_request_still_reaches_the_healed_region(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    backup = await fakes("eu-west-1", error_rate=1.0, error_status=503)
    proxy = await proxies(
        provider_yaml("primary", [("us-east-1", f"http://127.0.0.1:{dead_port()}/v1")])
        + provider_yaml("backup", [("eu-west-1", backup.url)])
        + route_yaml(
            "chat",
            ["chat"],
            ["{provider: primary, model: chat-a}", "{provider: backup, model: chat-b, tier: 1}"],
            TIMEOUTS + BREAKER,
        )
    )
    primary_key, backup_key = "primary/chat-a@us-east-1", "backup/chat-b@eu-west-1"
    for _ in range(6):  # both fail until both breakers are open
        await ask(http, proxy.base_url)
        if set(states(await status(http, proxy)).items()) >= {
            (primary_key, "open"),
            (backup_key, "open"),
        }:
            break
    assert states(await status(http, proxy)) == {primary_key: "open", backup_key: "open"}

    backup.knobs.update({"error_rate": 0.0})  # the backup heals; its breaker stays open 30 s
    before = backup.stats.requests
    answers = [await ask(http, proxy.base_url) for _ in range(10)]
    assert [a.status for a in answers] == [200] * 10, answers[0].body[:300]
    assert all(a.complete() and a.target == backup_key for a in answers)
    # distinct candidates: at most the dead primary once, then the backup, never a repeat
    assert all(a.attempts <= 2 for a in answers), [a.attempts for a in answers]
    assert backup.stats.requests - before == 10
