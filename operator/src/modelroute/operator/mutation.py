"""The kopf mutating webhook that injects the sidecar into pods of enrolled namespaces.

Glue only: the decision and the patch live in ``injection.py`` (pure, tested with
real AdmissionReview JSON).  Settings come from the environment the chart sets
on the operator Deployment, so the chart's values are the single source.

The webhook is served by kopf at ``/<handler id>`` = ``/inject-sidecar``; the
chart's MutatingWebhookConfiguration points there.

Namespace labels and annotations are not part of an AdmissionReview, so this
replica's :class:`~.namespaces.NamespaceView` supplies them: its own watch (not
kopf's, which peering pauses on a standby replica), the API when the view can't
say, and when the API can't either the configured failure policy decides, as
the API server would had we not answered.
The server version is not in the review either: helm knows it at install time
(``.Capabilities.KubeVersion``) and passes it as ``MODELROUTE_KUBE_VERSION``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jsonpatch
import kopf

from modelroute.operator.injection import (
    Decision,
    InjectionSettings,
    TracingSettings,
    build_patch,
    decide,
    parse_version,
)
from modelroute.operator.kube import API_FAILURES
from modelroute.operator.metrics import OperatorMetrics
from modelroute.operator.namespaces import NamespaceView

FAILURE_POLICY_ENV = "MODELROUTE_INJECTION_FAILURE_POLICY"


def settings_from_env(env: Mapping[str, str] = os.environ) -> InjectionSettings:
    """Read the sidecar settings the chart renders into the operator's environment."""
    defaults = InjectionSettings()
    return InjectionSettings(
        image=env.get("MODELROUTE_SIDECAR_IMAGE", defaults.image),
        image_pull_policy=env.get("MODELROUTE_SIDECAR_PULL_POLICY", defaults.image_pull_policy),
        proxy_port=int(env.get("MODELROUTE_SIDECAR_PROXY_PORT", defaults.proxy_port)),
        admin_port=int(env.get("MODELROUTE_SIDECAR_ADMIN_PORT", defaults.admin_port)),
        requests=json.loads(env["MODELROUTE_SIDECAR_REQUESTS"])
        if "MODELROUTE_SIDECAR_REQUESTS" in env
        else defaults.requests,
        limits=json.loads(env["MODELROUTE_SIDECAR_LIMITS"])
        if "MODELROUTE_SIDECAR_LIMITS" in env
        else defaults.limits,
        secrets=tuple(
            s.strip() for s in env.get("MODELROUTE_SIDECAR_SECRETS", "").split(",") if s.strip()
        ),
        explain_port=int(env.get("MODELROUTE_SIDECAR_EXPLAIN_PORT", defaults.explain_port)),
        redis_url=env.get("MODELROUTE_SIDECAR_REDIS_URL", ""),
        redis_password_secret=env.get("MODELROUTE_SIDECAR_REDIS_PASSWORD_SECRET", ""),
        redis_password_key=env.get(
            "MODELROUTE_SIDECAR_REDIS_PASSWORD_KEY", defaults.redis_password_key
        ),
        redis_ca_configmap=env.get("MODELROUTE_SIDECAR_REDIS_CA_CONFIGMAP", ""),
        redis_ca_secret=env.get("MODELROUTE_SIDECAR_REDIS_CA_SECRET", ""),
        redis_ca_key=env.get("MODELROUTE_SIDECAR_REDIS_CA_KEY") or defaults.redis_ca_key,
        tracing=tracing_from_env(env),
    )


def tracing_from_env(env: Mapping[str, str]) -> TracingSettings:
    """The chart's ``sidecar.tracing``, as ``MODELROUTE_SIDECAR_OTEL_*`` on the operator."""
    defaults = TracingSettings()
    return TracingSettings(
        endpoint=env.get("MODELROUTE_SIDECAR_OTEL_ENDPOINT", "").strip(),
        protocol=env.get("MODELROUTE_SIDECAR_OTEL_PROTOCOL") or defaults.protocol,
        sampler=env.get("MODELROUTE_SIDECAR_OTEL_SAMPLER", ""),
        sampler_arg=env.get("MODELROUTE_SIDECAR_OTEL_SAMPLER_ARG", ""),
        tail_ratio=env.get("MODELROUTE_SIDECAR_TRACES_TAIL_RATIO", ""),
        service_name=env.get("MODELROUTE_SIDECAR_OTEL_SERVICE_NAME", ""),
        resource_attributes=env.get("MODELROUTE_SIDECAR_OTEL_RESOURCE_ATTRIBUTES", ""),
        headers_secret=env.get("MODELROUTE_SIDECAR_OTEL_HEADERS_SECRET", "").strip(),
        headers_key=env.get("MODELROUTE_SIDECAR_OTEL_HEADERS_KEY") or defaults.headers_key,
    )


@kopf.on.mutate("pods", id="inject-sidecar", operations={"CREATE"})
async def inject_sidecar(
    body: kopf.Body,
    patch: kopf.Patch,
    namespace: str | None,
    memo: kopf.Memo,
    warnings: list[str],
    **_: Any,
) -> None:
    """Hand the pod to the pure injector and let kopf turn the result into its JSON patch."""
    view: NamespaceView = memo.namespaces
    counted: OperatorMetrics = memo.metrics
    ns = namespace or ""
    try:
        found = await view.lookup(ns)
    except API_FAILURES as exc:
        # This replica can't know whether the namespace is enrolled.  Admitting the pod
        # bare would defeat residency and budgets, so do what the API server does when
        # the webhook can't be reached: refuse under Fail, admit (and say so) under Ignore.
        why = f"could not read namespace {ns} to decide on sidecar injection: {exc}"
        if os.environ.get(FAILURE_POLICY_ENV, "Ignore") == "Fail":
            counted.count_injection(Decision.REFUSED)
            raise kopf.AdmissionError(why, code=503) from exc
        counted.count_injection(Decision.UNCHECKED)
        warnings.append(f"{why}; admitted without the modelroute sidecar (failurePolicy Ignore)")
        return
    labels, annotations = found or ({}, {})
    decision = decide(body, labels)
    ops = build_patch(
        dict(body),
        namespace_labels=labels,
        namespace_annotations=annotations,
        server_version=parse_version(os.environ.get("MODELROUTE_KUBE_VERSION", "v1.29.0")),
        settings=settings_from_env(),
    )
    counted.count_injection(decision)  # once the patch exists: a build that raised injected nothing
    if ops:
        patch.fns.append(lambda raw: jsonpatch.apply_patch(raw, ops, in_place=True))
