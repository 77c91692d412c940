"""Where the sidecar's route table comes from, besides the Kubernetes watch (``kube_source.py``).

* :class:`RouteFilesSource` – local mode: the same YAML a user would
  ``kubectl apply``, compiled in-process with the operator's compiler, and
  re-compiled when a file changes.  A bad edit is refused with the reason
  logged and shown on ``/status``; the last good table keeps serving.
* :class:`TableFileSource` – a compiled ``table.json`` on disk, in the
  cluster the mounted copy of the ``modelroute-table`` ConfigMap: the
  fallback when the API server is unreachable, and a way to run a table the
  operator produced.  Given ``defer_to`` (the Kubernetes source's
  ``connected``), a change of the file is ignored while the API watch is live:
  the kubelet syncs the mount up to a minute behind the API, so the file can
  only hold an older table then – applying it would, for instance, bring back
  a table the operator has just rolled back.

Both poll file mtimes (a second by default): cheap, works on ConfigMap
volume symlink swaps, needs no inotify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from modelroute.resources import load_files
from modelroute.resources.loader import manifest_files

from .compiler import compile_local
from .table import CompiledTable
from .tablestore import TableStore

log = logging.getLogger("modelroute.sources")


class ConfigError(Exception):
    """The configuration can't be used at start-up; the message says what to fix."""


def _stamp(paths: Sequence[Path]) -> tuple[tuple[str, float, int], ...]:
    """mtime and size of every file read: a directory's own mtime misses in-place edits."""
    out = []
    files = [f for q in paths for f in ([q, *manifest_files(q)] if q.is_dir() else [q])]
    for p in files:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_mtime, st.st_size))
        except OSError:
            out.append((str(p), -1.0, -1))
    return tuple(out)


def compile_route_files(paths: Sequence[Path]) -> CompiledTable:
    """Load and compile route files; raise :class:`ConfigError` listing every problem."""
    resources = load_files(paths)
    result = compile_local(resources)
    errors = result.errors  # the compiler carries the loader's problems too
    if errors:
        problems = "\n  ".join(str(p) for p in errors)
        raise ConfigError(f"the routes in {', '.join(map(str, paths))} have errors:\n  {problems}")
    for problem in result.problems:
        log.warning("%s", problem)  # only warnings are left here
    return result.table


class _Poller:
    def __init__(self, store: TableStore, paths: Sequence[Path], interval: float) -> None:
        self.store = store
        self.paths = list(paths)
        self.interval = interval
        self._stamp = _stamp(self.paths)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{type(self).__name__}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            stamp = _stamp(self.paths)
            if stamp != self._stamp and self.may_reload():
                self._stamp = stamp
                self.reload()

    def may_reload(self) -> bool:
        """False to leave a change for a later poll (it is seen again until applied)."""
        return True

    def reload(self) -> None:
        raise NotImplementedError


class RouteFilesSource(_Poller):
    @property
    def source(self) -> str:
        return "files:" + ",".join(str(p) for p in self.paths)

    def load_initial(self) -> None:
        """Compile once at start; a bad file here stops the proxy with the reason."""
        self.store.offer_table(compile_route_files(self.paths), self.source)

    def reload(self) -> None:
        try:
            table = compile_route_files(self.paths)
        except ConfigError as exc:
            self.store.reject(self.source, str(exc))
            return
        self.store.offer_table(table, self.source)


class TableFileSource(_Poller):
    def __init__(
        self,
        store: TableStore,
        path: Path,
        interval: float = 1.0,
        defer_to: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(store, [path], interval)
        self.path = path
        # while this says True a fresher source (the API watch) is live: a file change
        # waits, and is applied if the watch goes away before the file changes back
        self.defer_to = defer_to
        self._deferring = False

    @property
    def source(self) -> str:
        return f"file:{self.path}"

    def load_initial(self) -> bool:
        """Serve the file if it is there and valid; False (logged) if not – the watch may fill in."""
        if not self.path.exists():
            log.warning("table file %s does not exist (yet)", self.path)
            return False
        self.reload()
        return self.store.loaded

    def may_reload(self) -> bool:
        if self.defer_to is not None and self.defer_to():
            if not self._deferring:
                log.info(
                    "table file %s changed; not applied while the API watch is live", self.path
                )
            self._deferring = True
            return False
        self._deferring = False
        return True

    def reload(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            self.store.reject(self.source, f"cannot read {self.path}: {exc.strerror}")
            return
        self.store.offer_json(data, self.source)
