"""Generate the CRD manifests from the pydantic resource models.

The CRDs are derived, never hand-written, so the schema the API server enforces
and the models the operator and sidecar parse with cannot drift apart.  Pydantic
emits JSON Schema with ``$ref``/``anyOf``; Kubernetes wants *structural* schemas,
so refs are inlined and ``X | None`` becomes ``nullable: true``.  Rules that a
structural schema cannot say (exactly-one-of, cross-field ordering) are CEL
``x-kubernetes-validations`` mirroring the models' own validators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from modelroute.resources import (
    API_GROUP,
    API_VERSION,
    FailoverPolicySpec,
    ProviderSpec,
    RouteSpec,
)
from modelroute.resources.provider import FORBIDDEN_KEY_HEADERS

# Keywords Kubernetes' structural-schema validator rejects or that carry no meaning there.
_DROP = {"title", "$defs", "const", "examples"}

# CEL rules keyed by the JSON-schema title of the object they guard (pydantic class name).
_CEL: dict[str, list[dict[str, str]]] = {
    "Credentials": [
        {
            "rule": "has(self.env) != has(self.secretRef)",
            "message": "set exactly one of credentials.env or credentials.secretRef",
        },
        {
            "rule": "!has(self.header) || !(self.header.lowerAscii() in ["
            + ", ".join(f"'{h}'" for h in FORBIDDEN_KEY_HEADERS)
            + "])",
            "message": "credentials.header frames or routes the request and cannot carry a key",
        },
    ],
    "Hedge": [
        {
            "rule": "has(self.afterMs) != has(self.percentile)",
            "message": "hedge: set exactly one of afterMs or percentile",
        }
    ],
    "Timeouts": [
        {
            "rule": "!has(self.firstByteMs) || !has(self.totalMs)"
            " || self.firstByteMs <= self.totalMs",
            "message": "timeouts.firstByteMs must not exceed timeouts.totalMs",
        }
    ],
    "Retry": [
        {
            "rule": "!has(self.baseBackoffMs) || !has(self.maxBackoffMs)"
            " || self.baseBackoffMs <= self.maxBackoffMs",
            "message": "retry.baseBackoffMs must not exceed retry.maxBackoffMs",
        }
    ],
    "Budget": [
        {
            "rule": "(has(self.usdPerHour) ? 1 : 0) + (has(self.usdPerDay) ? 1 : 0)"
            " + (has(self.usdPerMonth) ? 1 : 0) == 1",
            "message": "budget: set exactly one of usdPerHour, usdPerDay or usdPerMonth",
        }
    ],
}

_CONDITION: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
    },
}

_CONDITIONS: dict[str, Any] = {
    "type": "array",
    "items": _CONDITION,
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}

_ROUTE_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "conditions": _CONDITIONS,
        "observedGeneration": {"type": "integer"},
        "hash": {
            "type": "string",
            "description": "Hash of the namespace table this route compiled into.",
        },
        "models": {"type": "string", "description": "Model names captured (for printer columns)."},
        "primaryTarget": {
            "type": "string",
            "description": "provider/model of tier 0's first target.",
        },
        "activeTarget": {"type": "string"},
        "costUsd": {"type": "number"},
    },
}

_PROVIDER_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "conditions": _CONDITIONS,
        "observedGeneration": {"type": "integer"},
    },
}

_POLICY_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "conditions": _CONDITIONS,
        "observedGeneration": {"type": "integer"},
        "hash": {"type": "string", "description": "Hash of the policy spec being rolled out."},
        "phase": {"type": "string", "enum": ["Pending", "Progressing", "Complete", "Halted"]},
        "currentBatch": {"type": "integer"},
        "batchStartedAt": {"type": "number", "nullable": True},
        "healthySince": {"type": "number", "nullable": True},
        "message": {"type": "string"},
        "namespaces": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["namespace", "state"],
                "properties": {
                    "namespace": {"type": "string"},
                    "batch": {"type": "integer"},
                    "state": {
                        "type": "string",
                        "enum": ["pending", "applied", "healthy", "rolledBack"],
                    },
                    "hash": {"type": "string"},
                    "previousHash": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and turn pydantic's JSON Schema into a Kubernetes structural schema."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return walk(merged)
        title = node.get("title")
        out: dict[str, Any] = {}
        any_of = node.get("anyOf")
        if any_of is not None:
            non_null = [s for s in any_of if s.get("type") != "null"]
            if len(non_null) != 1:
                raise ValueError(f"cannot express anyOf {any_of!r} structurally")
            out.update(walk(non_null[0]))
            if len(non_null) != len(any_of):
                out["nullable"] = True
        for key, value in node.items():
            if key in _DROP or key == "anyOf":
                continue
            if key == "properties":
                out[key] = {k: walk(v) for k, v in value.items()}
            elif key in {"items", "additionalProperties"}:
                if value is False:
                    continue  # extra="forbid": pruning already refuses unknown fields
                out[key] = walk(value)
            elif key == "prefixItems" or (key == "default" and value is None):
                continue
            elif key in _EXCLUSIVE_BOUND and not isinstance(value, bool):
                # JSON Schema 2020 (pydantic's gt/lt) says `exclusiveMinimum: 0`; the API
                # server speaks OpenAPI 3.0 and refuses the CRD unless it reads
                # `minimum: 0, exclusiveMinimum: true`
                out[_EXCLUSIVE_BOUND[key]] = value
                out[key] = True
            else:
                out[key] = walk(value)
        if out.get("type") == "array" and "items" not in out:
            out["items"] = {"type": "string"}
        if isinstance(title, str) and title in _CEL and out.get("type") == "object":
            out["x-kubernetes-validations"] = _CEL[title]
        return out

    return walk({k: v for k, v in schema.items() if k != "$defs"})  # type: ignore[no-any-return]


_EXCLUSIVE_BOUND = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}


def _spec_schema(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def _crd(
    kind: str,
    plural: str,
    scope: str,
    spec_model: type[BaseModel],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
    short_names: list[str],
) -> dict[str, Any]:
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "categories": ["modelroute"],
    }
    if short_names:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": scope,
            "names": names,
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *columns,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(spec_model),
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def _ready(path: str = '.status.conditions[?(@.type=="Ready")].status') -> dict[str, Any]:
    return {"name": "Ready", "type": "string", "jsonPath": path}


def build_crds() -> dict[str, dict[str, Any]]:
    """All three CRDs keyed by their file name."""
    return {
        "modelroutes.yaml": _crd(
            "ModelRoute",
            "modelroutes",
            "Namespaced",
            RouteSpec,
            _ROUTE_STATUS,
            [
                {"name": "Models", "type": "string", "jsonPath": ".status.models"},
                {"name": "Primary", "type": "string", "jsonPath": ".status.primaryTarget"},
                _ready(),
            ],
            ["mroute"],
        ),
        "modelproviders.yaml": _crd(
            "ModelProvider",
            "modelproviders",
            "Namespaced",
            ProviderSpec,
            _PROVIDER_STATUS,
            [_ready()],
            ["mprovider"],
        ),
        "failoverpolicies.yaml": _crd(
            "FailoverPolicy",
            "failoverpolicies",
            "Cluster",
            FailoverPolicySpec,
            _POLICY_STATUS,
            [
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Batch", "type": "integer", "jsonPath": ".status.currentBatch"},
                _ready(),
            ],
            ["mfailover"],
        ),
    }


HEADER = "# Generated by `modelroute crds --write` from the pydantic models; do not edit.\n"


def render(crd: dict[str, Any]) -> str:
    """Stable YAML text for one CRD (the committed files are compared byte for byte)."""
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)


def write_all(dirs: list[Path]) -> list[Path]:
    """Write every CRD into each directory; returns the paths written."""
    written: list[Path] = []
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        for name, crd in build_crds().items():
            path = d / name
            path.write_text(render(crd))
            written.append(path)
    return written
