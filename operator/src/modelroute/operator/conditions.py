"""Status conditions: what a route's or a policy's ``status.conditions`` should say.

Pure: the compiler's verdict (or the rollout's phase) in, Kubernetes condition
dicts out, phrased so that the person reading ``kubectl describe`` knows what
to fix.  The service layer compares them with what is stored
(:func:`same_conditions`) before writing, so an unchanged world gets no write,
and keeps ``lastTransitionTime`` where a condition's status did not move
(:func:`with_times`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from modelroute.proxy.compiler import RouteOutcome
from modelroute.resources import Problem, Reason

from . import rollout

Condition = dict[str, Any]
REF_REASONS = {Reason.UNKNOWN_PROVIDER, Reason.UNKNOWN_MODEL, Reason.UNKNOWN_REGION}


def condition(type_: str, ok: bool, reason: str, message: str) -> Condition:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }


def route_conditions(
    outcome: RouteOutcome | None, parse_problems: Sequence[Problem]
) -> list[Condition]:
    """Accepted / ResolvedRefs / Ready from the compiler's verdict, phrased to be acted on."""
    problems = list(parse_problems) + (list(outcome.problems) if outcome else [])
    errors = [p for p in problems if p.is_error]
    ref_errors = [p for p in errors if p.reason in REF_REASONS]
    spec_errors = [p for p in errors if p.reason not in REF_REASONS]
    accepted = not spec_errors and (outcome is None or outcome.accepted) and not parse_problems
    resolved = not ref_errors and (outcome is None or outcome.resolved_refs)

    def text(ps: list[Problem]) -> str:
        return "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in ps)

    conds = [
        condition(
            "Accepted",
            accepted,
            "Accepted" if accepted else spec_errors[0].reason.value if spec_errors else "Rejected",
            "" if accepted else text(spec_errors),
        ),
        condition(
            "ResolvedRefs",
            resolved,
            "ResolvedRefs"
            if resolved
            else ref_errors[0].reason.value
            if ref_errors
            else "UnresolvedRefs",
            "" if resolved else text(ref_errors),
        ),
    ]
    ready = accepted and resolved
    conds.append(
        condition(
            "Ready",
            ready,
            "Compiled" if ready else "NotCompiled",
            "route is in the namespace table" if ready else "not in the table: " + text(errors),
        )
    )
    return conds


def policy_condition(state: rollout.RolloutState) -> Condition:
    """A FailoverPolicy is Ready when its rollout completed; the reason is the phase."""
    return condition(
        "Ready", state.phase is rollout.Phase.COMPLETE, state.phase.value, state.message
    )


def same_conditions(old: Sequence[Mapping[str, Any]], new: Sequence[Condition]) -> bool:
    """Equal apart from ``lastTransitionTime`` (which :func:`with_times` adds)."""
    strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in old]
    return strip == list(new)


def with_times(
    old: Sequence[Mapping[str, Any]], new: Sequence[Condition], now: str
) -> list[Condition]:
    """Keep ``lastTransitionTime`` where the status of a condition did not change."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prev = before.get(c["type"])
        ts = prev.get("lastTransitionTime") if prev and prev.get("status") == c["status"] else None
        out.append({**c, "lastTransitionTime": ts or now})
    return out


def now() -> str:
    """The current time as Kubernetes writes timestamps (RFC 3339, seconds, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
