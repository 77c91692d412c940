"""``FailoverPolicy`` (cluster-scoped): region preference and ejection, rolled out namespace by namespace."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import ObjectMeta, SpecModel
from .endpoint_health import HealthCheck, OutlierDetection


class LabelSelectorRequirement(SpecModel):
    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"matchExpressions: operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"matchExpressions: operator {self.operator} takes no values")
        return self


class LabelSelector(SpecModel):
    """The Kubernetes label selector; an empty selector matches every enrolled namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field(
        default=(), alias="matchExpressions"
    )

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
            if req.operator == "In" and labels.get(req.key) not in req.values:
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
        return True


class Ejection(SpecModel):
    """When a region is taken out of rotation, judged over a rolling window of live traffic."""

    error_rate: float = Field(default=0.5, gt=0, le=1, alias="errorRate")
    p99_latency_ms: int | None = Field(default=None, gt=0, alias="p99LatencyMs")
    min_requests: int = Field(default=20, gt=0, alias="minRequests")
    window_seconds: float = Field(default=30, gt=0, le=3600, alias="windowSeconds")


class Rollout(SpecModel):
    batch_size: int = Field(default=1, gt=0, le=1000, alias="batchSize")
    pause_seconds: float = Field(default=30, ge=0, le=86_400, alias="pauseSeconds")
    health_timeout_seconds: float = Field(
        default=120,
        gt=0,
        le=86_400,
        alias="healthTimeoutSeconds",
        description="How long a batch may take to report the new hash and stay healthy.",
    )
    max_error_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        alias="maxErrorRate",
        description="Gate: sidecar error rate ceiling.",
    )
    min_requests: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        alias="minRequests",
        description="Gate: a sidecar's error rate is judged only over at least this many "
        "recent requests (one failure of one request is not a regression).",
    )
    auto_rollback: bool = Field(default=True, alias="autoRollback")


class FailoverPolicySpec(SpecModel):
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, alias="namespaceSelector"
    )
    region_preference: tuple[str, ...] = Field(min_length=1, alias="regionPreference")
    ejection: Ejection = Field(default_factory=Ejection)
    failback_delay_seconds: float = Field(default=60, ge=0, le=86_400, alias="failbackDelaySeconds")
    outlier_detection: OutlierDetection = Field(
        default_factory=OutlierDetection,
        alias="outlierDetection",
        description="Per endpoint: eject after consecutive connect failures, for every route.",
    )
    health_check: HealthCheck = Field(
        default_factory=HealthCheck,
        alias="healthCheck",
        description="Per endpoint: active probes; a ModelProvider's healthCheck overrides fields.",
    )
    rollout: Rollout = Field(default_factory=Rollout)
    priority: int = Field(
        default=0, description="When several policies select a namespace, the highest wins."
    )

    @model_validator(mode="after")
    def _unique_regions(self) -> FailoverPolicySpec:
        if len(set(self.region_preference)) != len(self.region_preference):
            raise ValueError("regionPreference: a region is listed twice")
        return self


class FailoverPolicy(SpecModel):
    api_version: Literal["modelroute.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["FailoverPolicy"]
    metadata: ObjectMeta
    spec: FailoverPolicySpec
