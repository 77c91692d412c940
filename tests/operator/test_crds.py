"""The committed CRDs are exactly what the generator makes, and the examples satisfy them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from modelroute.operator import crdgen

ROOT = Path(__file__).resolve().parents[2]
KINDS = {
    "ModelRoute": "modelroutes.yaml",
    "ModelProvider": "modelproviders.yaml",
    "FailoverPolicy": "failoverpolicies.yaml",
}


def _schema(kind: str) -> dict[str, Any]:
    crd = crdgen.build_crds()[KINDS[kind]]
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("folder", ["crds", "charts/modelroute/crds"])
@pytest.mark.parametrize("name", sorted(KINDS.values()))
def test_committed_crd_matches_fresh_generation(folder: str, name: str) -> None:
    committed = (ROOT / folder / name).read_text()
    fresh = crdgen.render(crdgen.build_crds()[name])
    assert committed == fresh, f"{folder}/{name} is stale: run `modelroute crds --write`"


def _walk(node: Any) -> list[str]:
    bad: list[str] = []
    if isinstance(node, dict):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "prefixItems", "$defs"):
            if key in node:
                bad.append(key)
        for v in node.values():
            bad += _walk(v)
    elif isinstance(node, list):
        for v in node:
            bad += _walk(v)
    return bad


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schemas_are_structural(kind: str) -> None:
    assert _walk(_schema(kind)) == []


def test_crd_metadata() -> None:
    crds = crdgen.build_crds()
    route = crds["modelroutes.yaml"]["spec"]
    assert route["names"]["shortNames"] == ["mroute"]
    assert crds["failoverpolicies.yaml"]["spec"]["scope"] == "Cluster"
    for crd in crds.values():
        version = crd["spec"]["versions"][0]
        assert crd["spec"]["names"]["categories"] == ["modelroute"]
        assert version["subresources"] == {"status": {}}
        assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Ready", "Age"}
    rules = str(crds["modelproviders.yaml"])
    assert "has(self.env) != has(self.secretRef)" in rules


def _examples() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") in KINDS]
    return docs


@pytest.mark.parametrize("folder", ["crds", "charts/modelroute/crds"])
def test_the_api_server_would_accept_the_crds(folder: str) -> None:
    """Kubernetes' own CustomResourceDefinition schema (1.30), strict: unknown fields refused.

    Our schemas come from pydantic's JSON Schema 2020; the API server speaks
    OpenAPI 3.0, where e.g. an exclusive bound is ``minimum: 0`` plus
    ``exclusiveMinimum: true``. A CRD that only passes our own checks would be
    refused at ``kubectl apply -f crds/``.
    """
    paths = sorted((ROOT / folder).glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        for crd in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(crd, "1.30.0", strict=True)


def _validate(doc: dict[str, Any]) -> None:
    """Validate as the API server does: OpenAPI 3.0 schemas use draft-04 bounds."""
    jsonschema.Draft4Validator(_schema(doc["kind"])).validate(doc)


def test_examples_validate_against_generated_schema() -> None:
    examples = _examples()
    assert {d["kind"] for d in examples} == set(KINDS)
    for doc in examples:
        _validate(doc)


def test_schema_refuses_a_wrong_type() -> None:
    doc = next(d for d in _examples() if d["kind"] == "ModelRoute")
    bad = {**doc, "spec": {**doc["spec"], "latencyBudgetMs": "fast"}}
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad)


def test_schema_keeps_exclusive_bounds() -> None:
    """``gt=0`` in the model is ``> 0`` in the CRD: 0 refused at apply, 1 accepted."""
    doc = next(d for d in _examples() if d["kind"] == "ModelRoute")
    with pytest.raises(jsonschema.ValidationError, match="minimum"):
        _validate({**doc, "spec": {**doc["spec"], "latencyBudgetMs": 0}})
    _validate({**doc, "spec": {**doc["spec"], "latencyBudgetMs": 1}})
