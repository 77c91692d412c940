"""Turn manifests (YAML files, or the dicts the Kubernetes API returns) into typed resources.

Local mode and the operator both come through here, so "what works on a
laptop works in the cluster": the YAML that ``kubectl apply`` takes is the
YAML ``modelroute proxy --routes`` reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .base import GROUP_VERSION
from .policy import FailoverPolicy
from .problems import Problem, Reason
from .provider import ModelProvider
from .route import ModelRoute

Resource = ModelProvider | ModelRoute | FailoverPolicy

_KINDS: dict[str, type[ModelProvider] | type[ModelRoute] | type[FailoverPolicy]] = {
    "ModelProvider": ModelProvider,
    "ModelRoute": ModelRoute,
    "FailoverPolicy": FailoverPolicy,
}


@dataclass
class ResourceSet:
    """Everything one namespace's table is compiled from (plus the cluster-wide policies)."""

    providers: list[ModelProvider] = field(default_factory=list)
    routes: list[ModelRoute] = field(default_factory=list)
    policies: list[FailoverPolicy] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Manifests of other API groups met on the way (a Deployment next to the routes):
    # not ours to judge, so skipped and listed rather than refused.
    skipped: list[str] = field(default_factory=list)

    def add(self, resource: Resource) -> None:
        if isinstance(resource, ModelProvider):
            self.providers.append(resource)
        elif isinstance(resource, ModelRoute):
            self.routes.append(resource)
        else:
            self.policies.append(resource)

    def extend(self, other: ResourceSet) -> None:
        self.providers.extend(other.providers)
        self.routes.extend(other.routes)
        self.policies.extend(other.policies)
        self.problems.extend(other.problems)
        self.skipped.extend(other.skipped)


def describe(manifest: Mapping[str, Any], fallback: str) -> str:
    """``ModelRoute default/general`` – how problems name a manifest."""
    kind = manifest.get("kind", "resource")
    meta = manifest.get("metadata")
    if isinstance(meta, Mapping) and meta.get("name"):
        ns = meta.get("namespace")
        return f"{kind} {ns}/{meta['name']}" if ns else f"{kind} {meta['name']}"
    return f"{kind} ({fallback})"


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_problems(error: ValidationError, where: str) -> list[Problem]:
    """Pydantic's errors, one :class:`Problem` each, with the manifest's own field names."""
    errors = error.errors(include_url=False)
    locs = [
        tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        for err in errors
    ]
    problems = []
    for err, loc in zip(errors, locs, strict=True):
        if err["type"] == "too_short" and any(
            len(other) > len(loc) and other[: len(loc)] == loc for other in locs
        ):
            # Pydantic also reports "should have at least 1 item … not 0" for a list whose
            # only items failed; the user wrote an item, so the item's own error is the news.
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; fields are camelCase)"
        problems.append(Problem(where=where, field=_field_path(loc), message=msg))
    return problems


def parse_manifest(manifest: Any, where: str) -> Resource | list[Problem]:
    """One manifest dict to a typed resource, or the problems that stop it."""
    if not isinstance(manifest, Mapping):
        return [
            Problem(where, "", "expected a mapping (a Kubernetes manifest)", Reason.PARSE_ERROR)
        ]
    kind = manifest.get("kind")
    name = describe(manifest, where)
    if manifest.get("apiVersion") != GROUP_VERSION:
        return [
            Problem(
                name,
                "apiVersion",
                f"expected {GROUP_VERSION!r}, got {manifest.get('apiVersion')!r}",
                Reason.PARSE_ERROR,
            )
        ]
    model = _KINDS.get(str(kind))
    if model is None:
        return [
            Problem(
                name,
                "kind",
                f"unknown kind {kind!r}; expected one of {', '.join(_KINDS)}",
                Reason.PARSE_ERROR,
            )
        ]
    clean = {k: v for k, v in manifest.items() if k != "status"}
    try:
        return model.model_validate(clean)
    except ValidationError as exc:
        return validation_problems(exc, name)


