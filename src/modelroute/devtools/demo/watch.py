"""Reading the proxy's ``/metrics``: polled while running, parsed once at the end.

Why poll: ejections and open circuits are states that come and go during the
outage; only a scrape every 0.1 s sees when the proxy took a region out of
rotation and when it let it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .records import HealthEvent


class HealthWatch:
    """Polls ``/metrics`` like a fast Prometheus and notes when regions and circuits change."""

    def __init__(self, session: aiohttp.ClientSession, url: str, t0: float) -> None:
        self.session = session
        self.url = url
        self.t0 = t0
        self.events: list[HealthEvent] = []
        self._regions: dict[tuple[str, str], bool] = {}
        self._circuits: dict[tuple[str, str, str, str], bool] = {}

    async def run(self, interval: float) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                await self.scrape()
            await asyncio.sleep(interval)

    async def scrape(self) -> str:
        async with self.session.get(self.url) as response:
            text = await response.text()
        now = time.perf_counter() - self.t0
        for family in text_string_to_metric_families(text):
            if family.name == "modelroute_region_ejected":
                for s in family.samples:
                    key = (s.labels["provider"], s.labels["region"])
                    out = s.value != 0
                    if self._regions.get(key, False) != out:
                        kind = "ejected" if out else "readmitted"
                        self.events.append(HealthEvent(now, kind, *key))
                    self._regions[key] = out
            elif family.name == "modelroute_circuit_state":
                for s in family.samples:
                    labels = s.labels
                    ckey = (labels["route"], labels["provider"], labels["model"], labels["region"])
                    out = s.value != 0  # open or half-open: not taking ordinary traffic
                    if self._circuits.get(ckey, False) != out:
                        kind = "circuit_open" if out else "circuit_closed"
                        self.events.append(
                            HealthEvent(now, kind, ckey[1], ckey[3], route=ckey[0], model=ckey[2])
                        )
                    self._circuits[ckey] = out
        return text


def metric_sums(text: str) -> tuple[dict[str, float], list[tuple[str, str, str, str, float]]]:
    """Requests by outcome and fallbacks by (route, from, to, reason) from one scrape."""
    outcomes: Counter[str] = Counter()
    fallbacks: list[tuple[str, str, str, str, float]] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "modelroute_requests_total":
                outcomes[s.labels["outcome"]] += int(s.value)
            elif s.name == "modelroute_fallbacks_total" and s.value:
                lab = s.labels
                fallbacks.append(
                    (lab["route"], lab["from_model"], lab["to_model"], lab["reason"], s.value)
                )
    return {k: float(v) for k, v in sorted(outcomes.items())}, sorted(fallbacks)
