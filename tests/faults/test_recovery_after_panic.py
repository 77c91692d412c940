"""A healed candidate returns to rotation on its answers, not after every timer has run out.

Issue 14's kernel chaos run: once a step made both regions sick, every
breaker stayed open for ``openSeconds`` (30 s, longer than the run), so the
route stayed in panic mode for good; every retry was charged to the budget,
and a region that had healed was kept out while it answered what panic sent
it.  The rule that fixed it (docs/failover.md §1, §2): an answer to a
request sent while a gate kept the candidate out (panic) is that gate's
verdict – the breaker closes, the route leaves panic mode.
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


async def test_a_healed_candidate_answering_panic_closes_its_breaker(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Every breaker open, the backup heals: its first answer closes its breaker, panic ends."""
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

    backup.knobs.update({"error_rate": 0.0})  # healed, 30 s before its breaker would half-open
    first = await ask(http, proxy.base_url)
    assert first.status == 200 and first.target == backup_key, first.body[:300]
    assert states(await status(http, proxy))[backup_key] == "closed"
    # out of panic: the plan is the backup alone, no attempt at the dead primary first
    answers = [await ask(http, proxy.base_url) for _ in range(5)]
    assert [(a.status, a.target, a.attempts) for a in answers] == [(200, backup_key, 1)] * 5
