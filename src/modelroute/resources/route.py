"""``ModelRoute``: which names an app sends, and the chain of targets that serve them."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from .base import ObjectMeta, SpecModel
from .catalogue import Capability
from .classifier import ClassifierSpec


class FailureKind(StrEnum):
    """Failures that may fall over to the next candidate (before any byte reached the client)."""

    CONNECT = "connect"
    TIMEOUT = "timeout"
    RATE_LIMITED = "429"
    SERVER_ERROR = "5xx"
    CONTEXT_LENGTH = "context-length"


class Target(SpecModel):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    tier: int = Field(default=0, ge=0, le=100, description="Tier 0 is tried first.")
    weight: int = Field(
        default=1, ge=0, le=10_000, description="Share within the tier; 0 = standby."
    )
    regions: tuple[str, ...] | None = Field(
        default=None,
        min_length=1,
        description="Restrict this target to some of the provider's regions.",
    )
    capabilities: tuple[Capability, ...] = Field(
        default=(),
        description=(
            "Capabilities this target has on top of its model's catalogue entry, e.g. "
            "`responses` where the provider serves the Responses API (/v1/responses)."
        ),
    )


class HeaderMatch(SpecModel):
    name: str = Field(min_length=1)
    value: str


class Timeouts(SpecModel):
    first_byte_ms: int = Field(default=3000, gt=0, le=600_000, alias="firstByteMs")
    total_ms: int = Field(default=30_000, gt=0, le=3_600_000, alias="totalMs")
    stream_idle_ms: int | None = Field(
        default=None,
        gt=0,
        alias="streamIdleMs",
        description="Longest silence between chunks once streaming; default firstByteMs.",
    )

    @model_validator(mode="after")
    def _first_byte_within_total(self) -> Timeouts:
        if self.first_byte_ms > self.total_ms:
            raise ValueError(
                f"timeouts.firstByteMs ({self.first_byte_ms}) must not exceed totalMs ({self.total_ms})"
            )
        return self


class Retry(SpecModel):
    max_attempts: int = Field(default=3, ge=1, le=20, alias="maxAttempts")
    base_backoff_ms: int = Field(default=50, ge=0, le=60_000, alias="baseBackoffMs")
    max_backoff_ms: int = Field(default=2000, ge=0, le=300_000, alias="maxBackoffMs")
    retry_on: tuple[FailureKind, ...] = Field(
        default=tuple(FailureKind), alias="retryOn", description="Failures that fall over."
    )
    budget_ratio: float = Field(
        default=0.2,
        ge=0,
        le=10,
        alias="budgetRatio",
        description="Extra attempts allowed as a share of first attempts (0.2 = 20 % extra).",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> Retry:
        if self.base_backoff_ms > self.max_backoff_ms:
            raise ValueError("retry.baseBackoffMs must not exceed retry.maxBackoffMs")
        return self


class CircuitBreaker(SpecModel):
    """The seeds' numbers: open after 5 failures in 60 s, stay open 30 s."""

    failure_threshold: int = Field(default=5, gt=0, le=10_000, alias="failureThreshold")
    window_seconds: float = Field(default=60, gt=0, le=86_400, alias="windowSeconds")
    open_seconds: float = Field(default=30, gt=0, le=86_400, alias="openSeconds")


class Hedge(SpecModel):
    after_ms: int | None = Field(default=None, gt=0, alias="afterMs")
    percentile: float | None = Field(
        default=None, gt=0, lt=100, description="Hedge after this live percentile of the target."
    )
    max_hedges: int = Field(default=1, ge=1, le=3, alias="maxHedges")

    @model_validator(mode="after")
    def _one_trigger(self) -> Hedge:
        if (self.after_ms is None) == (self.percentile is None):
            raise ValueError("hedge: set exactly one of afterMs or percentile")
        return self


