"""Sidecar injection as a pure function: AdmissionReview pod in, JSON patch out.

Kept free of kopf so the whole decision (enrolled? opted out? already injected?
native sidecar or not?) is testable with plain dicts, and the kopf handler in
``mutation.py`` stays a few lines of glue.  The patch is RFC 6902 because that
is what the API server applies for a mutating webhook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelroute.proxy.tail_sampling import ENV as TAIL_RATIO_ENV

from . import objects

ENABLED_LABEL = "modelroute.io/enabled"
INJECT_ANNOTATION = "modelroute.io/inject"
INJECTED_ANNOTATION = "modelroute.io/injected"
ADMIN_PORT_ANNOTATION = "modelroute.io/admin-port"
SECRETS_ANNOTATION = "modelroute.io/secrets"
SIDECAR_NAME = "modelroute-proxy"
TABLE_CONFIGMAP = "modelroute-table"
TABLE_VOLUME = "modelroute-table"
TABLE_DIR = "/etc/modelroute/table"
SECRETS_DIR = "/var/run/secrets/modelroute"
REDIS_CA_VOLUME = "modelroute-redis-ca"
REDIS_CA_DIR = "/etc/modelroute/redis-ca"
REDIS_CA_FILE = f"{REDIS_CA_DIR}/ca.crt"
BASE_URL_ENV = "OPENAI_BASE_URL"
ALLOWED_HOSTS_ANNOTATION = "modelroute.io/allowed-provider-hosts"
# a Secret name (DNS-1123 subdomain): the annotation's names become mount paths
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

Patch = list[dict[str, Any]]


class Decision(StrEnum):
    """What the injector did with one pod CREATE review (the operator's metrics count these)."""

    INJECTED = "injected"
    REINVOKED = "reinvoked"  # ours already (reinvocationPolicy): only OPENAI_BASE_URL added
    NOT_ENROLLED = "skipped_not_enrolled"
    OPTED_OUT = "skipped_opted_out"  # modelroute.io/inject: "false"
    HOST_NETWORK = "skipped_host_network"
    OWN_SIDECAR = "skipped_own_sidecar"  # the template brings a modelroute-proxy itself
    # the two the webhook's glue decides when it cannot read the namespace (mutation.py)
    UNCHECKED = "admitted_unchecked"  # failurePolicy Ignore: admitted without the sidecar
    REFUSED = "refused"  # failurePolicy Fail: the pod is not created


@dataclass(frozen=True)
class TracingSettings:
    """OpenTelemetry for injected sidecars (chart ``sidecar.tracing``), as the sidecar reads it.

    The sidecar takes the standard ``OTEL_*`` variables (``proxy/tracing.py``) and
    ``MODELROUTE_TRACES_TAIL_RATIO`` (``proxy/tail_sampling.py``); these are their
    values.  No endpoint means no tracing: nothing is written at all, so the sidecar
    does not even import the SDK.
    """

    endpoint: str = ""  # OTEL_EXPORTER_OTLP_ENDPOINT: the collector's OTLP/HTTP base URL
    protocol: str = "http/protobuf"  # the one the sidecar ships (it logs any other)
    sampler: str = ""  # OTEL_TRACES_SAMPLER; "" leaves the SDK's default
    sampler_arg: str = ""  # OTEL_TRACES_SAMPLER_ARG
    tail_ratio: str = ""  # MODELROUTE_TRACES_TAIL_RATIO: tail decisions instead of the sampler
    service_name: str = ""  # OTEL_SERVICE_NAME; "" keeps the sidecar's "modelroute"
    resource_attributes: str = ""  # OTEL_RESOURCE_ATTRIBUTES (k=v,...), after the pod's own
    # OTEL_EXPORTER_OTLP_HEADERS from this Secret's key in the pod's namespace (a collector's
    # credentials): through secretKeyRef, so the value is never in the pod spec or the operator
    headers_secret: str = ""
    headers_key: str = "headers"

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)


# the pod's identity on its spans, from the downward-API variables the sidecar gets first
# (kubelet expands $(VAR) from variables defined earlier in the list)
POD_RESOURCE_ATTRIBUTES = "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)"


