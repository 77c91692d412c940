"""The compiled route table: the one contract between the operator and the sidecar.

The operator (or ``modelroute proxy --routes`` in local mode) compiles the
``ModelProvider``/``ModelRoute``/``FailoverPolicy`` resources of a namespace
into one :class:`CompiledTable`; the sidecar only ever reads this.  It is:

* **self-contained** – every target carries its upstream name, price, context
  window and capabilities, so the sidecar needs no catalogue and no API reads;
* **versioned** – ``schemaVersion``; a sidecar refuses a table it can't read
  rather than guessing;
* **hashed** – ``hash`` is the SHA-256 of the canonical JSON of everything
  else, so "did the sidecar pick up the new table?" is a string comparison
  (the operator's rollout gate reads it back from ``/status``).

Secrets never appear: a provider's key is a reference (env var or Secret).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from modelroute.resources import (
    Budget,
    Capability,
    CircuitBreaker,
    ClassifierSpec,
    ConnectRacing,
    Ejection,
    HealthCheck,
    Hedge,
    OutlierDetection,
    Retry,
    SecretKeyRef,
    Sticky,
    Timeouts,
)

from .keys import target_key

SCHEMA_VERSION: Final = 1


def _digest(content: Any) -> str:
    """``sha256:`` of the canonical JSON (sorted keys, compact) of a table without its hash."""
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


class TableError(ValueError):
    """A table document that can't be used (bad JSON, wrong version, hash mismatch)."""


class _TableModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class KeySource(_TableModel):
    """Where the sidecar reads a provider key: an env var, or a mounted Secret file."""

    env: str | None = None
    secret_ref: SecretKeyRef | None = None
    header: str = "Authorization"


class CompiledEndpoint(_TableModel):
    region: str
    base_url: str = Field(alias="baseURL")


class CompiledProvider(_TableModel):
    name: str
    api: Literal["openai"] = "openai"
    endpoints: tuple[CompiledEndpoint, ...]
    credentials: KeySource | None = None
    connect_timeout_ms: int = 1000
    max_connections: int = 200
    # ``direct``, a forward proxy's http:// URL, or None: the sidecar's environment decides
    egress_proxy: str | None = None
    egress_proxy_credentials: KeySource | None = None
    # per endpoint (this provider in one region): the FailoverPolicy's settings, with the
    # provider's own healthCheck fields on top (compiler.py)
    outlier_detection: OutlierDetection = Field(default_factory=OutlierDetection)
    health_check: HealthCheck = Field(default_factory=HealthCheck)

    def endpoint(self, region: str) -> CompiledEndpoint:
        for ep in self.endpoints:
            if ep.region == region:
                return ep
        raise KeyError(region)


class CompiledTarget(_TableModel):
    """A model at a provider, with everything needed to send to it and to price it."""

    provider: str
    model: str
    upstream_model: str
    tier: int = 0
    weight: int = 1
    regions: tuple[str, ...] = Field(
        description="Regions this target may be served from, in failover order (residency applied)."
    )
    output_usd_per_mtok: float | None = Field(default=None, alias="outputUSDPerMTok")
    input_usd_per_mtok: float | None = Field(default=None, alias="inputUSDPerMTok")
    context_tokens: int = 128_000
    capabilities: tuple[Capability, ...] = (Capability.TEXT,)

    @property
    def key(self) -> str:
        return target_key(self.provider, self.model)


class CompiledMirror(_TableModel):
    target: CompiledTarget
    percent: float
    max_concurrent: int = 4


class CompiledRoute(_TableModel):
    name: str
    namespace: str | None = None
    aliases: tuple[str, ...]
    match_headers: tuple[tuple[str, str], ...] = ()
    requires: tuple[Capability, ...] = ()
    targets: tuple[CompiledTarget, ...]
    classify: bool = False
    classifier: ClassifierSpec | None = None
    residency_regions: tuple[str, ...] | None = None
    latency_budget_ms: int | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: Retry = Field(default_factory=Retry)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    hedge: Hedge | None = None
    connect_racing: ConnectRacing = Field(default_factory=ConnectRacing)
    budget: Budget | None = None
    mirror: CompiledMirror | None = None
    sticky: Sticky | None = None
    forward_client_auth: bool = False
    record_content: bool = False

    @cached_property
    def retry_kinds(self) -> frozenset[str]:
        """``retry.retryOn`` as strings, built once per compiled route, read per request."""
        return frozenset(str(k) for k in self.retry.retry_on)


