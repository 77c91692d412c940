"""The custom resources (group ``modelroute.io``, version ``v1alpha1``) as pydantic models.

Pure data and validation: nothing here imports aiohttp, kopf or a Kubernetes
client, so the operator, the sidecar and the CLI share one definition and the
CRD schemas are generated from it.
"""

from .base import API_GROUP, API_VERSION, GROUP_VERSION, ObjectMeta, SpecModel
from .catalogue import BUILTIN_BY_NAME, BUILTIN_CATALOGUE, Capability, CatalogueModel
from .classifier import ClassifierSpec
from .endpoint_health import HealthCheck, HttpProbe, OutlierDetection
from .loader import Resource, ResourceSet, load_files, load_text, parse_manifest, parse_manifests
from .policy import Ejection, FailoverPolicy, FailoverPolicySpec, LabelSelector, Rollout
from .problems import Problem, Reason, Severity
from .provider import (
    Credentials,
    Egress,
    Endpoint,
    ModelProvider,
    ProviderSpec,
    ProxyCredentials,
    SecretKeyRef,
)
from .route import (
    Budget,
    BudgetAction,
    CircuitBreaker,
    ConnectRacing,
    FailureKind,
    Hedge,
    Mirror,
    ModelRoute,
    Residency,
    Retry,
    RouteSpec,
    Sticky,
    Target,
    Timeouts,
)

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "BUILTIN_BY_NAME",
    "BUILTIN_CATALOGUE",
    "GROUP_VERSION",
    "Budget",
    "BudgetAction",
    "Capability",
    "CatalogueModel",
    "CircuitBreaker",
    "ClassifierSpec",
    "ConnectRacing",
    "Credentials",
    "Egress",
    "Ejection",
    "Endpoint",
    "FailoverPolicy",
    "FailoverPolicySpec",
    "FailureKind",
    "HealthCheck",
    "Hedge",
    "HttpProbe",
    "LabelSelector",
    "Mirror",
    "ModelProvider",
    "ModelRoute",
    "ObjectMeta",
    "OutlierDetection",
    "Problem",
    "ProviderSpec",
    "ProxyCredentials",
    "Reason",
    "Residency",
    "Resource",
    "ResourceSet",
    "Retry",
    "Rollout",
    "RouteSpec",
    "SecretKeyRef",
    "Severity",
    "SpecModel",
    "Sticky",
    "Target",
    "Timeouts",
    "load_files",
    "load_text",
    "parse_manifest",
    "parse_manifests",
]
