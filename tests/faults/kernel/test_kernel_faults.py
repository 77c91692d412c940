"""Regions made sick by the kernel, under steady load, on the route's default settings.

Issue 14's proof.  Each scenario runs in a namespace of its own
(``conftest.py``): two fake regions, the proxy with a two-region,
three-tier route at its defaults, and 50 requests a second; nftables
drops packets to make a region sick (``netns.py``).  Each prints one
``[kernel …]`` line of figures (collected into the fault-injection summary
by ``tests/faults/conftest.py``) with every goal of the issue beside the
measured value.

The goals (issue 14), with the route's defaults:

* no request fails while one healthy region remains;
* no request that starts more than 1 s after a blackhole waits on the sick region;
* the worst request during the fault stays under 1.5 s;
* failback within 3 s of healing;
* the chaos run answers at least 90 % of requests while any healthy candidate exists.

Every test asserts those goals (the chaos run's worst request, which no
goal bounds, is held to what the timeouts allow); the figures line says
``met`` or ``MISSED`` by how much beside each measured value.  The table in
``docs/failover.md`` ("Measured under kernel faults") is written from these
lines.
"""

from __future__ import annotations

import functools
import json
import random
import subprocess
import sys
import time

import pytest

from .conftest import CLIENT, PREFERRED, RATE, SECOND, Fault, Rec, World, failed, worst
from .netns import NetNS, tool

pytestmark = pytest.mark.slow

# the goals of issue 14
GOAL_WORST_S = 1.5
GOAL_AVOID_AFTER_S = 1.0
GOAL_FAILBACK_S = 3.0
GOAL_CHAOS_ANSWERED = 0.90
# the chaos share, measured 99.1–99.6 % over six runs on a shared 2-core box once a healed
# candidate's answers bring it back and a retry leaves a path the network condemned (before:
# 84.0 % and 92.3 % in two runs today, 89.7–99.4 % in six earlier): the goal itself is held
CHAOS_FLOOR = GOAL_CHAOS_ANSWERED

# what today's defaults give (resources/route.py, resources/provider.py): the bounds of
# what no goal covers (panic mode, chaos)
FIRST_BYTE_S = 3.0  # Timeouts.firstByteMs: a request whose answer is lost waits this long
CONNECT_S = 1.0  # ModelProvider connectTimeoutMs: a connect into a blackhole times out after this
# "waits on the sick region": a request that only raced a connect there (its loser is
# abandoned unsent) and was answered elsewhere at once did not wait on it
RACED_S = 0.5  # ConnectRacing.initialMs (250 ms) plus an answer, with slack for two busy cores
SLACK_S = 1.0  # two busy cores, and a fault takes effect between two nft calls

BUDGET_WINDOW_S = 10.0  # RetryBudget's window (proxy/health.py)
FAULT_AT_S = 2.0  # 2 s of healthy load before the fault (connections warm, kept alive)


def judged(
    name: str, measured: float | None, goal: float, unit: str = "s", *, unseen_meets: bool = False
) -> str:
    """``name 1.23 s (goal ≤ 1.5 s: met)`` or ``… MISSED by 0.4 s``; None is "never seen".

    Never seeing a failback misses its goal; never seeing a request on the sick
    region after the fault (``unseen_meets``) is the goal met by the widest margin.
    """
    if measured is None:
        return f"{name} not seen (goal ≤ {goal:g} {unit}: {'met' if unseen_meets else 'MISSED'})"
    verdict = "met" if measured <= goal else f"MISSED by {measured - goal:.2f} {unit}"
    return f"{name} {measured:.2f} {unit} (goal ≤ {goal:g} {unit}: {verdict})"


def avoided(name: str, last: float | None) -> str:
    """When the last request on the sick region started, judged against the 1 s goal."""
    return judged(name, last, GOAL_AVOID_AFTER_S, unseen_meets=True)


