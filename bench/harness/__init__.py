"""`make bench`: modelroute side by side with a bare aiohttp pass-through, nginx and LiteLLM.

Everything runs on this machine over loopback.  One fake upstream (fixed 20 ms
answer; streams of 50 content chunks, 1 ms apart) serves every target:

* ``direct``         - the load tool talks to the upstream itself (the baseline);
* ``bare``           - bench/bare_proxy.py, one pooled aiohttp ClientSession, no routing;
* ``modelroute``     - ``modelroute proxy`` with bench/routes.yaml (3-target chain, budget),
                       metrics on, tracing on (every span exported as OTLP/HTTP to a local
                       sink), one process;
* ``modelroute-sampled`` - the same with 1 % of traces sampled (standard OTEL_TRACES_SAMPLER
                       variables): the row issue 8's budget verdict uses;
* ``modelroute-w2``  - modelroute-sampled with ``--workers 2`` (only if the flag exists);
* ``nginx``          - Debian's nginx, one worker, keep-alive upstream, no buffering;
* ``litellm``        - LiteLLM's proxy (1.102.4, own venv), one worker, same fallback chain.

Cores: the process under test is pinned to core 0; the upstream, the OTLP sink
and every load tool to core 1 (``taskset``), so the proxy never shares its core
with the load.  The upstream's CPU use is recorded for each run, so a run where
the upstream (not the proxy) was the limit is visible.

Load tools: ``wrk`` (fixed concurrency, and paced load at about 200, 1,000 and
3,000 req/s via random think times; exact microsecond percentiles from its Lua
``done`` hook), and bench/stream_client.py for streaming.  All
are separate processes; nothing measures from inside the process under test.

Repetition: all targets run side by side, interleaved round by round (rep 1 of
every target, then rep 2 …) so machine drift hits all of them alike; the
figures are medians over rounds, and "added" figures are differences against
``direct`` measured in the same round.

Output: bench/results/latest.json (raw + summary) and bench/results/latest.md.

The package, one job a module (``python -m bench.harness`` runs it, as bench/run.sh does):

* :mod:`.config`   – paths, ports, the request body, the fixed knobs;
* :mod:`.procs`    – the processes it starts, and what they use (CPU, RSS, sockets:
                     psutil, not hand-parsed ``/proc``);
* :mod:`.targets`  – how each row is started (direct, bare, the modelroute rows, nginx, LiteLLM);
* :mod:`.load`     – load generation and measurement: wrk, paced wrk, streams, held connections;
* :mod:`.runner`   – the interleaved rounds, warm-up, settling, the feature checks;
* :mod:`.summary`  – medians over rounds, differences to direct and bare, the budgets;
* :mod:`.report`   – the machine, the Markdown table, warnings, docs/performance.md;
* :mod:`.__main__` – the command line.
"""
