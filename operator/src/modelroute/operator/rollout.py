"""The FailoverPolicy rollout as a pure state machine (no kopf, no HTTP, no clock).

A policy change reaches namespaces batch by batch.  The service layer feeds
:func:`step` the current state, the time and what the sidecars of the current
batch report; :func:`step` answers with the next state and what to do (apply a
batch, roll one back, wait).  Keeping it pure makes every transition testable
in microseconds and keeps the kopf handlers thin.

States per namespace: ``pending`` → ``applied`` (table written) → ``healthy``
(every sidecar serves the new hash and stays under the error ceiling), or
``rolledBack`` (the batch regressed; its previous failover block is re-written
and the rollout halts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson


class NsState(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    HEALTHY = "healthy"
    ROLLED_BACK = "rolledBack"


class Phase(StrEnum):
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    HALTED = "Halted"


class Health(StrEnum):
    """What the sidecars of one namespace say about the table just written."""

    CONVERGED = "converged"  # all report the new hash and are healthy
    WAITING = "waiting"  # some still on the old hash or not answering yet
    REGRESSED = "regressed"  # some report not ready or an error rate over the ceiling


@dataclass(frozen=True)
class NsProgress:
    namespace: str
    batch: int
    state: NsState = NsState.PENDING
    message: str = ""


@dataclass(frozen=True)
class RolloutState:
    policy_hash: str
    namespaces: tuple[NsProgress, ...]
    phase: Phase = Phase.PROGRESSING
    current_batch: int = 0
    batch_started_at: float | None = None
    healthy_since: float | None = None
    message: str = ""

    def batch(self, index: int) -> list[NsProgress]:
        return [n for n in self.namespaces if n.batch == index]

    @property
    def batches(self) -> int:
        return 1 + max((n.batch for n in self.namespaces), default=-1)

    def state_of(self, namespace: str) -> NsState | None:
        for n in self.namespaces:
            if n.namespace == namespace:
                return n.state
        return None


@dataclass(frozen=True)
class Actions:
    apply: tuple[str, ...] = ()
    roll_back: tuple[str, ...] = ()
    # Seconds until step() should run again (None: nothing left to do).
    requeue: float | None = None
    events: tuple[str, ...] = field(default=())


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Identity of one policy version: a changed spec is a new rollout."""
    return "sha256:" + hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()


