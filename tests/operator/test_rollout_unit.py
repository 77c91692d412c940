"""The pure rollout state machine, without kopf or HTTP."""

from __future__ import annotations

from modelroute.operator import rollout as r

KW = {"pause_seconds": 1.0, "health_timeout_seconds": 5.0}


def test_batches_advance_only_after_health_and_pause() -> None:
    s = r.plan("h", ["c", "a", "b"], 2)
    assert [(n.namespace, n.batch) for n in s.namespaces] == [("a", 0), ("b", 0), ("c", 1)]
    s, act = r.step(s, 0.0, {}, **KW)
    assert act.apply == ("a", "b")
    s, act = r.step(s, 0.1, {"a": r.Health.CONVERGED, "b": r.Health.WAITING}, **KW)
    assert s.current_batch == 0
    assert s.state_of("a") is r.NsState.HEALTHY
    s, act = r.step(s, 0.2, {"a": r.Health.CONVERGED, "b": r.Health.CONVERGED}, **KW)
    assert s.current_batch == 0  # pausing
    s, act = r.step(s, 1.3, {"a": r.Health.CONVERGED, "b": r.Health.CONVERGED}, **KW)
    assert s.current_batch == 1
    s, act = r.step(s, 1.4, {}, **KW)
    assert act.apply == ("c",)


def test_regression_and_timeout_roll_back_and_halt() -> None:
    s, _ = r.step(r.plan("h", ["a", "b"], 2), 0.0, {}, **KW)
    bad, act = r.step(s, 0.1, {"a": r.Health.REGRESSED, "b": r.Health.CONVERGED}, **KW)
    assert act.roll_back == ("a", "b")
    assert bad.phase is r.Phase.HALTED
    late, act = r.step(s, 6.0, {"a": r.Health.WAITING, "b": r.Health.CONVERGED}, **KW)
    assert act.roll_back == ("a", "b")
    assert r.step(late, 7.0, {}, **KW)[1] == r.Actions()


def test_status_round_trip() -> None:
    s, _ = r.step(r.plan("h", ["a", "b", "c"], 1), 3.0, {}, **KW)
    assert r.from_status(r.to_status(s)) == s