class ConnectRacing(SpecModel):
    """Happy Eyeballs across regions: a connect slower than usual starts the next region's attempt.

    The deadline is the endpoint's observed connect time (TCP's RTO estimate,
    smoothed mean + 4 × deviation), clamped between ``floorMs`` and the
    provider's ``connectTimeoutMs``.  The slow connect is abandoned as soon as
    another attempt has a connection, so only one request is ever sent; it
    keeps connecting in the background up to its full timeout, and only that
    full timeout counts against the endpoint's health (docs/failover.md).
    """

    enabled: bool = Field(
        default=True,
        description="Start the next region's attempt when a connect outlasts its deadline.",
    )
    floor_ms: int = Field(
        default=100,
        ge=1,
        le=60_000,
        alias="floorMs",
        description="Shortest deadline: above event-loop stalls and a busy node's jitter, "
        "below the 1 s SYN retransmit a dropped packet costs.",
    )
    initial_ms: int = Field(
        default=250,
        ge=1,
        le=60_000,
        alias="initialMs",
        description="Deadline for an endpoint not yet connected to (RFC 8305's 250 ms "
        "connection attempt delay); the provider's connectTimeoutMs still caps it.",
    )


class Residency(SpecModel):
    regions: tuple[str, ...] = Field(
        min_length=1, description="Allow-list, enforced in every fallback."
    )


class BudgetAction(StrEnum):
    ALERT = "alert"
    DOWNGRADE = "downgrade"
    REJECT = "reject"


class Budget(SpecModel):
    usd_per_hour: float | None = Field(default=None, gt=0, alias="usdPerHour")
    usd_per_day: float | None = Field(default=None, gt=0, alias="usdPerDay")
    usd_per_month: float | None = Field(default=None, gt=0, alias="usdPerMonth")
    action: BudgetAction = BudgetAction.ALERT

    @model_validator(mode="after")
    def _one_window(self) -> Budget:
        set_ = [
            v for v in (self.usd_per_hour, self.usd_per_day, self.usd_per_month) if v is not None
        ]
        if len(set_) != 1:
            raise ValueError("budget: set exactly one of usdPerHour, usdPerDay or usdPerMonth")
        return self


class Mirror(SpecModel):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    percent: float = Field(gt=0, le=100)
    max_concurrent: int = Field(default=4, ge=1, le=1000, alias="maxConcurrent")


class Sticky(SpecModel):
    header: str = Field(min_length=1, description="Requests with the same value stay on one arm.")


class RouteSpec(SpecModel):
    models: tuple[str, ...] = Field(min_length=1, description="Names apps send in `model`.")
    match_headers: tuple[HeaderMatch, ...] = Field(default=(), alias="matchHeaders")
    requires: tuple[Capability, ...] = Field(
        default=(), description="Capabilities every target of this route must have (e.g. vision)."
    )
    targets: tuple[Target, ...] = Field(
        default=(), description="The fallback chain; may be empty only on a classify route."
    )
    classify: bool = Field(
        default=False,
        description="Requests naming these models are classified and re-resolved by category.",
    )
    classifier: ClassifierSpec | None = None
    latency_budget_ms: int | None = Field(default=None, gt=0, alias="latencyBudgetMs")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: Retry = Field(default_factory=Retry)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker, alias="circuitBreaker")
    hedge: Hedge | None = None
    connect_racing: ConnectRacing = Field(
        default_factory=ConnectRacing,
        alias="connectRacing",
        description="Race a slow connect against the next region (on by default: one request "
        "is still sent, never two).",
    )
    residency: Residency | None = None
    budget: Budget | None = None
    mirror: Mirror | None = None
    sticky: Sticky | None = None
    forward_client_auth: bool = Field(
        default=False,
        alias="forwardClientAuth",
        description="Send the client's own Authorization upstream instead of the provider key.",
    )
    record_content: bool = Field(
        default=False, alias="recordContent", description="Record prompts and completions in spans."
    )

    @model_validator(mode="after")
    def _unique(self) -> RouteSpec:
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models: a name is listed twice in {list(self.models)}")
        if not self.targets and not self.classify:
            raise ValueError("targets: at least one target is needed (unless classify is true)")
        keys = [(t.provider, t.model) for t in self.targets]
        if len(set(keys)) != len(keys):
            raise ValueError("targets: the same provider/model is listed twice")
        if self.targets and all(t.weight == 0 for t in self.targets):
            raise ValueError("targets: every weight is 0, nothing would be served")
        return self


class ModelRoute(SpecModel):
    api_version: Literal["modelroute.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelRoute"]
    metadata: ObjectMeta
    spec: RouteSpec
