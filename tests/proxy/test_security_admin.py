"""The admin port split (issue 13, item 5): what any pod may read vs what only the pod's own.

``/status``, ``/metrics`` and the probes are for the operator's rollout gate,
Prometheus and the kubelet, so the injected sidecar serves them on the pod's
address (``--admin 0.0.0.0:15401``).  ``/explain`` lists route names, base URLs
and upstream error details: it gets a loopback listener of its own
(``--explain 127.0.0.1:15402``), and an admin listener that is not on loopback
never serves it.
"""

from __future__ import annotations

import aiohttp
import pytest
from modelroute.proxy.admin import is_loopback

from .conftest import ProxyFactory, provider_yaml, route_yaml

ROUTES = provider_yaml("p", [("r1", "http://127.0.0.1:9/v1")]) + route_yaml(
    "chat", ["chat"], ["{provider: p, model: deepseek-v4-flash}"]
)


async def test_explain_moves_to_its_own_listener(proxies: ProxyFactory) -> None:
    proxy = await proxies(ROUTES, explain=("127.0.0.1", 0))
    assert proxy.explain_url is not None and proxy.explain_url != proxy.admin_url
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics", "/status"):
            async with http.get(f"{proxy.admin_url}{path}") as resp:
                assert resp.status == 200, path
        async with http.get(f"{proxy.admin_url}/explain") as resp:
            assert resp.status == 404
        async with http.get(f"{proxy.explain_url}/explain") as resp:
            assert resp.status == 200
            assert "requests" in await resp.json()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
    ],
)
def test_only_a_loopback_admin_listener_serves_explain(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
