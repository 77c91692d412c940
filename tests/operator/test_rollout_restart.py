"""Issue 5: "Changing a policy mid-rollout starts a new rollout cleanly", step by step.

:meth:`Service.rollout_step` is driven by hand against kmock (see ``rollout_harness``):
five ``tier=prod`` namespaces, batch size 2.  Policy v1 reaches batch 1 (healthy) and
batch 2 (written, one namespace not yet converged); then the spec is edited (v2, a new
hash).  What the code guarantees, and these tests pin:

* the very next step throws the old plan away: a fresh plan under the new hash, from
  batch 1, every namespace ``pending`` again, batch timings reset, and batch 1 written
  with v2 in that same step;
* no namespace is half-applied: every table is one whole table (hash annotation =
  stored table) carrying one whole block, and a namespace carries v2 exactly when the
  new plan says it is ``applied``/``healthy``;
* the namespaces of the abandoned batch keep the v1 block they had until v2's batch
  reaches them ("a namespace not yet reached keeps the failover block it has",
  docs/operator.md): they are neither torn down nor given v2 ahead of their batch;
* a rollback of v2 in batch 1 would return to v1, the block those namespaces had;
* the new rollout then goes batch by batch to ``Complete`` with v2 everywhere.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from modelroute.operator import rollout
from modelroute.proxy.table import CompiledFailover

from .helpers import G
from .rollout_harness import POLICY, V1, V2, World, policy, world

NAMESPACES = [f"ns-{i}" for i in range(1, 6)]


async def _all_prefs(w: World) -> dict[str, tuple[str, ...] | None]:
    return {ns: await w.prefs(ns) for ns in NAMESPACES}


async def _assert_status_tells_the_truth(w: World, block: tuple[str, ...]) -> None:
    """A namespace carries ``block`` exactly when the plan says it was applied there."""
    states = await w.states()
    carrying = {ns for ns, prefs in (await _all_prefs(w)).items() if prefs == block}
    applied = {ns for ns, (_, st) in states.items() if st in ("applied", "healthy")}
    assert carrying == applied, (carrying, states)


async def _v1_mid_batch_2(w: World) -> dict[str, Any]:
    """v1: batch 1 applied and healthy, batch 2 applied, ns-3 not converged yet."""
    await w.api.post(f"{G}/failoverpolicies", policy(V1))
    await w.step()  # plan, apply batch 1
    await w.step()  # batch 1 converged; pause 0: move on
    await w.step()  # apply batch 2
    w.prober.verdicts["ns-3"] = rollout.Health.WAITING
    await w.step()  # ns-4 converged, ns-3 still waiting
    status = await w.status()
    assert status["phase"] == "Progressing"
    assert status["currentBatch"] == 1
    assert await w.states() == {
        "ns-1": (0, "healthy"),
        "ns-2": (0, "healthy"),
        "ns-3": (1, "applied"),
        "ns-4": (1, "healthy"),
        "ns-5": (2, "pending"),
    }
    assert await _all_prefs(w) == {"ns-1": V1, "ns-2": V1, "ns-3": V1, "ns-4": V1, "ns-5": None}
    return status


async def test_editing_the_policy_mid_rollout_starts_a_fresh_plan(cluster: Any) -> None:
    async with world(cluster, NAMESPACES) as w:
        old = await _v1_mid_batch_2(w)
        before_edit = {ns: (await w.table(ns)).hash for ns in NAMESPACES}

        await w.api.patch(
            f"{G}/failoverpolicies/{POLICY}", {"spec": {"regionPreference": list(V2)}}
        )
        w.prober.verdicts.clear()
        w.prober.asked.clear()
        delay = await w.step()

        # A fresh plan under the new hash, from batch 1; nothing of the old plan carried over.
        status = await w.status()
        edited = await w.api.get(f"{G}/failoverpolicies/{POLICY}")
        assert edited is not None
        assert status["hash"] == rollout.spec_hash(edited["spec"]) != old["hash"]
        assert status["phase"] == "Progressing"
        assert status["currentBatch"] == 0
        assert status["batchStartedAt"] == pytest.approx(w.now)
        assert status.get("healthySince") is None  # merge-patched null: absent
        assert await w.states() == {
            "ns-1": (0, "applied"),
            "ns-2": (0, "applied"),
            "ns-3": (1, "pending"),
            "ns-4": (1, "pending"),
            "ns-5": (2, "pending"),
        }
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert ready["message"] == "batch 1/3 applied"
        assert delay is not None  # the daemon comes back for the health gate
        # The new plan's first step only writes; health of the old batch is not asked.
        assert w.prober.asked == []

        # Batch 1 got v2 in that same step; the abandoned batch keeps v1, ns-5 nothing.
        assert await _all_prefs(w) == {"ns-1": V2, "ns-2": V2, "ns-3": V1, "ns-4": V1, "ns-5": None}
        for ns in ("ns-3", "ns-4", "ns-5"):
            assert (await w.table(ns)).hash == before_edit[ns], f"{ns} was rewritten"
        await _assert_status_tells_the_truth(w, V2)
        # A rollback of v2 in batch 1 goes back to what was there: v1.
        cm = await w.api.get("/api/v1/namespaces/ns-1/configmaps/modelroute-table")
        assert cm is not None
        previous = json.loads(cm["metadata"]["annotations"]["modelroute.io/previous-failover"])
        assert CompiledFailover.model_validate(previous).region_preference == V1

        # Another reconcile of the waiting namespaces (the resync) changes nothing.
        for ns in ("ns-3", "ns-4", "ns-5"):
            await w.service.reconcile_namespace(ns)
            assert (await w.table(ns)).hash == before_edit[ns], f"{ns} rewritten by a reconcile"

        # The new rollout runs to the end, batch by batch, gated on the v2 tables.
        reached: list[set[str]] = []
        for _ in range(20):
            have = {ns for ns, p in (await _all_prefs(w)).items() if p == V2}
            delay = await w.step()
            now_have = {ns for ns, p in (await _all_prefs(w)).items() if p == V2}
            if now_have != have:
                reached.append(now_have - have)
            await _assert_status_tells_the_truth(w, V2)
            if delay is None:
                break
        else:
            raise AssertionError("the new rollout did not finish within 20 steps")
        assert reached == [{"ns-3", "ns-4"}, {"ns-5"}]
        assert (await w.status())["phase"] == "Complete"
        assert await _all_prefs(w) == dict.fromkeys(NAMESPACES, V2)
        # Every health question was about the table the namespace holds now (v2).
        for ns, expected in w.prober.asked:
            assert expected == (await w.table(ns)).hash, ns
        assert {ns for ns, _ in w.prober.asked} == set(NAMESPACES)
        applied = [m for m in await w.events() if m.startswith("batch 1: applied")]
        assert applied == ["batch 1: applied to ns-1, ns-2"] * 2  # once per plan


async def test_a_rolled_back_namespace_stays_rolled_back_after_the_resync(cluster: Any) -> None:
    async with world(cluster, NAMESPACES[:3]) as w:
        await w.api.post(f"{G}/failoverpolicies", policy(V1))
        await w.step()  # apply batch 1 (ns-1, ns-2)
        assert await w.prefs("ns-1") == V1
        w.prober.verdicts["ns-1"] = rollout.Health.REGRESSED
        assert await w.step() is None  # halted, batch 1 rolled back
        assert (await w.status())["phase"] == "Halted"
        assert [await w.prefs(ns) for ns in ("ns-1", "ns-2")] == [None, None]

        for _ in range(2):  # the operator's periodic safety net (every 60 s), twice
            await w.service.resync()
            assert [await w.prefs(ns) for ns in ("ns-1", "ns-2")] == [None, None]
