"""What the injector must never do, whatever the pod or namespace says (issue 13).

* item 5: ``/explain`` (route names, base URLs, upstream errors) listens on the
  pod's loopback only; probes, ``/metrics`` and ``/status`` stay on the admin port;
* item 6: a namespace's ``modelroute.io/allowed-provider-hosts`` reaches the sidecar;
* item 8: ``hostNetwork`` pods are not injected; a ``modelroute.io/secrets`` entry
  that is no Secret name never becomes a mount path;
* item 9: the chart's Redis URL and password Secret reach the sidecar, the password
  through ``secretKeyRef`` only; a private CA bundle (ConfigMap or Secret) is mounted
  read-only and named by ``MODELROUTE_REDIS_CA_FILE`` (the sidecar's side:
  ``tests/budget/test_redis_tls.py``).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from modelroute.operator.injection import SIDECAR_NAME, InjectionSettings, build_patch
from modelroute.operator.mutation import settings_from_env

ENROLLED = {"modelroute.io/enabled": "true"}


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "namespace": "llm-apps"},
        "spec": {"containers": [{"name": "app", "image": "python:3.11-slim"}], **spec},
    }


def _inject(
    pod: dict[str, Any], annotations: dict[str, str] | None = None, **settings: Any
) -> dict[str, Any]:
    ops = build_patch(
        pod,
        namespace_labels=ENROLLED,
        namespace_annotations=annotations or {},
        server_version=(1, 30),
        settings=InjectionSettings(**settings),
    )
    out: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    kubernetes_validate.validate(out, "1.30.0", strict=True)
    return out


def _sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    [sidecar] = [c for c in pod["spec"].get("initContainers", []) if c["name"] == SIDECAR_NAME]
    return sidecar


def _arg(sidecar: dict[str, Any], flag: str) -> str:
    args: list[str] = sidecar["args"]
    return args[args.index(flag) + 1]


def test_explain_listens_on_loopback_and_probes_on_the_admin_port() -> None:
    sidecar = _sidecar(_inject(_pod()))
    assert _arg(sidecar, "--explain") == "127.0.0.1:15402"
    assert _arg(sidecar, "--admin") == "0.0.0.0:15401"
    assert _arg(sidecar, "--listen").startswith("127.0.0.1:")
    assert [p["containerPort"] for p in sidecar["ports"]] == [15401]  # nothing else exposed


def test_host_network_pods_are_not_injected() -> None:
    pod = _pod(hostNetwork=True)
    ops = build_patch(
        pod,
        namespace_labels=ENROLLED,
        namespace_annotations={},
        server_version=(1, 30),
        settings=InjectionSettings(),
    )
    assert ops == []


def test_a_secrets_annotation_entry_that_is_a_path_is_not_mounted() -> None:
    annotations = {"modelroute.io/secrets": "gw, ../../kubernetes.io/serviceaccount, /etc, Bad"}
    sidecar = _sidecar(_inject(_pod(), annotations))
    mounts = [m["mountPath"] for m in sidecar["volumeMounts"]]
    assert mounts == ["/etc/modelroute/table/", "/var/run/secrets/modelroute/gw/"]


def test_the_namespace_allow_list_reaches_the_sidecar() -> None:
    annotations = {"modelroute.io/allowed-provider-hosts": "api.deepseek.com,*.openai.com"}
    env = {e["name"]: e for e in _sidecar(_inject(_pod(), annotations))["env"]}
    assert env["MODELROUTE_ALLOWED_PROVIDER_HOSTS"]["value"] == "api.deepseek.com,*.openai.com"


def test_redis_url_and_password_secret_reach_the_sidecar() -> None:
    settings = settings_from_env(
        {
            "MODELROUTE_SIDECAR_REDIS_URL": "rediss://redis.modelroute-system.svc:6380/0",
            "MODELROUTE_SIDECAR_REDIS_PASSWORD_SECRET": "modelroute-redis",
            "MODELROUTE_SIDECAR_REDIS_PASSWORD_KEY": "redis-password",
        }
    )
    env = {e["name"]: e for e in _sidecar(_inject(_pod(), None, **vars(settings)))["env"]}
    assert env["MODELROUTE_REDIS_URL"]["value"] == "rediss://redis.modelroute-system.svc:6380/0"
    assert env["MODELROUTE_REDIS_PASSWORD"] == {
        "name": "MODELROUTE_REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "modelroute-redis", "key": "redis-password"}},
    }


def test_no_redis_configured_means_no_redis_env() -> None:
    env = {e["name"] for e in _sidecar(_inject(_pod()))["env"]}
    assert not env & {"MODELROUTE_REDIS_URL", "MODELROUTE_REDIS_PASSWORD"}


@pytest.mark.parametrize("kind", ["CONFIGMAP", "SECRET"])
def test_the_redis_ca_bundle_is_mounted_and_named_to_the_sidecar(kind: str) -> None:
    settings = settings_from_env(
        {
            "MODELROUTE_SIDECAR_REDIS_URL": "rediss://redis.modelroute-system.svc:6380/0",
            f"MODELROUTE_SIDECAR_REDIS_CA_{kind}": "redis-ca",
            "MODELROUTE_SIDECAR_REDIS_CA_KEY": "bundle.pem",
        }
    )
    pod = _inject(_pod(), None, **vars(settings))
    sidecar = _sidecar(pod)
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["MODELROUTE_REDIS_CA_FILE"]["value"] == "/etc/modelroute/redis-ca/ca.crt"
    [mount] = [m for m in sidecar["volumeMounts"] if m["name"] == "modelroute-redis-ca"]
    assert mount == {
        "name": "modelroute-redis-ca",
        "mountPath": "/etc/modelroute/redis-ca/",
        "readOnly": True,
    }
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "modelroute-redis-ca"]
    items = [{"key": "bundle.pem", "path": "ca.crt"}]
    if kind == "SECRET":
        assert volume["secret"] == {"secretName": "redis-ca", "optional": True, "items": items}
    else:
        assert volume["configMap"] == {"name": "redis-ca", "optional": True, "items": items}
    # the app container sees neither the CA nor its variable
    [app] = pod["spec"]["containers"]
    assert "volumeMounts" not in app
    assert "MODELROUTE_REDIS_CA_FILE" not in {e["name"] for e in app.get("env", [])}


def test_a_ca_bundle_without_a_redis_url_mounts_nothing() -> None:
    pod = _inject(_pod(), None, redis_ca_configmap="redis-ca")
    assert "modelroute-redis-ca" not in {v["name"] for v in pod["spec"]["volumes"]}
    assert "MODELROUTE_REDIS_CA_FILE" not in {e["name"] for e in _sidecar(pod)["env"]}