@dataclass(frozen=True)
class InjectionSettings:
    """What the operator was configured with (chart values → operator flags)."""

    image: str = "ghcr.io/modelroute/modelroute:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    proxy_port: int = 15400
    admin_port: int = 15401  # probes, /metrics, /status: on the pod's address
    explain_port: int = 15402  # /explain: loopback only (docs/security.md)
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "50m", "memory": "64Mi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"memory": "256Mi"})
    run_as_user: int = 65532
    # Secrets every sidecar mounts, in addition to the namespace's own list
    # (annotation ``modelroute.io/secrets``).  See docs/injection.md.
    secrets: Sequence[str] = ()
    # shared route budgets (docs/budgets.md): the Redis URL, and the Secret (in the pod's
    # namespace) holding its password, read through secretKeyRef, never put in the spec
    redis_url: str = ""
    redis_password_secret: str = ""
    redis_password_key: str = "password"
    # a private CA for a rediss:// URL: a ConfigMap (or Secret) of this name in the pod's
    # namespace, its ``redis_ca_key`` mounted as the sidecar's --redis-ca-file
    redis_ca_configmap: str = ""
    redis_ca_secret: str = ""
    redis_ca_key: str = "ca.crt"
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @property
    def redis_ca(self) -> bool:
        """A CA bundle is mounted (only with a Redis URL: alone it would be used by nothing)."""
        return bool(self.redis_url and (self.redis_ca_configmap or self.redis_ca_secret))


def parse_version(version: Mapping[str, Any] | str) -> tuple[int, int]:
    """(major, minor) from a /version document or a "v1.30.2" string.

    Managed clusters report minors such as "29+", so only the leading digits count.
    """
    if isinstance(version, str):
        m = re.match(r"v?(\d+)\.(\d+)", version)
        if not m:
            raise ValueError(f"unparseable server version {version!r}")
        return int(m.group(1)), int(m.group(2))
    major = re.match(r"\d+", str(version.get("major", "")))
    minor = re.match(r"\d+", str(version.get("minor", "")))
    if not major or not minor:
        return parse_version(str(version.get("gitVersion", "")))
    return int(major.group(0)), int(minor.group(0))


def supports_native_sidecars(version: tuple[int, int]) -> bool:
    """Init containers with restartPolicy Always are on by default from 1.29."""
    return version >= (1, 29)