def waited(late: list[Rec]) -> list[Rec]:
    """Of the requests that touched the sick region late, those that waited on it."""
    return sorted((r for r in late if r.seconds > RACED_S), key=lambda r: -r.seconds)


def judged_failures(n: int, of: int) -> str:
    return f"failed {n}/{of} (goal 0: {'met' if n == 0 else 'MISSED'})"


def detail(records: list[Rec], limit: int = 3) -> list[str]:
    """A few records for an assertion message."""
    return [
        f"+{r.start:.3f} {r.seconds:.3f}s {r.status} {r.target} x{r.attempts} {r.error[:160]}"
        for r in records[:limit]
    ]


def test_a_blackhole_silences_open_connections_and_new_connects(world: World) -> None:
    """The harness's own proof: ``blackhole`` really is one, ``mute`` really accepts and says nothing.

    A keep-alive connection answered once gets no answer once the port is
    dark, and a new connect does not complete; muted, the connect completes
    and the request still gets nothing.
    """
    port = world.port(PREFERRED)
    for fault, action in (("blackhole", world.ns.blackhole), ("mute", world.ns.mute)):
        proc = subprocess.Popen(
            world.ns.argv(sys.executable, str(CLIENT), "silence", "--port", str(port)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=world.env,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["answered"], ready
            action(port)
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            result = json.loads(proc.stdout.readline())
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            world.ns.heal(port)
        assert result["answered_before"], result
        assert not result["kept_answered_after"], (fault, result)
        assert result["new_connect_completed"] is (fault == "mute"), (fault, result)


def test_a_deleted_namespace_takes_its_processes_with_it(kernel: None) -> None:
    """What a test leaves running in its namespace is killed, and the namespace is gone."""
    ns = NetNS.create()
    sleeper = subprocess.Popen(ns.argv("sleep", "60"))
    try:
        deadline = time.monotonic() + 5
        while not ns.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ns.pids()
        ns.delete()
        assert sleeper.wait(timeout=5) != 0
        listed = subprocess.run(
            [tool("ip"), "netns", "list"], capture_output=True, text=True
        ).stdout
        assert ns.name not in listed.split()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        sleeper.wait(timeout=5)
        ns.delete()


def test_blackhole_one_region(world: World, figures: list[str]) -> None:
    """us-east-1's port goes dark under load: open connections go silent, new connects hang.

    Today: a request written into a connection opened before the fault is
    rescued once the kernel shows its bytes unacknowledged (~0.5 s, the
    silence watch), and that endpoint's idle connections are closed; a new
    connect is raced by eu-west-1 at its deadline (~0.1 s).  Three such
    failures eject the endpoint, and the active probes (a failed connect
    every second) keep it ejected until two of them succeed: after the
    first second nothing tries us-east-1 again.
    """
    port = world.port(PREFERRED)
    run = world.run(8.0, [(FAULT_AT_S, "dark", lambda: world.ns.blackhole(port))])
    dark = run.at("dark")
    during = run.in_flight(dark)
    last = run.last_touch(PREFERRED, dark)
    worst_s = worst(during)
    slow = [r for r in during if r.seconds > GOAL_WORST_S]
    # what a request that still tries us-east-1 after the first second pays
    late = [r for r in run.started(dark + GOAL_AVOID_AFTER_S) if r.touched(PREFERRED)]
    figures.append(
        f"[kernel blackhole] {len(run.records)} requests at {RATE:.0f}/s; "
        f"{judged_failures(len(failed(run.records)), len(run.records))}; "
        f"{judged('worst during the fault', worst_s, GOAL_WORST_S)}, "
        f"{len(slow)} over {GOAL_WORST_S:g} s (on connections open before the fault); "
        f"{avoided('last request on the sick region started after', last)}; "
        f"{len(late)} tried it after {GOAL_AVOID_AFTER_S:g} s, {len(waited(late))} waited on it"
    )
    assert not failed(run.records), detail(failed(run.records))  # goal met
    assert last is not None, "no request noticed the blackhole"
    assert worst_s <= GOAL_WORST_S, detail(sorted(during, key=lambda r: -r.seconds))  # goal met
    assert not waited(late), detail(waited(late))  # goal met: probes hold it out


def test_blackhole_then_heal(world: World, figures: list[str]) -> None:
    """Dark for 3 s, then healed: when does traffic come back to us-east-1?

    Today: the failures the fault caused are the endpoint's (connects
    raced, requests never acknowledged), so they eject the endpoint rather
    than open the route's breaker, and two probe successes in a row after
    the heal readmit it: failback comes within ~2 s of healing.
    """
    port = world.port(PREFERRED)
    heal_at = FAULT_AT_S + 3.0
    seconds = heal_at + GOAL_FAILBACK_S + 2 * SLACK_S + 1.5
    run = world.run(
        seconds,
        [
            (FAULT_AT_S, "dark", lambda: world.ns.blackhole(port)),
            (heal_at, "heal", lambda: world.ns.heal(port)),
        ],
    )
    dark, healed = run.at("dark"), run.at("heal")
    back = run.failback(healed)
    # the fault was noticed: the last request that tried us-east-1 while it was dark
    opened = run.last_touch(PREFERRED, dark, healed)
    figures.append(
        f"[kernel heal] dark {healed - dark:.1f} s, then healed; {len(run.records)} requests; "
        f"{judged_failures(len(failed(run.records)), len(run.records))}; "
        f"{judged('worst during the fault', worst(run.in_flight(dark, healed)), GOAL_WORST_S)}; "
        f"{judged('failback after healing', back, GOAL_FAILBACK_S)}"
    )
    assert not failed(run.records), detail(failed(run.records))
    assert worst(run.in_flight(dark, healed)) <= GOAL_WORST_S  # goal met
    assert back is not None and opened is not None, "no failback within the run"
    assert back <= GOAL_FAILBACK_S  # goal met
    # healing changes nothing for the worse: no request after it waits on anything (a wait
    # on us-east-1 would cost at least a connect timeout; below it is only a busy machine)
    assert worst(run.started(healed)) < CONNECT_S


def test_region_that_accepts_but_never_answers(world: World, figures: list[str]) -> None:
    """us-east-1 completes every handshake and answers nothing (``mute``).

    Today: a connect succeeds, but the request's bytes are never
    acknowledged by us-east-1's TCP: the silence watch ends each attempt
    ~0.5 s after the write (a first-byte timeout without the wait), the
    same model in eu-west-1 answers, and three such local-origin failures
    eject the endpoint, so later requests go straight to eu-west-1.  Only
    the requests written in that first half second need a retry: the retry
    budget (20 % of the first attempts in 10 s) is far from spent.  Before,
    every request waited ``firstByteMs`` (3 s), and the ~150 retries the first
    3 s needed spent the budget: about a third of them ended with 504.
    """
    port = world.port(PREFERRED)
    # the retry budget counts first attempts over 10 s: the fault comes once that window is
    # full, as in a pod that has served steadily for a while (earlier, it allows fewer retries)
    mute_at = BUDGET_WINDOW_S + 0.5
    run = world.run(mute_at + 8.0, [(mute_at, "mute", lambda: world.ns.mute(port))])
    mute = run.at("mute")
    during = run.in_flight(mute)
    last = run.last_touch(PREFERRED, mute)
    bad = failed(run.records)
    figures.append(
        f"[kernel accepts-never-answers] {len(run.records)} requests; "
        f"{judged_failures(len(bad), len(run.records))}; "
        f"{judged('worst during the fault', worst(during), GOAL_WORST_S)}; "
        f"{avoided('last request on the sick region started after', last)}"
    )
    assert last is not None
    # the goals, met
    assert not bad, detail(bad)
    assert worst(during) <= GOAL_WORST_S, detail(sorted(during, key=lambda r: -r.seconds))
    assert last <= GOAL_AVOID_AFTER_S
    after = run.started(mute + last + 0.001)
    assert after and all(r.ok and r.attempts == 1 and r.region() == SECOND for r in after)


def test_flapping_region(world: World, figures: list[str]) -> None:
    """us-east-1 dark 5 s, healthy 5 s, dark 5 s, healthy again.

    Each dark phase as in the blackhole: requests written into silent
    connections are rescued at ~0.5 s, new connects raced; the endpoint is
    ejected and, without probes, back by time, so requests race it again
    during the phase.  The assertions hold per dark phase.
    """
    port = world.port(PREFERRED)
    faults: list[Fault] = []
    for k in range(2):
        faults.append((FAULT_AT_S + 10 * k, f"dark{k}", lambda: world.ns.blackhole(port)))
        faults.append((FAULT_AT_S + 10 * k + 5, f"heal{k}", lambda: world.ns.heal(port)))
    run = world.run(FAULT_AT_S + 20 + 1, faults)
    phases = []
    late: list[Rec] = []  # requests that tried us-east-1 more than 1 s into a dark phase
    for k in range(2):
        dark, healed = run.at(f"dark{k}"), run.at(f"heal{k}")
        phases.append((worst(run.in_flight(dark, healed)), run.last_touch(PREFERRED, dark, healed)))
        late += [r for r in run.started(dark + GOAL_AVOID_AFTER_S, healed) if r.touched(PREFERRED)]
    worst_s = max(w for w, _ in phases)
    last = max((t for _, t in phases if t is not None), default=None)
    healthy_phase = run.started(run.at("heal0"), run.at("dark1"))
    back = sum(r.region() == PREFERRED for r in healthy_phase)
    figures.append(
        f"[kernel flapping 5s/5s] {len(run.records)} requests; "
        f"{judged_failures(len(failed(run.records)), len(run.records))}; "
        f"{judged('worst during a dark phase', worst_s, GOAL_WORST_S)} "
        f"(phases: {', '.join(f'{w:.2f} s' for w, _ in phases)}); "
        f"{avoided('last request on the sick region after a flip', last)}; "
        f"{back} of {len(healthy_phase)} answered from us-east-1 in the healthy phase between; "
        f"{len(late)} tried it later than {GOAL_AVOID_AFTER_S:g} s into a dark phase, "
        f"{len(waited(late))} waited on it"
    )
    assert not failed(run.records), detail(failed(run.records))
    assert last is not None  # the first flip is always seen
    for worst_phase, _ in phases:
        assert worst_phase <= GOAL_WORST_S  # goal met
    assert not waited(late), detail(waited(late))  # goal met: probes hold it out


def test_every_region_down_then_one_back(world: World, figures: list[str]) -> None:
    """Both regions dark for 4 s (every request fails: panic mode tries anyway), then eu-west-1 heals.

    Today: with every candidate ejected or behind an open breaker, panic
    mode spreads the attempts, so the healed region is found at once: no
    request that starts after the heal fails, and a connect to the dead
    region is raced rather than waited out.
    """
    us, eu = world.port(PREFERRED), world.port(SECOND)
    heal_at = FAULT_AT_S + 4.0
    run = world.run(
        heal_at + 6.0,
        [
            (FAULT_AT_S, "dark", lambda: world.ns.blackhole(us, eu)),
            (heal_at, "heal", lambda: world.ns.heal(eu)),
        ],
    )
    dark, healed = run.at("dark"), run.at("heal")
    down = run.started(dark, healed)
    after = run.started(healed)
    # how soon answers come again: the first one to arrive after the heal
    recovery = min((r.end for r in run.records if r.ok and r.end > healed), default=None)
    last = run.last_touch(PREFERRED, healed)
    late = [r for r in run.started(healed + GOAL_AVOID_AFTER_S) if r.touched(PREFERRED)]
    figures.append(
        f"[kernel all-down-then-one] {len(down)} requests while both dark: "
        f"{len(failed(down))} failed, every one well-formed, worst {worst(down):.2f} s; "
        f"after eu-west-1 healed: {judged_failures(len(failed(after)), len(after))}, "
        f"first answer {'none' if recovery is None else f'{recovery - healed:.2f} s'} after it, "
        f"{judged('worst started after the heal', worst(after), GOAL_WORST_S)}, "
        f"{avoided('last request on the dead region started after', last)}, "
        f"{len(late)} tried it later, {len(waited(late))} waited on it"
    )
    # panic: every request while both are dark ends, with an error that names the attempts
    assert all(r.status in (502, 503, 504) and "attempt" in r.error for r in failed(down))
    assert worst(down) <= FIRST_BYTE_S + 2 * CONNECT_S + SLACK_S
    # recovery: nothing that starts after the heal fails (goal met), answers come at once
    assert recovery is not None and recovery - healed <= CONNECT_S + SLACK_S
    assert not failed(after), detail(failed(after))
    # the goals, met: a try at the dead region costs a connect race, not a connect timeout
    assert worst(after) <= GOAL_WORST_S, detail(sorted(after, key=lambda r: -r.seconds))
    assert not waited(late), detail(waited(late))


CHAOS_STEP_S = 1.5
CHAOS_STEPS = 10
CHAOS_STATES = ("ok", "ok", "dark", "mute")


def test_chaos_kernel_faults(world: World, figures: list[str]) -> None:
    """Each region flips at random (seeded) between healthy, dark and mute every 1.5 s.

    Counted: the share of requests answered among those that started while
    at least one region was healthy.
    """
    rng = random.Random(20261203)
    ports = {PREFERRED: world.port(PREFERRED), SECOND: world.port(SECOND)}
    plan: list[dict[str, str]] = []
    for _ in range(CHAOS_STEPS):
        plan.append({region: rng.choice(CHAOS_STATES) for region in ports})
    plan.append({region: "ok" for region in ports})  # healed at the end

    def apply(states: dict[str, str]) -> float:
        world.ns.heal(*ports.values())
        for region, state in states.items():
            if state == "dark":
                world.ns.blackhole(ports[region])
            elif state == "mute":
                world.ns.mute(ports[region])
        return time.monotonic()

    faults: list[Fault] = [
        (FAULT_AT_S + k * CHAOS_STEP_S, f"step{k}", functools.partial(apply, states))
        for k, states in enumerate(plan)
    ]
    run = world.run(FAULT_AT_S + (CHAOS_STEPS + 1) * CHAOS_STEP_S, faults)
    steps = [(run.at(f"step{k}"), states) for k, states in enumerate(plan)]

    def healthy_exists(t: float) -> bool:
        current: dict[str, str] = {region: "ok" for region in ports}
        for at, states in steps:
            if at <= t:
                current = states
        return "ok" in current.values()

    counted = [r for r in run.records if healthy_exists(r.start)]
    answered = sum(r.ok for r in counted) / len(counted)
    figures.append(
        f"[kernel chaos] {len(run.records)} requests, {len(counted)} while a region was healthy: "
        f"{answered:.1%} answered (goal ≥ {GOAL_CHAOS_ANSWERED:.0%}: "
        f"{'met' if answered >= GOAL_CHAOS_ANSWERED else 'MISSED'}); "
        f"worst {worst(run.records):.2f} s; plan {[''.join(s[0] for s in p.values()) for p in plan]}"
    )
    bad = [r for r in failed(run.records) if r.status not in (502, 503, 504)]
    assert not bad, detail(bad)
    # a request may meet a mute region on every attempt: maxAttempts (3) × firstByteMs
    assert worst(run.records) <= 3 * FIRST_BYTE_S + SLACK_S
    assert answered >= CHAOS_FLOOR, f"{answered:.1%} answered"
