"""The validating webhook enforces a namespace's provider-host allow-list (issue 13, item 6).

A cluster admin annotates a namespace with ``modelroute.io/allowed-provider-hosts``;
a ModelProvider there whose base URL names another host is refused at
``kubectl apply`` with the rule to ask for.  Driven through ``Service.validate``
(what the validating webhook calls) against kmock as the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from modelroute.operator.kube import KubeApi
from modelroute.operator.service import Service
from modelroute.proxy.kube_source import KubeConfig

from .helpers import Api, provider


@pytest.fixture
async def service(cluster: Any) -> AsyncIterator[Service]:
    async with aiohttp.ClientSession(base_url=str(cluster.url).rstrip("/")) as s:
        await Api(s).post(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": "locked",
                    "annotations": {
                        "modelroute.io/allowed-provider-hosts": "api.deepseek.com, 127.0.0.0/8"
                    },
                },
            },
        )
    async with KubeApi(KubeConfig.resolve()) as api:
        yield Service(api)


def _provider(ns: str, url: str) -> dict[str, Any]:
    body = provider(ns)
    for endpoint in body["spec"]["endpoints"]:
        endpoint["baseURL"] = url
    return body


async def test_a_provider_host_outside_the_namespace_list_is_refused(service: Service) -> None:
    errors = await service.validate(_provider("locked", "https://collector.evil.example/v1"))
    assert len(errors) == 2  # both endpoints
    assert "collector.evil.example" in errors[0]
    assert "modelroute.io/allowed-provider-hosts" in errors[0]


@pytest.mark.parametrize("url", ["https://api.deepseek.com/v1", "http://127.0.0.1:9/v1"])
async def test_a_listed_host_is_admitted(service: Service, url: str) -> None:
    assert await service.validate(_provider("locked", url)) == []


async def test_a_namespace_without_a_list_is_unrestricted(service: Service) -> None:
    assert await service.validate(_provider("default", "https://api.example.com/v1")) == []


async def test_a_metadata_base_url_is_refused_everywhere(service: Service) -> None:
    errors = await service.validate(_provider("default", "http://169.254.169.254/latest"))
    assert errors and "link-local or metadata" in errors[0]


async def test_admission_answers_name_no_other_providers(service: Service, cluster: Any) -> None:
    """Anyone who reaches the webhook port can POST a review for any namespace; the answer
    must not list that namespace's provider names (item 8)."""
    async with aiohttp.ClientSession(base_url=str(cluster.url).rstrip("/")) as s:
        await Api(s).namespace("victim")
        await Api(s).post(
            "/apis/modelroute.io/v1alpha1/namespaces/victim/modelproviders",
            provider("victim", "secret-gateway-eu"),
        )
    route = {
        "apiVersion": "modelroute.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "probe", "namespace": "victim"},
        "spec": {"models": ["x"], "targets": [{"provider": "secret-gateway", "model": "glm-5"}]},
    }
    errors = await service.validate(route)
    assert errors and "no ModelProvider named 'secret-gateway'" in errors[0]
    assert "secret-gateway-eu" not in " ".join(errors)