def enrolled_pod(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """Enrolled namespace, no opt-out on the pod, and not on the node's network.

    A ``hostNetwork`` pod would put the sidecar's key-spending port (and its admin
    port) on the node's address, where every pod of the node reaches it.
    """
    return _not_enrolled_reason(pod, namespace_labels) is None


def _not_enrolled_reason(
    pod: Mapping[str, Any], namespace_labels: Mapping[str, str]
) -> Decision | None:
    if namespace_labels.get(ENABLED_LABEL) != "true":
        return Decision.NOT_ENROLLED
    if objects.spec(pod).get("hostNetwork"):
        return Decision.HOST_NETWORK
    if objects.annotations(pod).get(INJECT_ANNOTATION) == "false":
        return Decision.OPTED_OUT
    return None


def decide(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> Decision:
    """Which of :func:`build_patch`'s branches this pod takes, named for the metrics."""
    skipped = _not_enrolled_reason(pod, namespace_labels)
    if skipped is not None:
        return skipped
    if _has_sidecar(pod):
        if objects.annotations(pod).get(INJECTED_ANNOTATION) == "true":
            return Decision.REINVOKED
        return Decision.OWN_SIDECAR
    return Decision.INJECTED


def _has_sidecar(pod: Mapping[str, Any]) -> bool:
    spec = objects.spec(pod)
    names = [c.get("name") for c in (spec.get("containers") or [])]
    names += [c.get("name") for c in (spec.get("initContainers") or [])]
    return SIDECAR_NAME in names


def _base_url_ops(spec: Mapping[str, Any], settings: InjectionSettings) -> Patch:
    """``OPENAI_BASE_URL`` for every app container that doesn't set it (never the sidecar)."""
    base_url = f"http://127.0.0.1:{settings.proxy_port}/v1"
    ops: Patch = []
    for i, container in enumerate(spec.get("containers") or []):
        if container.get("name") == SIDECAR_NAME:
            continue
        env = container.get("env")
        if env and any(e.get("name") == BASE_URL_ENV for e in env):
            continue  # the app chose its own endpoint (or got ours already); respect it
        entry = {"name": BASE_URL_ENV, "value": base_url}
        if env:
            ops.append({"op": "add", "path": f"/spec/containers/{i}/env/-", "value": entry})
        else:
            ops.append({"op": "add", "path": f"/spec/containers/{i}/env", "value": [entry]})
    return ops


def secret_names(
    namespace_annotations: Mapping[str, str], settings: InjectionSettings
) -> list[str]:
    """Operator-wide secrets plus the namespace's comma-separated annotation, deduplicated."""
    names = list(settings.secrets)
    raw = namespace_annotations.get(SECRETS_ANNOTATION, "")
    names += [n.strip() for n in raw.split(",") if n.strip()]
    # a name that is no Secret name ("../x") would become a mount path elsewhere: skipped
    return list(dict.fromkeys(n for n in names if len(n) <= 253 and _SECRET_NAME.match(n)))


def _secret_volume(name: str) -> str:
    # Volume names are DNS labels (<= 63); secret names may be longer subdomains.
    return ("mr-secret-" + name.replace(".", "-"))[:63].rstrip("-")


def _sidecar_env(settings: InjectionSettings, allowed_hosts: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if allowed_hosts:
        env.append({"name": "MODELROUTE_ALLOWED_PROVIDER_HOSTS", "value": allowed_hosts})
    if settings.redis_url:
        env.append({"name": "MODELROUTE_REDIS_URL", "value": settings.redis_url})
        if settings.redis_password_secret:
            ref = {"name": settings.redis_password_secret, "key": settings.redis_password_key}
            env.append({"name": "MODELROUTE_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": ref}})
        if settings.redis_ca:
            env.append({"name": "MODELROUTE_REDIS_CA_FILE", "value": REDIS_CA_FILE})
    env += tracing_env(settings.tracing)
    return env


def tracing_env(tracing: TracingSettings) -> list[dict[str, Any]]:
    """The sidecar's ``OTEL_*`` (and tail ratio) variables; none when tracing is off."""
    if not tracing.enabled:
        return []
    attributes = POD_RESOURCE_ATTRIBUTES
    if tracing.resource_attributes:
        attributes += "," + tracing.resource_attributes
    values = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": tracing.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": tracing.protocol,
        "OTEL_SERVICE_NAME": tracing.service_name,
        "OTEL_RESOURCE_ATTRIBUTES": attributes,
        # with a tail ratio the sidecar decides at each request's end and never asks the
        # head sampler (it would log that it ignores one): so none is written then
        "OTEL_TRACES_SAMPLER": "" if tracing.tail_ratio else tracing.sampler,
        "OTEL_TRACES_SAMPLER_ARG": "" if tracing.tail_ratio else tracing.sampler_arg,
        TAIL_RATIO_ENV: tracing.tail_ratio,
    }
    env: list[dict[str, Any]] = [
        {"name": name, "value": value} for name, value in values.items() if value
    ]
    if tracing.headers_secret:
        # optional: a namespace without the Secret still starts its pods; their spans go
        # without the headers (and the collector may refuse them) rather than the app not at all
        ref = {"name": tracing.headers_secret, "key": tracing.headers_key, "optional": True}
        env.append({"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom": {"secretKeyRef": ref}})
    return env


def redis_ca_volume(settings: InjectionSettings) -> dict[str, Any]:
    """The CA bundle's volume: one key of a ConfigMap or Secret, as ``ca.crt``.

    Optional, like the table's: a namespace that lacks the object still gets a pod
    that starts, and the sidecar says in ``/status`` that the CA file can't be read
    (shared budgets off, per-pod enforcement on) rather than the app never starting.
    """
    items = [{"key": settings.redis_ca_key, "path": "ca.crt"}]
    if settings.redis_ca_secret:
        source = {"secretName": settings.redis_ca_secret, "optional": True, "items": items}
        return {"name": REDIS_CA_VOLUME, "secret": source}
    source = {"name": settings.redis_ca_configmap, "optional": True, "items": items}
    return {"name": REDIS_CA_VOLUME, "configMap": source}


def sidecar_container(
    settings: InjectionSettings, secrets: Sequence[str], native: bool, allowed_hosts: str = ""
) -> dict[str, Any]:
    """The proxy container; probes hit the admin port so kubelet sees its health."""
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelroute"],
        "args": [
            "proxy",
            "--kube",
            "--table-file",
            f"{TABLE_DIR}/table.json",
            "--listen",
            f"127.0.0.1:{settings.proxy_port}",
            "--admin",
            f"0.0.0.0:{settings.admin_port}",
            "--explain",
            f"127.0.0.1:{settings.explain_port}",
            "--secrets-dir",
            SECRETS_DIR,
        ],
        "env": _sidecar_env(settings, allowed_hosts),
        "ports": [{"name": "mr-admin", "containerPort": settings.admin_port, "protocol": "TCP"}],
        "resources": {"requests": dict(settings.requests), "limits": dict(settings.limits)},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": settings.admin_port},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": settings.admin_port},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": TABLE_VOLUME, "mountPath": TABLE_DIR + "/", "readOnly": True},
            *(
                {"name": _secret_volume(s), "mountPath": f"{SECRETS_DIR}/{s}/", "readOnly": True}
                for s in secrets
            ),
            *(
                [{"name": REDIS_CA_VOLUME, "mountPath": REDIS_CA_DIR + "/", "readOnly": True}]
                if settings.redis_ca
                else []
            ),
        ],
    }
    if native:
        container["restartPolicy"] = "Always"
    return container


