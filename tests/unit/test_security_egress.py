"""baseURL as SSRF (issue 13, item 6): metadata and link-local addresses are no provider.

A ModelProvider author picks where the sidecar sends the namespace's provider
key, from the app pod's network identity.  Refused by default, at every layer:
the model (``modelroute validate``, the validating webhook; literal addresses
and the well-known metadata names) and the sidecar at connect time (a name that
*resolves* to such an address), plus a per-namespace allow-list of provider
hosts a cluster admin sets (annotation ``modelroute.io/allowed-provider-hosts``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from modelroute.proxy.upstream import ConnectionPool
from modelroute.proxy.upstream.guard import ConnectRefused, check_origin

from modelroute.resources import ResourceSet
from modelroute.resources.egress_rules import host_allowed, parse_allowed_hosts

Load = Callable[[str], ResourceSet]

PROVIDER = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {{name: p, namespace: default}}
spec:
  endpoints:
    - {{region: r, baseURL: "{url}"}}
"""


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://169.254.170.2/v2/credentials",  # ECS task credentials
        "http://[fe80::1]/v1",
        "http://[fd00:ec2::254]/latest",  # AWS IMDS over IPv6
        "http://100.100.100.200/latest/meta-data",  # Alibaba Cloud
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./v1",
        "http://metadata/v1",
        "https://kubernetes.default.svc/api/v1/secrets",
        "https://kubernetes.default/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://0xa9fea9fe/v1",  # 169.254.169.254 written as one hex number
        "http://2852039166/v1",  # and as one decimal number
    ],
)
def test_metadata_and_link_local_base_urls_are_refused(load: Load, url: str) -> None:
    rs = load(PROVIDER.format(url=url))
    assert not rs.providers, f"{url} must be refused"
    [problem] = rs.problems
    assert problem.field == "spec.endpoints[0].baseURL"
    assert "metadata" in problem.message or "link-local" in problem.message


@pytest.mark.parametrize(
    "url", ["https://api.deepseek.com/v1", "http://127.0.0.1:8080/v1", "http://10.0.0.5/v1"]
)
def test_ordinary_base_urls_still_load(load: Load, url: str) -> None:
    assert load(PROVIDER.format(url=url)).providers


def test_allow_list_patterns() -> None:
    allowed = parse_allowed_hosts("api.openai.com, *.deepseek.com ,10.0.0.0/8")
    assert host_allowed("api.openai.com", allowed)
    assert host_allowed("API.OpenAI.com.", allowed)
    assert host_allowed("eu.api.deepseek.com", allowed)
    assert not host_allowed("deepseek.com.evil.example", allowed)
    assert not host_allowed("api.openai.com.evil.example", allowed)
    assert host_allowed("10.1.2.3", allowed)
    assert not host_allowed("11.1.2.3", allowed)
    assert host_allowed("anything.example", parse_allowed_hosts(""))  # no list: no restriction


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/v1", "http://[fe80::1]/v1", "http://[::ffff:169.254.169.254]/v1"],
)
async def test_sidecar_refuses_to_connect_to_a_metadata_address(url: str) -> None:
    """Checked on what getaddrinfo returned, so a name that resolves there is refused too
    (a table the webhook never saw: hand-edited, or written before this check existed)."""
    pool = ConnectionPool(1, connect_timeout=1.0, keepalive=1.0)
    try:
        with pytest.raises(ConnectRefused, match="link-local or metadata"):
            await pool.post(url, "/chat/completions", b"{}", {})
    finally:
        pool.close()


def test_sidecar_enforces_the_namespace_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """What every attempt checks before it sends (attempt.py; NOT_SENT when refused)."""
    monkeypatch.setenv("MODELROUTE_ALLOWED_PROVIDER_HOSTS", "api.deepseek.com")
    with pytest.raises(ConnectRefused, match="allowed-provider-hosts"):
        check_origin("127.0.0.1")
    check_origin("api.deepseek.com")
    with pytest.raises(ConnectRefused, match="metadata"):
        check_origin("metadata.google.internal")


def test_a_changed_allow_list_is_judged_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-host verdict is cached (every attempt asks), but never across allow-lists."""
    monkeypatch.delenv("MODELROUTE_ALLOWED_PROVIDER_HOSTS", raising=False)
    check_origin("10.1.2.3")  # no allow-list: any host that is not metadata
    monkeypatch.setenv("MODELROUTE_ALLOWED_PROVIDER_HOSTS", "api.deepseek.com")
    with pytest.raises(ConnectRefused, match="allowed-provider-hosts"):
        check_origin("10.1.2.3")
    monkeypatch.setenv("MODELROUTE_ALLOWED_PROVIDER_HOSTS", "10.0.0.0/8")
    check_origin("10.1.2.3")