class CompiledFailover(_TableModel):
    policy: str
    region_preference: tuple[str, ...]
    ejection: Ejection = Field(default_factory=Ejection)
    failback_delay_seconds: float = 60


class CompiledTable(_TableModel):
    schema_version: Literal[1] = SCHEMA_VERSION
    namespace: str
    providers: tuple[CompiledProvider, ...] = ()
    routes: tuple[CompiledRoute, ...] = ()
    failover: CompiledFailover | None = None
    hash: str = ""

    # -- identity -----------------------------------------------------------------

    def content(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude={"hash"})

    def compute_hash(self) -> str:
        return _digest(self.content())

    def sealed(self) -> CompiledTable:
        """The same table with its ``hash`` filled in."""
        return self.model_copy(update={"hash": self.compute_hash()})

    @property
    def short_hash(self) -> str:
        return self.hash.removeprefix("sha256:")[:12]

    # -- wire format ----------------------------------------------------------------

    def to_json(self) -> bytes:
        sealed = self if self.hash else self.sealed()
        return orjson.dumps(
            sealed.model_dump(by_alias=True, mode="json"),
            option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> CompiledTable:
        """Parse and verify a table document; raise :class:`TableError` saying what is wrong."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise TableError(f"route table is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise TableError("route table must be a JSON object")
        version = raw.get("schemaVersion")
        if version != SCHEMA_VERSION:
            raise TableError(
                f"route table schemaVersion {version!r} is not supported by this sidecar "
                f"(supports {SCHEMA_VERSION}); upgrade the sidecar or the operator"
            )
        try:
            table = cls.model_validate(raw)
        except ValidationError as exc:
            raise TableError(f"route table does not match the schema: {exc}") from exc
        # The hash covers the document as written, not this sidecar's re-serialisation: a
        # newer sidecar fills in defaults an older operator never wrote, and must still
        # accept (and report back) the operator's hash during an upgrade.
        if table.hash and table.hash != _digest({k: v for k, v in raw.items() if k != "hash"}):
            raise TableError("route table hash does not match its content (corrupted or edited)")
        table._check_references()
        return table if table.hash else table.sealed()

    def _check_references(self) -> None:
        """Every target names a provider of this table and one of its regions.

        The compiler guarantees it; a document from elsewhere (hand-written,
        or from a buggy operator) that breaks it would fail requests one by
        one at routing time, so it is refused whole instead.
        """
        regions = {p.name: {e.region for e in p.endpoints} for p in self.providers}
        for route in self.routes:
            targets = [*route.targets, *([route.mirror.target] if route.mirror else [])]
            for target in targets:
                known = regions.get(target.provider)
                if known is None:
                    raise TableError(
                        f"route {route.name!r} target {target.key} names provider "
                        f"{target.provider!r}, which is not in the table"
                    )
                missing = [r for r in target.regions if r not in known]
                if missing:
                    raise TableError(
                        f"route {route.name!r} target {target.key} lists regions {missing} "
                        f"that provider {target.provider!r} has no endpoint in"
                    )

    # -- lookups ----------------------------------------------------------------------

    @cached_property
    def derived(self) -> dict[str, Any]:
        """Scratch space for what readers derive from this table (the router's route shapes).

        Built on first use and dropped with the table, so a reload frees it without
        anyone having to notice; never part of the table's content or hash.
        """
        return {}

    def provider(self, name: str) -> CompiledProvider:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)

    def aliases(self) -> list[str]:
        seen: dict[str, None] = {}
        for route in self.routes:
            for alias in route.aliases:
                seen.setdefault(alias, None)
        return list(seen)
