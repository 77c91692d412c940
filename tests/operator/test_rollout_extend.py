"""``rollout.extend``: namespaces that start (or stop) matching a policy after its plan was made.

:meth:`Service.rollout_step` re-lists the namespaces the policy selects on every step;
while the policy's hash is unchanged it calls :func:`rollout.extend` with them instead of
planning afresh.  What the code intends, and these tests pin:

* a namespace that starts matching joins the plan as a further batch after every
  batch already planned (``batchSize`` per batch, in name order), even when the last
  planned batch has room, so batches already in flight never change; it is then
  applied in its turn, gated like every other batch;
* namespaces already planned keep their batch and state; a rollout in progress keeps
  its current batch and timings; a ``Complete`` rollout re-opens at the new batch
  (timings reset, so the new batch gets its own health window and pause);
* a ``Halted`` rollout stays halted: the new namespace is not planned (it keeps the
  block it has) until the policy changes;
* ``extend`` only adds.  A namespace that stops matching stays in the plan with its
  batch and state, and the rollout still "applies" it in its turn, but the write is
  :meth:`Service.reconcile_namespace`, which picks the failover block by the
  namespace's current labels: the policy's block never reaches a namespace that no
  longer matches, and its sidecars are not asked about the policy's health (the kmock
  test below shows it end to end).
"""

from __future__ import annotations

from typing import Any

from modelroute.operator import rollout as r

from .helpers import G
from .rollout_harness import V1, World, policy, world

KW: dict[str, Any] = {"pause_seconds": 0.0, "health_timeout_seconds": 5.0}
OK = r.Health.CONVERGED


def _layout(s: r.RolloutState) -> list[tuple[str, int, str]]:
    return [(n.namespace, n.batch, n.state.value) for n in s.namespaces]


def _run(s: r.RolloutState, now: float) -> tuple[r.RolloutState, list[tuple[str, ...]]]:
    """Step with every sidecar converged until the rollout stops; the batches applied."""
    applied = []
    for i in range(50):
        s, act = r.step(
            s, now + i * 0.1, dict.fromkeys((n.namespace for n in s.namespaces), OK), **KW
        )
        if act.apply:
            applied.append(act.apply)
        if s.phase is not r.Phase.PROGRESSING:
            return s, applied
    raise AssertionError("rollout did not finish within 50 steps")


def test_a_namespace_joining_mid_rollout_becomes_a_further_batch_and_is_applied() -> None:
    s, act = r.step(r.plan("h", ["a", "b", "c"], 2), 10.0, {}, **KW)
    assert act.apply == ("a", "b")
    joined = r.extend(s, ["a", "b", "c", "f", "e", "d"], 2)
    assert _layout(joined) == [
        ("a", 0, "applied"),
        ("b", 0, "applied"),
        ("c", 1, "pending"),  # batch 2 keeps its room: d does not join it
        ("d", 2, "pending"),
        ("e", 2, "pending"),
        ("f", 3, "pending"),
    ]
    assert joined.policy_hash == "h"
    assert joined.phase is r.Phase.PROGRESSING
    assert (joined.current_batch, joined.batch_started_at) == (0, 10.0)  # batch 1 goes on
    assert r.extend(joined, ["a", "b", "c", "d", "e", "f"], 2) is joined  # nothing new
    assert r.from_status(r.to_status(joined)) == joined  # survives the status round trip

    # Batch 1 is still gated as before: not converged, no move.
    waiting, act = r.step(joined, 10.1, {"a": OK, "b": r.Health.WAITING}, **KW)
    assert (waiting.current_batch, act.apply) == (0, ())
    done, applied = _run(joined, 10.2)
    assert applied == [("c",), ("d", "e"), ("f",)]
    assert done.phase is r.Phase.COMPLETE
    assert {n.state for n in done.namespaces} == {r.NsState.HEALTHY}


def test_a_namespace_joining_a_complete_rollout_reopens_it_for_that_namespace_only() -> None:
    done, applied = _run(r.plan("h", ["a", "b"], 2), 0.0)
    assert (done.phase, applied) == (r.Phase.COMPLETE, [("a", "b")])
    reopened = r.extend(done, ["a", "b", "c"], 2)
    assert _layout(reopened) == [("a", 0, "healthy"), ("b", 0, "healthy"), ("c", 1, "pending")]
    assert reopened.phase is r.Phase.PROGRESSING
    assert reopened.current_batch == 1
    assert (reopened.batch_started_at, reopened.healthy_since) == (None, None)
    s, act = r.step(reopened, 5.0, {}, **KW)
    assert act.apply == ("c",)
    assert s.batch_started_at == 5.0  # its own health window, not batch 1's
    # The new batch is gated too: a regression there rolls back c only and halts.
    bad, act = r.step(s, 5.1, {"c": r.Health.REGRESSED}, **KW)
    assert act.roll_back == ("c",)
    assert bad.phase is r.Phase.HALTED
    assert [bad.state_of(ns) for ns in "abc"] == [r.NsState.HEALTHY] * 2 + [r.NsState.ROLLED_BACK]
    done2, applied = _run(s, 5.1)
    assert (done2.phase, applied) == (r.Phase.COMPLETE, [])


