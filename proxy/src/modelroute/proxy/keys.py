"""The one spelling of the keys that name a target, a candidate and an endpoint.

``provider/model`` names a target (a route's model at one provider),
``provider/model@region`` a candidate (that target in one region: the unit
breakers, holds and the ``x-modelroute-target`` header speak of) and
``provider@region`` an endpoint (one base URL, shared by every model there:
region health and the connection pools).  Metric labels, ``/status``,
``/explain``, error messages and health state all meet on these strings, so
they are built here and nowhere else.
"""

from __future__ import annotations


def target_key(provider: str, model: str) -> str:
    """``provider/model``."""
    return f"{provider}/{model}"


def at_region(target: str, region: str) -> str:
    """A target key in one region: ``provider/model@region``."""
    return f"{target}@{region}"


def candidate_key(provider: str, model: str, region: str) -> str:
    """``provider/model@region``."""
    return f"{provider}/{model}@{region}"


def endpoint_key(provider: str, region: str) -> str:
    """``provider@region``."""
    return f"{provider}@{region}"


def split_candidate(candidate: str) -> tuple[str, str, str]:
    """``provider/model@region`` → (provider, model, region); the inverse of :func:`candidate_key`."""
    target, _, region = candidate.rpartition("@")
    provider, _, model = target.partition("/")
    return provider, model, region


def split_target(target: str) -> tuple[str, str]:
    """``provider/model`` → (provider, model); the inverse of :func:`target_key`."""
    provider, _, model = target.partition("/")
    return provider, model


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """``provider@region`` → (provider, region); the inverse of :func:`endpoint_key`."""
    provider, _, region = endpoint.rpartition("@")
    return provider, region