def _pointer(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def build_patch(
    pod: Mapping[str, Any],
    *,
    namespace_labels: Mapping[str, str],
    namespace_annotations: Mapping[str, str],
    server_version: tuple[int, int],
    settings: InjectionSettings,
) -> Patch:
    """The JSON patch that injects the sidecar, or [] when nothing is to be done.

    A pod that already has the sidecar (a re-invocation after another webhook
    added containers: ``reinvocationPolicy: IfNeeded``) only gets
    ``OPENAI_BASE_URL`` into the containers that lack it.
    """
    decision = decide(pod, namespace_labels)
    spec = objects.spec(pod)
    if decision is Decision.REINVOKED:  # ours, from the first invocation
        return _base_url_ops(spec, settings)
    if decision is not Decision.INJECTED:  # not ours to touch (its own sidecar included)
        return []
    metadata = objects.metadata(pod)
    native = supports_native_sidecars(server_version)
    secrets = secret_names(namespace_annotations, settings)
    patch: Patch = []

    volumes: list[dict[str, Any]] = [
        {
            "name": TABLE_VOLUME,
            "configMap": {
                "name": TABLE_CONFIGMAP,
                "optional": True,
                "items": [{"key": "table.json", "path": "table.json"}],
            },
        },
        *(
            {"name": _secret_volume(s), "secret": {"secretName": s, "optional": True}}
            for s in secrets
        ),
        *([redis_ca_volume(settings)] if settings.redis_ca else []),
    ]
    if "volumes" in spec and spec["volumes"] is not None:
        patch += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    else:
        patch.append({"op": "add", "path": "/spec/volumes", "value": volumes})

    allowed = namespace_annotations.get(ALLOWED_HOSTS_ANNOTATION, "")
    sidecar = sidecar_container(settings, secrets, native, allowed)
    if native:
        # First among the init containers, so the proxy is up before any
        # later init container (e.g. a migration) that calls a model.
        if spec.get("initContainers"):
            patch.append({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})
        else:
            patch.append({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})

    patch += _base_url_ops(spec, settings)

    if not native:
        # Appended after the app containers so the indices above stay valid.
        patch.append({"op": "add", "path": "/spec/containers/-", "value": sidecar})

    new_annotations = {
        INJECTED_ANNOTATION: "true",
        ADMIN_PORT_ANNOTATION: str(settings.admin_port),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(settings.admin_port),
        "prometheus.io/path": "/metrics",
    }
    # A label too, because PodMonitors (and kubectl -l) select on labels only.
    if metadata.get("labels") is None:
        label: dict[str, Any] = {"path": "/metadata/labels", "value": {INJECTED_ANNOTATION: "true"}}
    else:
        label = {"path": f"/metadata/labels/{_pointer(INJECTED_ANNOTATION)}", "value": "true"}
    patch.append({"op": "add", **label})
    existing = metadata.get("annotations")
    if existing is None:
        patch.append({"op": "add", "path": "/metadata/annotations", "value": new_annotations})
    else:
        for key, value in new_annotations.items():
            # "add" replaces an existing member, so this is also right for re-injection.
            patch.append(
                {"op": "add", "path": f"/metadata/annotations/{_pointer(key)}", "value": value}
            )
    return patch