def plan(policy_hash: str, namespaces: Sequence[str], batch_size: int) -> RolloutState:
    """All namespaces pending, in name order, ``batch_size`` per batch."""
    ordered = sorted(set(namespaces))
    return RolloutState(
        policy_hash=policy_hash,
        namespaces=tuple(NsProgress(ns, i // batch_size) for i, ns in enumerate(ordered)),
        phase=Phase.PROGRESSING if ordered else Phase.COMPLETE,
    )


def extend(state: RolloutState, namespaces: Sequence[str], batch_size: int) -> RolloutState:
    """Namespaces newly selected after planning join as further batches (a halted rollout stays)."""
    known = {n.namespace for n in state.namespaces}
    new = sorted(set(namespaces) - known)
    if not new or state.phase is Phase.HALTED:
        return state
    first = state.batches
    added = tuple(NsProgress(ns, first + i // batch_size) for i, ns in enumerate(new))
    phase = Phase.PROGRESSING
    current = state.current_batch if state.phase is Phase.PROGRESSING else first
    return replace(
        state,
        namespaces=state.namespaces + added,
        phase=phase,
        current_batch=current,
        batch_started_at=state.batch_started_at if state.phase is Phase.PROGRESSING else None,
        healthy_since=state.healthy_since if state.phase is Phase.PROGRESSING else None,
    )


def _set(state: RolloutState, names: set[str], new: NsState, message: str = "") -> RolloutState:
    return replace(
        state,
        namespaces=tuple(
            replace(n, state=new, message=message) if n.namespace in names else n
            for n in state.namespaces
        ),
    )


def step(
    state: RolloutState,
    now: float,
    health: Mapping[str, Health],
    *,
    pause_seconds: float,
    health_timeout_seconds: float,
    auto_rollback: bool = True,
) -> tuple[RolloutState, Actions]:
    """Advance the rollout by at most one transition of the current batch."""
    if state.phase is not Phase.PROGRESSING:
        return state, Actions()
    index = state.current_batch
    batch = state.batch(index)
    if not batch:  # every batch done
        return replace(state, phase=Phase.COMPLETE, message="all batches healthy"), Actions()
    names = {n.namespace for n in batch}

    pending = sorted(n.namespace for n in batch if n.state is NsState.PENDING)
    if pending:
        new = _set(state, set(pending), NsState.APPLIED)
        new = replace(
            new,
            batch_started_at=now,
            healthy_since=None,
            message=f"batch {index + 1}/{state.batches} applied",
        )
        return new, Actions(
            apply=tuple(pending),
            requeue=0.2,
            events=(f"batch {index + 1}: applied to {', '.join(pending)}",),
        )

    regressed = sorted(ns for ns in names if health.get(ns) is Health.REGRESSED)
    started = state.batch_started_at if state.batch_started_at is not None else now
    timed_out = not all(health.get(ns) is Health.CONVERGED for ns in names) and (
        now - started > health_timeout_seconds
    )
    if regressed or timed_out:
        why = (
            f"sidecars in {', '.join(regressed)} regressed"
            if regressed
            else f"sidecars did not converge within {health_timeout_seconds:g}s"
        )
        msg = f"batch {index + 1} halted: {why}"
        if auto_rollback:
            new = _set(state, names, NsState.ROLLED_BACK, why)
            return replace(new, phase=Phase.HALTED, message=msg + "; rolled back"), Actions(
                roll_back=tuple(sorted(names)), events=(msg + "; rolled back",)
            )
        return replace(state, phase=Phase.HALTED, message=msg), Actions(events=(msg,))

    converged = {ns for ns in names if health.get(ns) is Health.CONVERGED}
    state = _set(state, converged, NsState.HEALTHY) if converged else state
    if converged != names:
        return state, Actions(requeue=0.2)

    healthy_since = state.healthy_since if state.healthy_since is not None else now
    remaining = pause_seconds - (now - healthy_since)
    if remaining > 0:  # stay healthy for the pause before the next batch
        return replace(state, healthy_since=healthy_since), Actions(requeue=min(remaining, 1.0))
    nxt = index + 1
    if nxt >= state.batches:
        return replace(
            state,
            phase=Phase.COMPLETE,
            current_batch=nxt,
            healthy_since=None,
            message="all batches healthy",
        ), Actions()
    return replace(state, current_batch=nxt, batch_started_at=None, healthy_since=None), Actions(
        requeue=0.0
    )


def to_status(state: RolloutState) -> dict[str, Any]:
    """The ``FailoverPolicy.status`` fields this module owns."""
    return {
        "hash": state.policy_hash,
        "phase": state.phase.value,
        "currentBatch": state.current_batch,
        "batchStartedAt": state.batch_started_at,
        "healthySince": state.healthy_since,
        "message": state.message,
        "namespaces": [
            {
                "namespace": n.namespace,
                "batch": n.batch,
                "state": n.state.value,
                "message": n.message,
            }
            for n in state.namespaces
        ],
    }


def from_status(status: Mapping[str, Any] | None) -> RolloutState | None:
    """Read back a state written by :func:`to_status` (None when there is none)."""
    if not status or not status.get("hash") or "namespaces" not in status:
        return None
    return RolloutState(
        policy_hash=str(status["hash"]),
        namespaces=tuple(
            NsProgress(
                str(n["namespace"]),
                int(n.get("batch", 0)),
                NsState(n["state"]),
                str(n.get("message") or ""),
            )
            for n in status.get("namespaces") or []
        ),
        phase=Phase(status.get("phase") or Phase.PROGRESSING),
        current_batch=int(status.get("currentBatch") or 0),
        batch_started_at=status.get("batchStartedAt"),
        healthy_since=status.get("healthySince"),
        message=str(status.get("message") or ""),
    )
