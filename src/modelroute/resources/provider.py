"""``ModelProvider``: where a family of models is served, in which regions, with which key."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import ObjectMeta, SpecModel
from .catalogue import CatalogueModel


class Endpoint(SpecModel):
    """One regional base URL of an OpenAI-compatible API (…/v1)."""

    region: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    base_url: str = Field(alias="baseURL", pattern=r"^https?://[^\s]+$")


class SecretKeyRef(SpecModel):
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class Credentials(SpecModel):
    """Where the provider key comes from.  Never inline: an env var (local) or a Secret (cluster)."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_ref: SecretKeyRef | None = Field(default=None, alias="secretRef")
    header: str = Field(
        default="Authorization",
        description="Header that carries the key; `Authorization` sends `Bearer <key>`.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Credentials:
        if (self.env is None) == (self.secret_ref is None):
            raise ValueError("set exactly one of credentials.env or credentials.secretRef")
        return self


class ProviderSpec(SpecModel):
    api: Literal["openai"] = "openai"
    endpoints: tuple[Endpoint, ...] = Field(min_length=1)
    credentials: Credentials | None = Field(
        default=None, description="Omit only for keyless upstreams such as local fakes."
    )
    models: tuple[CatalogueModel, ...] = Field(
        default=(), description="Override or extend the built-in catalogue for this provider."
    )
    builtin_catalogue: bool = Field(
        default=True,
        alias="builtinCatalogue",
        description="Also serve every model of the built-in catalogue (a unified endpoint does).",
    )
    connect_timeout_ms: int = Field(default=1000, gt=0, le=60_000, alias="connectTimeoutMs")
    max_connections: int = Field(default=200, gt=0, le=10_000, alias="maxConnections")

    @model_validator(mode="after")
    def _unique_names(self) -> ProviderSpec:
        regions = [e.region for e in self.endpoints]
        if len(set(regions)) != len(regions):
            raise ValueError(f"endpoints: region listed twice in {regions}")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: name listed twice in {names}")
        return self


class ModelProvider(SpecModel):
    api_version: Literal["modelroute.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelProvider"]
    metadata: ObjectMeta
    spec: ProviderSpec
