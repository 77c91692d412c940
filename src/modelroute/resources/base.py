"""Shared plumbing for the resource models.

Kubernetes manifests are camelCase; Python is snake_case.  Every spec model
derives from :class:`SpecModel`, which accepts the camelCase names a user
writes in YAML (and, for convenience in code, the snake_case field names) and
refuses unknown fields, so a typo such as ``latencyBudgetMS`` is an error
that names the field instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_GROUP = "modelroute.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"


class SpecModel(BaseModel):
    """Base for every user-facing spec block: camelCase, strict about unknown keys."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The manifest form: camelCase keys, defaults left out where unset."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(BaseModel):
    """The part of Kubernetes ``metadata`` the compiler reads; the rest is kept but ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
