"""Problems found in resources, phrased so a person knows what to fix.

One type serves three audiences: ``modelroute validate`` prints them, the
operator turns them into status conditions and events, and the validating
webhook returns them to ``kubectl apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Reason(StrEnum):
    """Machine-readable reasons; they become ``status.conditions[].reason``."""

    INVALID_SPEC = "InvalidSpec"
    UNKNOWN_PROVIDER = "UnknownProvider"
    UNKNOWN_MODEL = "UnknownModel"
    UNKNOWN_REGION = "UnknownRegion"
    MISSING_CAPABILITY = "MissingCapability"
    RESIDENCY_UNSATISFIABLE = "ResidencyUnsatisfiable"
    DUPLICATE_ALIAS = "DuplicateAlias"
    DUPLICATE_NAME = "DuplicateName"
    UNPRICED_MODEL = "UnpricedModel"
    PARSE_ERROR = "ParseError"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one resource.

    ``field`` is a dotted path into the manifest (``spec.targets[1].model``),
    ``where`` names the resource (``ModelRoute default/general``) or the file.
    """

    where: str
    field: str
    message: str
    reason: Reason = Reason.INVALID_SPEC
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        loc = f"{self.where}: {self.field}" if self.field else self.where
        return f"{self.severity.value}: {loc}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR
