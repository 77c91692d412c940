"""Provider keys: read from an env var (local mode) or a mounted Secret file (in cluster).

Keys live only here and in the upstream request headers; they never reach
logs, metrics, spans or error bodies (errors name the *source* of a missing
key, never a value).  Mounted Secret files are re-read when their mtime
changes, so a rotated Secret is picked up without a restart.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .table import KeySource

DEFAULT_SECRETS_DIR = Path("/var/run/secrets/modelroute")


class MissingCredentials(Exception):
    """No key available for a provider; the message names where it was looked for."""


class Credentials:
    def __init__(
        self, secrets_dir: Path = DEFAULT_SECRETS_DIR, recheck_seconds: float = 5.0
    ) -> None:
        self.secrets_dir = secrets_dir
        self.recheck_seconds = recheck_seconds
        self._files: dict[Path, tuple[float, float, str]] = {}  # path -> (checked_at, mtime, value)

    def key_for(self, source: KeySource) -> str:
        if source.env is not None:
            # stripped like a Secret file: a Secret made with `--from-file` of an `echo`ed key
            # and exposed through `secretKeyRef` carries a trailing newline into the variable,
            # which would otherwise end up inside the Authorization header
            value = os.environ.get(source.env, "").strip()
            if not value:
                raise MissingCredentials(f"environment variable {source.env} is not set")
            return value
        assert source.secret_ref is not None
        name, key = source.secret_ref.name, source.secret_ref.key
        if not _plain_name(name) or not _plain_name(key):
            raise MissingCredentials(
                f"Secret {name!r} key {key!r} names a path outside the secrets directory"
            )
        return self._read_file(self.secrets_dir / name / key, name, key)

    def _read_file(self, path: Path, secret: str, key: str) -> str:
        now = time.monotonic()
        cached = self._files.get(path)
        if cached is not None and now - cached[0] < self.recheck_seconds:
            return cached[2]
        try:
            # symlinks are followed only within the secrets directory (kubelet's layout is
            # key -> ..data/key -> ..<timestamp>/key); one pointing elsewhere is someone's
            # attempt to send a file of the pod (its ServiceAccount token) upstream
            if not path.resolve().is_relative_to(self.secrets_dir.resolve()):
                raise MissingCredentials(
                    f"Secret {secret!r} key {key!r} resolves outside the secrets directory"
                )
            mtime = path.stat().st_mtime
            if cached is not None and cached[1] == mtime:
                self._files[path] = (now, mtime, cached[2])
                return cached[2]
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MissingCredentials(
                f"Secret {secret!r} key {key!r} is not mounted at {path} ({exc.strerror})"
            ) from None
        if not value:
            raise MissingCredentials(f"Secret {secret!r} key {key!r} is empty")
        self._files[path] = (now, mtime, value)
        return value

    def headers_for(self, source: KeySource | None) -> dict[str, str]:
        if source is None:
            return {}
        key = self.key_for(source)
        if source.header.lower() == "authorization":
            return {"Authorization": f"Bearer {key}"}
        return {source.header: key}


def _plain_name(part: str) -> bool:
    """One path component that stays where it is joined: no separator, not "." or ".."."""
    return bool(part) and "/" not in part and "\0" not in part and part not in (".", "..")
