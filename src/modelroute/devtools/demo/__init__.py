"""``modelroute demo``: fake providers in three regions, a proxy, a scripted workload, an outage.

Why it exists: the claims modelroute makes – the cheap model serves the
simple majority, ``model: "auto"`` finds the category, a region outage costs
no request, residency holds through failover, cost is counted – can be seen
in twenty seconds on a laptop, with no API key and no cluster.

Nothing here is simulated inside the proxy: it is the real sidecar
(:func:`~modelroute.proxy.process.start_proxy`) on free 127.0.0.1 ports, in
front of real HTTP fakes (:mod:`modelroute.devtools.fake_provider`), driven over HTTP with
``aiohttp`` (a runtime dependency, so the demo works on a plain install).

* **Topology** – ``modelroute/examples/demo.yaml`` is a normal route file
  whose ``baseURL`` s are placeholders named ``<provider>_<region>``; one
  fake is started per placeholder, with the provider family's speed plus
  the region's distance (:mod:`.topology`).
* **Workload** – :func:`script` (:mod:`.workload`): a fixed, open-loop schedule (a request every
  ``1/rate`` s whatever the answers do, as real users behave), mostly
  ``model: "auto"``, with prompts of every category and some streams.
* **Outage** – at ``down_at`` every fake in ``down`` region starts resetting
  connections; at ``back_at`` (if set) it serves again (:mod:`.run`).
* **Measurement** – the client's own view (status, headers, latency, whether
  the answer was complete: :mod:`.client`), the proxy's attempt records (an
  observer on the running proxy, joined by ``x-request-id``:
  :mod:`.attempt_log`), and its ``/metrics`` – polled while running for
  ejections and open circuits, scraped at the end for cost (:mod:`.watch`).
* **Result** – :mod:`.records` holds the per-request facts, :mod:`.categories`
  and :mod:`.failover` what they add up to, :mod:`.result` the whole.

:func:`run_demo` returns a :class:`DemoResult`; ``modelroute.cli.demo``
renders it.  Every server is stopped before :func:`run_demo` returns.
"""

from .categories import CategorySummary
from .failover import FailoverSummary, Fallback
from .options import DemoOptions
from .records import Attempt, HealthEvent, RequestResult
from .result import DemoResult
from .run import run_demo
from .stats import percentile
from .workload import CATEGORIES, Step, script

__all__ = [
    "CATEGORIES",
    "Attempt",
    "CategorySummary",
    "DemoOptions",
    "DemoResult",
    "FailoverSummary",
    "Fallback",
    "HealthEvent",
    "RequestResult",
    "Step",
    "percentile",
    "run_demo",
    "script",
]