def _foreign(manifest: Any) -> bool:
    """A well-formed manifest of another API group (not a broken one of ours)."""
    if not isinstance(manifest, Mapping) or not manifest.get("kind"):
        return False
    api = str(manifest.get("apiVersion") or "")
    return bool(api) and not api.startswith(GROUP_VERSION.split("/")[0] + "/")


def _not_a_manifest(manifest: Any) -> bool:
    """YAML that can't be one of ours: no ``kind`` and no ``modelroute.io`` apiVersion.

    A tool's config file, or a ``Chart.yaml`` (``apiVersion: v2``, no kind).  One
    of ours that lost its ``kind`` still has our apiVersion, and is judged.
    """
    if not isinstance(manifest, Mapping):
        return True
    api = str(manifest.get("apiVersion") or "")
    return not manifest.get("kind") and not api.startswith(GROUP_VERSION.split("/")[0] + "/")


def parse_manifests(
    manifests: Iterable[Any], source: str, *, skip_non_manifests: bool = False
) -> ResourceSet:
    """Typed resources and problems; ``skip_non_manifests`` for files found by walking a directory.

    A file the user named is judged in full.  In a directory walk, YAML that is
    no Kubernetes object at all is listed as skipped instead: ``validate .``
    in a repository meets CI configs and tool settings that were never meant
    for us.
    """
    out = ResourceSet()
    for index, manifest in enumerate(manifests):
        if manifest is None:  # empty YAML document (a trailing ---)
            continue
        if isinstance(manifest, Mapping) and manifest.get("kind") == "List":
            out.extend(parse_manifests(manifest.get("items") or [], source))
            continue
        where = f"{source} document {index + 1}"
        if _foreign(manifest):
            out.skipped.append(f"{describe(manifest, where)} ({manifest.get('apiVersion')})")
            continue
        if skip_non_manifests and _not_a_manifest(manifest):
            out.skipped.append(f"{where} (not a Kubernetes manifest)")
            continue
        result = parse_manifest(manifest, where)
        if isinstance(result, list):
            out.problems.extend(result)
        else:
            out.add(result)
    return out


def load_text(
    text: str, source: str = "<string>", *, skip_non_manifests: bool = False
) -> ResourceSet:
    # imported here, where YAML is read: a sidecar serving a compiled table never reads any
    import yaml

    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source} line {mark.line + 1}" if mark is not None else source
        return ResourceSet(
            problems=[Problem(where, "", f"not valid YAML: {exc}", Reason.PARSE_ERROR)]
        )
    return parse_manifests(docs, source, skip_non_manifests=skip_non_manifests)


def manifest_files(root: Path) -> list[Path]:
    """The ``*.yaml``/``*.yml`` files under a directory, sorted, hidden names left out.

    Hidden names are skipped because a ConfigMap or Secret mounted as a volume
    shows every file twice – ``routes.yaml`` (a symlink) and the real file in
    the hidden ``..2026_…`` directory it points to – which would define every
    resource twice; and ``.git``, ``.venv`` or editor lock files are never
    manifests.  Symlinked directories are not followed (no loops, no doubles).
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath) / name
            for name in filenames
            if not name.startswith(".") and name.endswith((".yaml", ".yml"))
        )
    return sorted(found)


def load_files(paths: Iterable[str | Path]) -> ResourceSet:
    """Read every file (a directory means the *.yaml and *.yml files under it, sorted)."""
    out = ResourceSet()
    for raw in paths:
        path = Path(raw)
        walked = path.is_dir()
        files = manifest_files(path) if walked else [path]
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as exc:
                out.problems.append(
                    Problem(str(file), "", f"cannot read: {exc.strerror}", Reason.PARSE_ERROR)
                )
                continue
            out.extend(load_text(text, str(file), skip_non_manifests=walked))
    return out
