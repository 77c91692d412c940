"""A healed candidate returns to rotation on its answers, not after every timer has run out.

Issue 14's kernel chaos run: once a step made both regions sick, every
breaker stayed open for ``openSeconds`` (30 s, longer than the run), so the
route stayed in panic mode for good; every retry was charged to the budget,
and a region that had healed was kept out while it answered what panic sent
it.  When the other region then went dark, three attempts went into the
dark region and the healed one was never tried.  These tests hold the two
rules that fixed it (docs/failover.md §1, §2):

* an answer to a request sent while a gate kept the candidate out (panic) is
  that gate's verdict: the breaker closes, the route leaves panic mode;
* a retry after the network's verdict on a path goes off that path, to a
  candidate taken out earlier if nothing else is left.
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
NO_PROBES = "  healthCheck: {enabled: false}\n"  # only the requests judge: the rule under test


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


async def test_a_retry_off_a_dead_path_reaches_a_region_its_breaker_took_out(
    fakes: FakeFactory, proxies: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """us-east refuses; eu-west healed behind an open breaker: the retry goes there, not to us again.

    The plan holds us-east alone (eu-west's breaker is open), so before,
    every attempt went to the refusing us-east and the request failed with
    eu-west answering.
    """
    east = await fakes("us-east-1")
    west = await fakes("eu-west-1", error_rate=1.0, error_status=503)
    proxy = await proxies(
        provider_yaml("gw", [("eu-west-1", west.url), ("us-east-1", east.url)], spec=NO_PROBES)
        + route_yaml("chat", ["chat"], ["{provider: gw, model: chat-a}"], TIMEOUTS + BREAKER)
    )
    west_key, east_key = "gw/chat-a@eu-west-1", "gw/chat-a@us-east-1"
    for _ in range(4):  # eu-west first in the plan: its 503s open its breaker, us-east answers
        answer = await ask(http, proxy.base_url)
        assert answer.status == 200 and answer.target == east_key, answer.body[:300]
    assert states(await status(http, proxy)) == {west_key: "open"}

    west.knobs.update({"error_rate": 0.0})
    await east.kill()  # us-east refuses from now on
    answer = await ask(http, proxy.base_url)
    assert answer.status == 200, answer.body[:300]
    assert answer.target == west_key and answer.attempts == 2
    assert states(await status(http, proxy))[west_key] == "closed"  # it answered: back
