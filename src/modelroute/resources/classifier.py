"""The ``classifier:`` block of a ``ModelRoute`` (rules for ``model: auto``)."""

from __future__ import annotations

from .base import SpecModel


class ClassifierSpec(SpecModel):
    """Declarative rules of the pre-classifier; every field has the product default."""
