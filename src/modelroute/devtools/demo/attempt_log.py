"""The proxy's own records of each demo request, joined to the client's by ``x-request-id``."""

from __future__ import annotations

from dataclasses import dataclass

from modelroute.proxy.events import AttemptRecord as ProxyAttempt
from modelroute.proxy.events import RequestRecord, ShadowRecord


@dataclass
class Trace:
    """What the proxy recorded for one request: kept only once the request has finished."""

    attempts: list[ProxyAttempt]
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None


class AttemptLog:
    """An observer on the running proxy: the attempts behind each demo request.

    The client only sees the target that finally served and the attempt
    count; where a request fell back *from* is known to the proxy alone.
    """

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self.traces: dict[str, Trace] = {}

    def request_started(self, record: RequestRecord, headers: dict[str, str]) -> None:
        rid = headers.get("x-request-id")
        if rid is not None:
            self._ids[id(record)] = rid

    def attempt_started(self, record: RequestRecord, attempt: ProxyAttempt) -> None:
        pass

    def attempt_finished(self, record: RequestRecord, attempt: ProxyAttempt) -> None:
        pass

    def request_finished(self, record: RequestRecord) -> None:
        rid = self._ids.pop(id(record), None)
        if rid is not None:
            self.traces[rid] = Trace(
                list(record.attempts), record.cost_usd, record.input_tokens, record.output_tokens
            )

    def shadow_finished(self, record: ShadowRecord) -> None:
        pass
