"""Endpoint health settings: outlier ejection on connect failures, and active probes.

An *endpoint* is one provider's base URL in one region.  Connect failures
and connect timeouts are facts about it, not about a model or a route, so
these settings are per endpoint: a ``FailoverPolicy`` sets them for every
provider it covers, a ``ModelProvider`` may override ``healthCheck`` for its
own endpoints (the HTTP path it answers cheaply, say).  The defaults are the
ones the fault suite measures (docs/failover.md).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from .base import SpecModel

# a path under the provider's base URL: no scheme, no host, no query, no way out of it
_PATH_PATTERN = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$"


class OutlierDetection(SpecModel):
    """Eject an endpoint after local-origin failures in a row (Envoy's ``consecutive_local_origin_failure``).

    Local-origin failures are the ones the network gives before any upstream
    answered: refused or reset connects, connect timeouts, TLS failures, and
    failed probes.  Any answer from the upstream (even a 5xx) ends the streak.
    """

    consecutive_local_origin_failures: int = Field(
        default=3,
        ge=1,
        le=1000,
        alias="consecutiveLocalOriginFailures",
        description="Local-origin failures in a row, from requests or probes, that eject the "
        "endpoint for every route and model using it.",
    )
    base_ejection_ms: int = Field(
        default=1000,
        ge=1,
        le=3_600_000,
        alias="baseEjectionMs",
        description="Shortest ejection; the n-th ejection in a row lasts n times this (capped).",
    )
    max_ejection_ms: int = Field(
        default=30_000,
        ge=1,
        le=3_600_000,
        alias="maxEjectionMs",
        description="Cap on one ejection however often the endpoint flapped.",
    )
    enabled: bool = Field(default=True, description="false: connect failures eject nothing.")

    @model_validator(mode="after")
    def _cap_over_base(self) -> Self:
        if self.max_ejection_ms < self.base_ejection_ms:
            raise ValueError(
                f"outlierDetection: maxEjectionMs ({self.max_ejection_ms}) is below "
                f"baseEjectionMs ({self.base_ejection_ms})"
            )
        return self


class HttpProbe(SpecModel):
    """Probe with ``GET <baseURL><path>`` instead of a bare connect (never a POST: no tokens spent).

    The path can only name a place under the endpoint's own base URL, so the
    provider's key (``sendKey``) goes nowhere a request would not go; the
    same connect-time guard (metadata addresses, the namespace's allow-list)
    and egress proxy apply as to requests.
    """

    path: str = Field(
        min_length=1,
        max_length=256,
        pattern=_PATH_PATTERN,
        description="Path under the endpoint's baseURL, e.g. `/models`; any answer below "
        "`healthyBelow` (a 401 included: the provider's own edge answered) is healthy.",
    )
    send_key: bool = Field(
        default=True,
        alias="sendKey",
        description="Send the provider's credentials header with the probe (only ever to this "
        "provider's own baseURL). false: no key is sent; a 401 still counts as healthy.",
    )
    healthy_below: int = Field(
        default=500,
        ge=200,
        le=600,
        alias="healthyBelow",
        description="An answer with a status below this is healthy; this and above is a failed "
        "probe (500: a 5xx means the provider's edge is sick).",
    )

    @field_validator("path")
    @classmethod
    def _stays_under_the_base_url(cls, value: str) -> str:
        if value.startswith("//") or any(part in (".", "..") for part in value.split("/")):
            raise ValueError(
                f"healthCheck.http.path {value!r} must stay under the endpoint's baseURL "
                "(no '//' prefix, no '.' or '..' segments)"
            )
        return value


class HealthCheck(SpecModel):
    """Active probes per endpoint, shared by every route that uses it."""

    enabled: bool = Field(default=True, description="false: no probes (ejections end by time).")
    interval_ms: int = Field(
        default=1000,
        ge=100,
        le=3_600_000,
        alias="intervalMs",
        description="Longest gap between two probes of one endpoint.",
    )
    jitter_percent: int = Field(
        default=20,
        ge=0,
        le=90,
        alias="jitterPercent",
        description="Each gap is intervalMs shortened by up to this share, at random, so "
        "sidecars don't probe in step (and no gap is longer than intervalMs).",
    )
    timeout_ms: int = Field(
        default=300,
        ge=10,
        le=60_000,
        alias="timeoutMs",
        description="A probe that has not connected (and, with `http`, answered) by then failed.",
    )
    healthy_threshold: int = Field(
        default=2,
        ge=1,
        le=100,
        alias="healthyThreshold",
        description="Probe successes in a row that bring an ejected endpoint back.",
    )
    unhealthy_threshold: int = Field(
        default=1,
        ge=1,
        le=100,
        alias="unhealthyThreshold",
        description="Probe failures in a row that eject the endpoint (each also counts as a "
        "local-origin failure).",
    )
    http: HttpProbe | None = Field(
        default=None, description="Omit for a TCP (and TLS, for https) connect probe."
    )

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if self.timeout_ms >= self.interval_ms:
            raise ValueError(
                f"healthCheck: timeoutMs ({self.timeout_ms}) must be below intervalMs "
                f"({self.interval_ms}), or probes of one endpoint would overlap"
            )
        return self

    def merged(self, override: HealthCheck | None) -> HealthCheck:
        """These settings with the fields ``override`` sets explicitly on top (a provider's)."""
        if override is None:
            return self
        fields = {name: getattr(override, name) for name in override.model_fields_set}
        return HealthCheck.model_validate({**self.model_dump(), **fields})
