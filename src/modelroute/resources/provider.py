"""``ModelProvider``: where a family of models is served, in which regions, with which key."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from .base import ObjectMeta, SpecModel
from .catalogue import CatalogueModel
from .egress_rules import forbidden_host
from .endpoint_health import HealthCheck


class Endpoint(SpecModel):
    """One regional base URL of an OpenAI-compatible API (…/v1)."""

    region: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    base_url: str = Field(alias="baseURL", pattern=r"^https?://[^\s]+$")

    @field_validator("base_url")
    @classmethod
    def _not_metadata(cls, value: str) -> str:
        host = urlsplit(value).hostname or ""
        why = forbidden_host(host)
        if why:
            raise ValueError(f"{why}: the provider key would be sent there (docs/security.md)")
        return value


# A Secret's name is a DNS-1123 subdomain, and a key is what Kubernetes allows in a
# Secret's data (letters, digits, '-', '_', '.'), never "." or "..".  The sidecar joins
# both onto its secrets directory, so anything path-like ("../x", "/etc") would read a
# file that is not the Secret (the pod's ServiceAccount token) and send it upstream.
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]*[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"

# Headers the key must never be sent as: they frame the request (a key in Content-Length
# or Transfer-Encoding corrupts it, or smuggles a second one), pick where it goes (Host),
# are hop-by-hop (RFC 9110 §7.6.1) or are set by the sidecar itself.
FORBIDDEN_KEY_HEADERS = (
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept-encoding",
    "user-agent",
    "traceparent",
    "tracestate",
)
# RFC 9110 token: what a header field name may be made of.
HEADER_TOKEN_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


class SecretKeyRef(SpecModel):
    name: str = Field(min_length=1, max_length=253, pattern=SECRET_NAME_PATTERN)
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)


class Credentials(SpecModel):
    """Where the provider key comes from.  Never inline: an env var (local) or a Secret (cluster)."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_ref: SecretKeyRef | None = Field(default=None, alias="secretRef")
    header: str = Field(
        default="Authorization",
        min_length=1,
        max_length=256,
        pattern=HEADER_TOKEN_PATTERN,
        description="Header that carries the key; `Authorization` sends `Bearer <key>`.",
    )

    @field_validator("header")
    @classmethod
    def _not_a_framing_header(cls, value: str) -> str:
        if value.lower() in FORBIDDEN_KEY_HEADERS:
            raise ValueError(
                f"{value!r} frames or routes the request and cannot carry a key; "
                "use Authorization, api-key, x-api-key or another header of the provider's"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Credentials:
        if (self.env is None) == (self.secret_ref is None):
            raise ValueError("set exactly one of credentials.env or credentials.secretRef")
        return self


class ProxyCredentials(SpecModel):
    """Where a provider's egress proxy credentials come from: ``user:password``, never inline."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_ref: SecretKeyRef | None = Field(default=None, alias="secretRef")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ProxyCredentials:
        if (self.env is None) == (self.secret_ref is None):
            raise ValueError(
                "set exactly one of proxyCredentials.env or proxyCredentials.secretRef"
            )
        return self


class Egress(SpecModel):
    """How this provider's endpoints are reached, overriding the sidecar's HTTPS_PROXY/NO_PROXY."""

    proxy: str = Field(
        pattern=r"^(direct|http://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?)$",
        description=(
            "`direct` (never through a proxy), or the forward proxy for every endpoint of "
            "this provider, `http://host:port` (https providers are tunnelled with CONNECT). "
            "No credentials in the URL: use proxyCredentials."
        ),
    )
    proxy_credentials: ProxyCredentials | None = Field(
        default=None,
        alias="proxyCredentials",
        description="`user:password` for the proxy (Proxy-Authorization: Basic).",
    )

    @model_validator(mode="after")
    def _credentials_need_a_proxy(self) -> Egress:
        if self.proxy == "direct" and self.proxy_credentials is not None:
            raise ValueError("egress.proxyCredentials is set but egress.proxy is `direct`")
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
    egress: Egress | None = Field(
        default=None,
        description="Omit to follow the sidecar's HTTPS_PROXY/HTTP_PROXY/NO_PROXY environment.",
    )
    health_check: HealthCheck | None = Field(
        default=None,
        alias="healthCheck",
        description="Probes of this provider's endpoints: the fields set here override the "
        "FailoverPolicy's (e.g. `http: {path: /models}`).",
    )

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
