"""Hostile ModelProvider specs are refused where they are written (issue 13, items 1, 6, 7).

The same pydantic models back ``modelroute validate``, the validating webhook and
the generated CRD schema, so each refusal here is checked against both the
parser and the CRD's own ``openAPIV3Schema`` (what the API server enforces even
with the webhook down).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml
from modelroute.operator import crdgen

from modelroute.resources import ResourceSet

Load = Callable[[str], ResourceSet]

PROVIDER = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: p, namespace: default}
spec:
  endpoints:
    - {region: us-east, baseURL: "https://api.example.com/v1"}
"""


def _crd_schema() -> dict[str, Any]:
    crd = crdgen.build_crds()["modelproviders.yaml"]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _crd_refuses(text: str) -> bool:
    """By the CRD's patterns and bounds (draft-04, as the API server reads OpenAPI 3.0)."""
    doc = yaml.safe_load(text)
    try:
        jsonschema.Draft4Validator(_crd_schema()).validate(doc)
    except jsonschema.ValidationError:
        return True
    return False


def _credentials_cel() -> str:
    creds = _crd_schema()["properties"]["spec"]["properties"]["credentials"]
    return " ".join(r["rule"] for r in creds.get("x-kubernetes-validations", []))


def _refused_field(load: Load, text: str) -> str:
    rs = load(text)
    assert not rs.providers, "the manifest should be refused"
    assert len(rs.problems) == 1, [str(p) for p in rs.problems]
    return rs.problems[0].field or ""


# -- item 1: a secretRef must name a Secret and a key, never a path ---------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("../kubernetes.io/serviceaccount", "token"),
        ("/etc", "passwd"),
        ("..", "token"),
        ("gw/../../x", "k"),
        ("Gateway", "k"),  # not a DNS-1123 subdomain: no Secret can have that name
        ("gw", "../../kubernetes.io/serviceaccount/token"),
        ("gw", "a/b"),
        ("gw", ".."),
        ("gw", "."),
    ],
)
def test_secret_ref_that_is_a_path_is_refused(load: Load, name: str, key: str) -> None:
    text = PROVIDER + f'  credentials: {{secretRef: {{name: "{name}", key: "{key}"}}}}\n'
    field = _refused_field(load, text)
    assert field.startswith("spec.credentials.secretRef."), field
    assert _crd_refuses(text), "the CRD schema must refuse it too"


@pytest.mark.parametrize(("name", "key"), [("gw", "api-key"), ("a.b-c", "KEY_1.txt")])
def test_ordinary_secret_refs_still_load(load: Load, name: str, key: str) -> None:
    text = PROVIDER + f"  credentials: {{secretRef: {{name: {name}, key: {key}}}}}\n"
    assert load(text).providers
    assert not _crd_refuses(text)


# -- item 7: the key's header is a header name, and not one that frames the request ------


@pytest.mark.parametrize(
    "header",
    [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "TE",
        "Upgrade",
        "Proxy-Authorization",
        "Trailer",
        "Content-Type",
        "X-Key\r\nX-Injected",
        "X Key",
        "X-Key:",
        "",
    ],
)
def test_credential_header_must_be_a_safe_token(load: Load, header: str) -> None:
    text = PROVIDER + f'  credentials: {{env: KEY, header: "{header}"}}\n'
    field = _refused_field(load, text)
    assert field == "spec.credentials.header", field
    # a name that is a token but frames the request is refused by a CEL rule (RE2, which the
    # API server's patterns use, has no look-ahead), whose list is the model's own
    assert _crd_refuses(text) or header.lower() in _credentials_cel()


@pytest.mark.parametrize("header", ["Authorization", "api-key", "x-api-key", "X-Goog-Api-Key"])
def test_usual_key_headers_still_load(load: Load, header: str) -> None:
    text = PROVIDER + f"  credentials: {{env: KEY, header: {header}}}\n"
    assert load(text).providers
    assert not _crd_refuses(text)