def test_a_policy_matching_nothing_yet_rolls_out_to_the_first_namespace_that_joins() -> None:
    empty = r.plan("h", [], 2)
    assert empty.phase is r.Phase.COMPLETE
    s = r.extend(empty, ["a"], 2)
    assert (_layout(s), s.phase, s.current_batch) == ([("a", 0, "pending")], r.Phase.PROGRESSING, 0)
    assert _run(s, 0.0)[1] == [("a",)]


def test_a_halted_rollout_does_not_plan_a_namespace_that_joins() -> None:
    s, _ = r.step(r.plan("h", ["a", "b"], 1), 0.0, {}, **KW)
    halted, act = r.step(s, 0.1, {"a": r.Health.REGRESSED}, **KW)
    assert act.roll_back == ("a",)
    assert r.extend(halted, ["a", "b", "c"], 1) is halted
    assert r.step(halted, 0.2, {}, **KW) == (halted, r.Actions())


def test_a_namespace_that_stops_matching_keeps_its_place_in_the_plan() -> None:
    s, act = r.step(r.plan("h", ["a", "b", "c"], 1), 0.0, {}, **KW)
    assert act.apply == ("a",)
    assert r.extend(s, ["a", "c"], 1) is s  # b left: extend only adds
    s2 = r.extend(s, ["a", "c", "d"], 1)  # b left and d joined
    assert _layout(s2) == [
        ("a", 0, "applied"),
        ("b", 1, "pending"),
        ("c", 2, "pending"),
        ("d", 3, "pending"),
    ]
    assert _run(s2, 0.1)[1] == [("b",), ("c",), ("d",)]


async def _v1(w: World, ns: str) -> bool:
    return await w.prefs(ns) == V1


async def test_through_the_service_a_joiner_gets_the_block_in_its_turn_a_leaver_never(
    cluster: Any,
) -> None:
    """Batch size 1 over ns-1..ns-3; ns-4 is enrolled with ``tier=prod`` while batch 1 is
    in flight, ns-2 is relabelled ``tier=dev`` before its turn (each then reconciled, as
    the namespace event handler does)."""
    async with world(cluster, ["ns-1", "ns-2", "ns-3"]) as w:
        await w.api.post(f"{G}/failoverpolicies", policy(V1, batch_size=1))
        await w.step()
        assert [await _v1(w, ns) for ns in ("ns-1", "ns-2", "ns-3")] == [True, False, False]

        await w.api.namespace("ns-4", tier="prod")
        await w.service.reconcile_namespace("ns-4")
        await w.api.patch("/api/v1/namespaces/ns-2", {"metadata": {"labels": {"tier": "dev"}}})
        await w.service.reconcile_namespace("ns-2")
        assert not await _v1(w, "ns-4")  # not reached yet: no block ahead of its batch

        gained: list[list[str]] = []
        for _ in range(30):
            before = {ns for ns in ("ns-1", "ns-2", "ns-3", "ns-4") if await _v1(w, ns)}
            delay = await w.step()
            after = {ns for ns in ("ns-1", "ns-2", "ns-3", "ns-4") if await _v1(w, ns)}
            if after != before:
                gained.append(sorted(after - before))
            assert before <= after  # nothing taken away on the way
            if delay is None:
                break
        else:
            raise AssertionError("the rollout did not finish within 30 steps")
        status = await w.status()
        assert status["phase"] == "Complete"
        assert await w.states() == {
            "ns-1": (0, "healthy"),
            "ns-2": (1, "healthy"),  # still in the plan, "applied" in its turn ...
            "ns-3": (2, "healthy"),
            "ns-4": (3, "healthy"),  # the joiner: a further batch, after ns-3
        }
        assert gained == [["ns-3"], ["ns-4"]]
        assert await w.prefs("ns-2") is None  # ... but the policy's block never reached it
        applied = [m for m in await w.events() if "applied to" in m]
        assert applied == [f"batch {i}: applied to ns-{i}" for i in range(1, 5)]
        # the leaver's sidecars are not asked: without the block they say nothing about it,
        # and their own troubles must not halt the rollout for everyone else
        assert {ns for ns, _ in w.prober.asked} == {"ns-1", "ns-3", "ns-4"}
