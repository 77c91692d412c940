"""Typed reads of a Kubernetes object's metadata, spec and status.

Every object the operator handles came from the API or an admission review, so
any field may be missing, ``null`` or not an object at all.  These accessors are
the one place that knows it: they answer an empty mapping (or ``""``) instead of
raising, so callers read ``labels(ns)`` instead of repeating
``((ns or {}).get("metadata") or {}).get("labels") or {}`` and each copy getting
the ``None`` cases slightly differently.  Pure; no kopf, no HTTP.
"""

# No ``from __future__ import annotations`` here: it would bind the module name
# ``annotations`` that the accessor below needs (every annotation here is valid at runtime).
from collections.abc import Mapping
from typing import Any

Obj = Mapping[str, Any]

_EMPTY: Mapping[str, Any] = {}


def _mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is an object (a JSON mapping), else an empty one."""
    return value if isinstance(value, Mapping) else _EMPTY


def metadata(obj: object) -> Mapping[str, Any]:
    """``metadata``, or an empty mapping when the object (or its metadata) is missing."""
    return _mapping(_mapping(obj).get("metadata"))


def spec(obj: object) -> Mapping[str, Any]:
    return _mapping(_mapping(obj).get("spec"))


def status(obj: object) -> Mapping[str, Any]:
    return _mapping(_mapping(obj).get("status"))


def name(obj: object) -> str:
    """``metadata.name``; ``""`` when there is none."""
    return str(metadata(obj).get("name") or "")


def namespace(obj: object) -> str:
    """``metadata.namespace``; ``""`` for cluster-scoped objects (and when missing)."""
    return str(metadata(obj).get("namespace") or "")


def labels(obj: object) -> Mapping[str, str]:
    return _mapping(metadata(obj).get("labels"))


def annotations(obj: object) -> Mapping[str, str]:
    return _mapping(metadata(obj).get("annotations"))


def resource_version(obj: object) -> str:
    return str(metadata(obj).get("resourceVersion") or "")


def generation(obj: object) -> int | None:
    value = metadata(obj).get("generation")
    return value if isinstance(value, int) else None


def being_deleted(obj: object) -> bool:
    """``metadata.deletionTimestamp`` is set: the object is on its way out."""
    return bool(metadata(obj).get("deletionTimestamp"))
