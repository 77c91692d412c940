"""What an idle sidecar keeps in memory: only what it needs before traffic arrives.

Issue 8 bounds the idle RSS of ``modelroute proxy`` with tracing on.  The
OTLP/HTTP exporter (requests, urllib3, charset-normalizer, protobuf: ~6 MB) is
built when the first batch of spans is exported, ``modelroute proxy`` imports
no other sub-command's code, and the resource models don't import PyYAML until
YAML is read.  These are checked in a fresh interpreter, where ``sys.modules``
shows what was really imported; spans must still reach the collector.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

import orjson
import pytest
from modelroute.proxy.tracing import DeferredOTLPExporter, tracing_from_env
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelroute.cli import main

from ..otlp import otlp_receiver

EXPORTER_MODULES = (
    "requests",
    "urllib3",
    "google.protobuf",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)
# what `modelroute proxy` must not load: other sub-commands and the layers above the proxy
NOT_THE_PROXY = (
    "modelroute.cli.demo",
    "modelroute.cli.report",
    "modelroute.cli.operator",
    "modelroute.proxy.costreport",
    "modelroute.devtools",
    "modelroute.operator",
    "kopf",
)

# The sidecar's start-up path in a fresh interpreter: the CLI as `modelroute proxy` builds
# it, the process module it imports, the tracing Proxy.__init__ builds; then one span.
SIDECAR = f"""
import json, sys
from modelroute.cli import build_parser, command_module
build_parser(command_module(["proxy", "--routes", "routes.yaml"]))
import modelroute.proxy.process
from modelroute.proxy.tracing import tracing_from_env

def loaded(names):
    return sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))

obs = tracing_from_env()
idle = loaded({EXPORTER_MODULES!r})
others = loaded({NOT_THE_PROXY!r})
span = obs.tracer.start_span("first request")
span.end()
flushed = obs.provider.force_flush(10_000)
after = loaded({EXPORTER_MODULES!r})
obs.shutdown()
print(json.dumps({{"idle": idle, "others": others, "flushed": flushed, "after": after}}))
"""


def otlp_env(endpoint: str) -> dict[str, str]:
    """The bench's tracing settings (standard OTEL_* only), exporting to ``endpoint``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT="5",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="lazy-sidecar",
        NO_PROXY="127.0.0.1,localhost",  # a CI proxy must not swallow loopback
        no_proxy="127.0.0.1,localhost",
    )
    return env


async def python(code: str, env: dict[str, str]) -> bytes:
    """Run ``code`` in a fresh interpreter (bounded in time) and return its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return out


async def test_idle_sidecar_loads_no_exporter_until_spans_are_exported() -> None:
    async with otlp_receiver() as collector:
        out = await python(SIDECAR, otlp_env(collector.url))

    result = orjson.loads(out.splitlines()[-1])
    assert result["idle"] == [], "the OTLP exporter was imported before any span was exported"
    assert result["others"] == [], "`modelroute proxy` imported code it never runs"
    assert result["flushed"] is True
    assert set(EXPORTER_MODULES) <= set(result["after"])
    assert [span.name for _, span in collector.spans()] == ["first request"]


async def test_resource_models_import_yaml_only_to_read_yaml() -> None:
    code = (
        "import sys\n"
        "from modelroute.resources import load_text\n"
        "print('yaml' in sys.modules)\n"
        "rs = load_text('apiVersion: modelroute.io/v1alpha1\\nkind: ModelProvider\\n"
        'metadata: {name: a}\\nspec: {endpoints: [{region: r, baseURL: "http://127.0.0.1:1/v1"}]}\\n\')\n'
        "print('yaml' in sys.modules, [p.message for p in rs.problems], len(rs.providers))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    lines = (await python(code, env)).decode().splitlines()
    assert lines == ["False", "True [] 1"]


async def test_an_in_cluster_sidecar_never_loads_yaml() -> None:
    """--kube / --table-file read JSON and a service account: PyYAML (~0.9 MB) stays out."""
    code = (
        "import sys\n"
        "from modelroute.cli import build_parser, command_module\n"
        "build_parser(command_module(['proxy', '--kube']))\n"
        "import modelroute.proxy.process, modelroute.proxy.kube_source\n"
        "print('yaml' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    assert (await python(code, env)).decode().split() == ["False"]


# -- DeferredOTLPExporter on its own: the contract the batch processor relies on ----------


def counting(build: Callable[[], SpanExporter]) -> tuple[Callable[[], SpanExporter], list[int]]:
    calls: list[int] = []

    def counted() -> SpanExporter:
        calls.append(1)
        return build()

    return counted, calls


def spans(n: int = 1) -> Sequence[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for i in range(n):
        provider.get_tracer("t").start_span(f"s{i}").end()
    return memory.get_finished_spans()


def test_shutdown_and_flush_before_any_export_never_build_the_exporter() -> None:
    build, calls = counting(InMemorySpanExporter)
    deferred = DeferredOTLPExporter(build)
    assert deferred.force_flush() is True
    deferred.shutdown()
    assert calls == []
    assert deferred.export(spans()) is SpanExportResult.FAILURE  # shut down: nothing sent
    assert calls == []


def test_first_export_builds_once_and_later_calls_reach_the_real_exporter() -> None:
    inner = InMemorySpanExporter()
    build, calls = counting(lambda: inner)
    deferred = DeferredOTLPExporter(build)
    assert not deferred.built
    assert deferred.export(spans(2)) is SpanExportResult.SUCCESS
    assert deferred.export(spans(1)) is SpanExportResult.SUCCESS
    assert calls == [1] and deferred.built
    assert [s.name for s in inner.get_finished_spans()] == ["s0", "s1", "s0"]
    deferred.shutdown()
    assert inner.export(spans()) is SpanExportResult.FAILURE  # the real one was shut down


def test_an_exporter_that_cannot_be_built_is_reported_once_not_per_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> SpanExporter:
        raise RuntimeError("no such credential provider")

    build, calls = counting(broken)
    deferred = DeferredOTLPExporter(build)
    with caplog.at_level(logging.ERROR, logger="modelroute.tracing"):
        assert deferred.export(spans()) is SpanExportResult.FAILURE
        assert deferred.export(spans()) is SpanExportResult.FAILURE
    assert calls == [1]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no such credential provider" in (errors[0].exc_text or "")


def test_a_credential_provider_is_loaded_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter's one constructor failure runs user code: it still stops the start."""
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", "no-such-provider")
    with pytest.raises(RuntimeError, match="no-such-provider"):
        tracing_from_env(environ=dict(os.environ))


def test_help_and_a_mistyped_command_still_list_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the named sub-command's module is imported; without one, all of them are."""
    commands = ["proxy", "demo", "validate", "catalog", "fake-provider", "explain", "report"]
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out
    assert all(re.search(rf"^    {name}\s", listed, re.M) for name in commands), listed
    with pytest.raises(SystemExit) as exit_:
        main(["prxy"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'prxy'" in error and all(f"'{n}'" in error for n in commands)
    with pytest.raises(SystemExit):
        main(["proxy", "--help"])
    assert capsys.readouterr().out.startswith("usage: modelroute proxy ")
