"""Hold the live route table and swap it atomically.

Every request reads ``store.current`` once at its start and keeps that
object for its whole life, so a reload never changes the table under a
request in flight.  A new table is applied by one reference assignment (atomic
under the GIL); a bad one is refused and the last good table keeps serving,
with the reason kept for ``/status`` and the log.

Table *sources* (route files in local mode, a mounted ``table.json``, the
Kubernetes API watch) all feed :meth:`TableStore.offer_table` or
:meth:`TableStore.offer_json`; the store doesn't know where tables come from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .table import CompiledTable, TableError

log = logging.getLogger("modelroute.table")

Listener = Callable[[CompiledTable], None]


@dataclass(frozen=True, slots=True)
class RejectedTable:
    source: str
    reason: str
    at: float


class TableStore:
    def __init__(self, initial: CompiledTable | None = None) -> None:
        self._current = initial
        self.source = "initial" if initial else ""
        self.applied_at = time.time() if initial else 0.0
        self.last_rejected: RejectedTable | None = None
        self.reloads = 0
        self._listeners: list[Listener] = []

    @property
    def current(self) -> CompiledTable:
        if self._current is None:
            raise LookupError("no route table loaded yet")
        return self._current

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def subscribe(self, listener: Listener) -> None:
        """Called after each successful swap (e.g. to reset per-target state of removed targets)."""
        self._listeners.append(listener)

    def offer_table(self, table: CompiledTable, source: str) -> bool:
        """Apply a compiled table; returns False (and keeps the old one) if it is unchanged."""
        table = table if table.hash else table.sealed()
        if self._current is not None and self._current.hash == table.hash:
            return False
        previous = self._current
        self._current = table
        self.source = source
        self.applied_at = time.time()
        self.reloads += 1
        log.info(
            "route table %s applied from %s (%d routes, previous %s)",
            table.short_hash,
            source,
            len(table.routes),
            previous.short_hash if previous else "none",
        )
        for listener in self._listeners:
            listener(table)
        return True

    def offer_json(self, data: bytes | str, source: str) -> bool:
        """Parse, verify and apply a table document; a bad one is refused, the old one kept."""
        try:
            table = CompiledTable.from_json(data)
        except TableError as exc:
            self.reject(source, str(exc))
            return False
        return self.offer_table(table, source)

    def reject(self, source: str, reason: str) -> None:
        self.last_rejected = RejectedTable(source=source, reason=reason, at=time.time())
        log.error(
            "route table from %s refused, still serving %s: %s",
            source,
            self._current.short_hash if self._current else "nothing",
            reason,
        )
