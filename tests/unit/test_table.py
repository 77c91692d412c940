"""Compiling resources into the route table, the table's wire format, and the live TableStore.

The table is the one contract between operator and sidecar: its hash is
what the rollout compares, so it must be a pure function of the content
(same input in another process → same hash; any change → a new hash), and
a sidecar must refuse a document it can't trust while the last good table
keeps serving.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from modelroute.proxy.compiler import (
    CompileResult,
    compile_local,
    compile_table,
    order_regions,
    select_policy,
)
from modelroute.proxy.table import SCHEMA_VERSION, CompiledTable, TableError
from modelroute.proxy.tablestore import TableStore

from modelroute.resources import Capability, Reason, ResourceSet, Severity, load_text

Compile = Callable[[str], CompileResult]

PROVIDER = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: gateway, namespace: ns}
spec:
  endpoints:
    - {region: us-east, baseURL: "http://127.0.0.1:1/v1/"}
    - {region: eu-west, baseURL: "http://127.0.0.1:2/v1"}
    - {region: cn-east, baseURL: "http://127.0.0.1:3/v1"}
  credentials: {secretRef: {name: gw, key: api-key}}
---
"""


def route(spec: str, name: str = "r") -> str:
    return (
        "apiVersion: modelroute.io/v1alpha1\nkind: ModelRoute\n"
        f"metadata: {{name: {name}, namespace: ns}}\nspec:\n{spec}---\n"
    )


GENERAL = route(
    "  models: [general]\n  targets:\n"
    "    - {provider: gateway, model: deepseek-v4-flash}\n"
    "    - {provider: gateway, model: qwen3-32b, tier: 1}\n"
)


# -- compiling the issue's example -------------------------------------------------------------


def test_issue_example_compiles_into_a_sealed_table(
    compile_text: Compile, example_text: str
) -> None:
    result = compile_text(example_text)
    assert result.ok and result.problems == []
    table = result.table
    assert table.schema_version == SCHEMA_VERSION
    assert table.hash == table.compute_hash() and table.hash.startswith("sha256:")
    (provider,) = table.providers
    assert provider.name == "global-api"
    assert [e.region for e in provider.endpoints] == ["us-east-1", "eu-west-1"]
    assert provider.credentials is not None and provider.credentials.env == "GLOBAL_API_KEY"
    (general,) = table.routes
    assert general.aliases == ("general", "gpt-4o")
    assert general.latency_budget_ms == 900
    flash, qwen = general.targets
    # the provider's own entry overrides the built-in one (capabilities: [text, code])
    assert flash.key == "global-api/deepseek-v4-flash"
    assert flash.capabilities == (Capability.TEXT, Capability.CODE)
    assert (flash.tier, flash.weight, flash.output_usd_per_mtok) == (0, 1, 0.25)
    # the built-in catalogue fills in what the route names and the provider doesn't list
    assert qwen.upstream_model == "Qwen/Qwen3-32B" and qwen.tier == 1
    assert qwen.output_usd_per_mtok == 0.28 and qwen.input_usd_per_mtok is None
    assert flash.regions == qwen.regions == ("us-east-1", "eu-west-1")
    assert result.routes[("default", "general")].ready
    assert table.aliases() == ["general", "gpt-4o"]


def test_trailing_slash_of_base_url_is_dropped(compile_text: Compile) -> None:
    table = compile_text(PROVIDER + GENERAL).table
    assert table.provider("gateway").endpoint("us-east").base_url == "http://127.0.0.1:1/v1"


# -- the hash ------------------------------------------------------------------------------


_HASH_SCRIPT = """
import sys
from modelroute.proxy.compiler import compile_local
from modelroute.resources import load_text
print(compile_local(load_text(sys.stdin.read())).table.hash)
"""


def test_hash_is_stable_across_processes(compile_text: Compile, example_text: str) -> None:
    here = compile_text(example_text).table.hash
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", _HASH_SCRIPT],
        input=example_text,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert other == here


def test_hash_ignores_document_order(compile_text: Compile) -> None:
    light = route(
        "  models: [light]\n  targets:\n    - {provider: gateway, model: qwen3-8b}\n", "l"
    )
    a = compile_text(PROVIDER + GENERAL + light).table.hash
    b = compile_text(light + GENERAL + PROVIDER).table.hash
    assert a == b


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("latencyBudgetMs: 900", "latencyBudgetMs: 901"),
        ("weight: 1}", "weight: 2}"),
        ("18102", "18103"),
        ("[general, gpt-4o]", "[general]"),
        ("outputUSDPerMTok: 0.25", "outputUSDPerMTok: 0.26"),
    ],
)
def test_hash_changes_with_content(
    compile_text: Compile, example_text: str, old: str, new: str
) -> None:
    assert old in example_text
    before = compile_text(example_text).table.hash
    after = compile_text(example_text.replace(old, new)).table
    assert after.hash != before and after.hash == after.compute_hash()


# -- the wire format -------------------------------------------------------------------------


def test_json_round_trip_keeps_table_and_hash(compile_text: Compile, example_text: str) -> None:
    table = compile_text(example_text).table
    data = table.to_json()
    again = CompiledTable.from_json(data)
    assert again == table
    assert CompiledTable.from_json(data.decode()).hash == table.hash


def test_unsealed_document_is_sealed_on_read(compile_text: Compile, example_text: str) -> None:
    raw = orjson.loads(compile_text(example_text).table.to_json())
    del raw["hash"]
    table = CompiledTable.from_json(orjson.dumps(raw))
    assert table.hash == table.compute_hash()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"schemaVersion": 2, "namespace": "x"}', "schemaVersion 2"),
        (b'{"namespace": "x"}', "schemaVersion None"),
        (b'{"schemaVersion": 1, "namespace": "x", "routez": []}', "does not match the schema"),
    ],
)
def test_from_json_refuses_what_it_cannot_use(data: bytes, words: str) -> None:
    with pytest.raises(TableError, match=re.escape(words)):
        CompiledTable.from_json(data)


def test_edited_table_is_refused_for_its_hash(compile_text: Compile, example_text: str) -> None:
    raw = orjson.loads(compile_text(example_text).table.to_json())
    raw["routes"][0]["targets"][0]["outputUSDPerMTok"] = 0.01
    with pytest.raises(TableError, match="hash does not match"):
        CompiledTable.from_json(orjson.dumps(raw))


def _reseal(raw: dict[str, object]) -> bytes:
    """What another writer would produce: the hash of exactly the JSON it wrote."""
    body = {k: v for k, v in raw.items() if k != "hash"}
    raw["hash"] = (
        "sha256:" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    return orjson.dumps(raw)


def test_table_from_an_older_operator_without_newer_defaults_is_accepted(
    compile_text: Compile, example_text: str
) -> None:
    """Upgrade order: a new sidecar must take the old operator's table, and report its hash."""
    raw = orjson.loads(compile_text(example_text).table.to_json())
    route = raw["routes"][0]
    del route["timeouts"]["streamIdleMs"]  # fields an older operator's model didn't have
    del route["retry"]["budgetRatio"]
    del route["sticky"]
    data = _reseal(raw)
    table = CompiledTable.from_json(data)
    assert table.hash == raw["hash"]  # the operator's hash, which /status reports back
    assert table.routes[0].retry.budget_ratio == 0.2  # the default filled in
    store = TableStore()
    assert store.offer_json(data, "configmap") and store.current.hash == raw["hash"]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda raw: raw["routes"][0]["targets"][0].update(provider="ghost"), "'ghost'"),
        (lambda raw: raw["routes"][0]["targets"][1].update(regions=["mars-1"]), "mars-1"),
        (lambda raw: raw.update(providers=[]), "not in the table"),
    ],
)
def test_table_with_dangling_references_is_refused(
    compile_text: Compile, example_text: str, edit: Callable[[dict[str, Any]], None], words: str
) -> None:
    raw = orjson.loads(compile_text(example_text).table.to_json())
    edit(raw)
    with pytest.raises(TableError, match=re.escape(words)):
        CompiledTable.from_json(_reseal(raw))


def test_table_lookups_name_what_is_missing(compile_text: Compile, example_text: str) -> None:
    table = compile_text(example_text).table
    with pytest.raises(KeyError):
        table.provider("nope")
    with pytest.raises(KeyError):
        table.provider("global-api").endpoint("mars-1")


# -- TableStore ------------------------------------------------------------------------------


def test_store_swaps_and_keeps_the_last_good_table(
    compile_text: Compile, example_text: str
) -> None:
    first = compile_text(example_text).table
    second = compile_text(example_text.replace("900", "800")).table
    store = TableStore()
    assert not store.loaded
    with pytest.raises(LookupError):
        _ = store.current
    seen: list[str] = []
    store.subscribe(lambda t: seen.append(t.hash))

    assert store.offer_json(first.to_json(), "file a") is True
    assert store.current is not None and store.current.hash == first.hash
    assert store.offer_table(first, "file a again") is False  # unchanged: no swap, no event
    assert store.reloads == 1

    in_flight = store.current  # a request holds on to the table it started with
    assert store.offer_json(b"{broken", "configmap") is False
    assert store.current is in_flight
    assert store.last_rejected is not None
    assert store.last_rejected.source == "configmap"
    assert "not valid JSON" in store.last_rejected.reason

    edited = orjson.loads(second.to_json())
    edited["namespace"] = "other"
    assert store.offer_json(orjson.dumps(edited), "tampered") is False
    assert "hash" in store.last_rejected.reason and store.current is in_flight

    assert store.offer_table(second, "file b") is True
    assert store.current.hash == second.hash and store.source == "file b"
    assert in_flight.hash == first.hash  # the old object is untouched
    assert seen == [first.hash, second.hash] and store.reloads == 2


# -- reference problems ----------------------------------------------------------------------


def test_unknown_provider_names_route_field_and_suggestion(compile_text: Compile) -> None:
    text = PROVIDER + route(
        "  models: [general]\n  targets:\n"
        "    - {provider: gateway, model: qwen3-32b}\n"
        "    - {provider: gatewey, model: glm-5, tier: 1}\n"
    )
    result = compile_text(text)
    assert not result.ok
    (problem,) = result.errors
    assert problem.where == "ModelRoute ns/r"
    assert problem.field == "spec.targets[1].provider"
    assert problem.reason is Reason.UNKNOWN_PROVIDER
    assert "'gatewey'" in problem.message and "did you mean 'gateway'" in problem.message
    assert result.table.routes == ()  # a route with a broken reference is left out
    outcome = result.routes[("ns", "r")]
    assert not outcome.resolved_refs and not outcome.ready


def test_unknown_model_names_route_field_and_suggestion(compile_text: Compile) -> None:
    text = PROVIDER + route(
        "  models: [general]\n  targets:\n    - {provider: gateway, model: deepseek-v4-flsh}\n"
    )
    (problem,) = compile_text(text).errors
    assert problem.field == "spec.targets[0].model"
    assert problem.reason is Reason.UNKNOWN_MODEL
    assert "did you mean 'deepseek-v4-flash'" in problem.message
    assert "modelroute catalog" in problem.message


def test_unknown_region_of_a_target(compile_text: Compile) -> None:
    text = PROVIDER + route(
        "  models: [general]\n  targets:\n"
        "    - {provider: gateway, model: glm-5, regions: [ap-south]}\n"
    )
    (problem,) = compile_text(text).errors
    assert problem.field == "spec.targets[0].regions" and "ap-south" in problem.message


def test_bad_route_does_not_take_the_good_ones_down(compile_text: Compile) -> None:
    bad = route("  models: [x]\n  targets:\n    - {provider: nope, model: glm-5}\n", "bad")
    result = compile_text(PROVIDER + GENERAL + bad)
    assert [r.name for r in result.table.routes] == ["r"]
    assert len(result.errors) == 1


def test_alias_claimed_twice_is_refused_unless_headers_differ(compile_text: Compile) -> None:
    other = route("  models: [general]\n  targets:\n    - {provider: gateway, model: glm-5}\n", "s")
    (problem,) = compile_text(PROVIDER + GENERAL + other).errors
    assert problem.reason is Reason.DUPLICATE_ALIAS and problem.field == "spec.models"
    with_header = other.replace(
        "  targets:", "  matchHeaders: [{name: X-Tenant, value: cn}]\n  targets:"
    )
    result = compile_text(PROVIDER + GENERAL + with_header)
    assert result.ok and len(result.table.routes) == 2
    routed = {r.name: r.match_headers for r in result.table.routes}
    assert routed["s"] == (("x-tenant", "cn"),)  # header names compared lowercase


def test_unpriced_model_is_a_warning_not_a_zero(compile_text: Compile) -> None:
    text = PROVIDER + route(
        "  models: [general]\n  targets:\n    - {provider: gateway, model: qwen3.5-32b}\n"
    )
    result = compile_text(text)
    assert result.ok
    (warning,) = result.problems
    assert warning.severity is Severity.WARNING and warning.reason is Reason.UNPRICED_MODEL
    assert result.table.routes[0].targets[0].output_usd_per_mtok is None


def test_racing_that_can_never_fire_is_a_warning(compile_text: Compile) -> None:
    """A floor at or above the connect timeout: "racing on" would do nothing, silently."""
    short = PROVIDER.replace("  endpoints:", "  connectTimeoutMs: 100\n  endpoints:")
    (warning,) = compile_text(short + GENERAL).problems
    assert warning.severity is Severity.WARNING and warning.field == "spec.connectRacing.floorMs"
    assert "gateway" in warning.message and "never raced" in warning.message
    assert compile_text(PROVIDER + GENERAL).problems == []  # 100 ms floor, 1 s connect timeout
    raced = GENERAL.replace("  models:", "  connectRacing: {floorMs: 50}\n  models:")
    assert compile_text(short + raced).problems == []
    off = GENERAL.replace("  models:", "  connectRacing: {enabled: false}\n  models:")
    assert compile_text(short + off).problems == []


def test_missing_capability_for_requires(compile_text: Compile) -> None:
    text = PROVIDER + route(
        "  models: [mm]\n  requires: [vision]\n  targets:\n"
        "    - {provider: gateway, model: qwen3-vl-32b}\n"
        "    - {provider: gateway, model: kimi-k2.5, tier: 1}\n"
    )
    result = compile_text(text)
    (problem,) = result.errors
    assert problem.reason is Reason.MISSING_CAPABILITY
    assert problem.field == "spec.targets[1].model" and "vision" in problem.message


# -- regions: failover preference and residency -------------------------------------------


POLICY = """\
apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {name: fp}
spec:
  regionPreference: [eu-west, cn-east]
  failbackDelaySeconds: 15
---
"""


def test_order_regions() -> None:
    assert order_regions(["a", "b", "c"], None) == ("a", "b", "c")
    assert order_regions(["a", "b", "c"], ["c", "x", "a"]) == ("c", "a", "b")


def test_failover_policy_orders_endpoints_and_targets(compile_text: Compile) -> None:
    table = compile_text(PROVIDER + GENERAL + POLICY).table
    expected = ("eu-west", "cn-east", "us-east")
    assert tuple(e.region for e in table.provider("gateway").endpoints) == expected
    assert all(t.regions == expected for t in table.routes[0].targets)
    assert table.failover is not None
    assert table.failover.policy == "fp" and table.failover.failback_delay_seconds == 15
    assert compile_text(PROVIDER + GENERAL).table.routes[0].targets[0].regions == (
        "us-east",
        "eu-west",
        "cn-east",
    )


def test_policy_naming_unknown_regions_is_a_warning(compile_text: Compile) -> None:
    result = compile_text(PROVIDER + GENERAL + POLICY.replace("cn-east", "mars-1"))
    (warning,) = result.problems
    assert warning.severity is Severity.WARNING and "mars-1" in warning.message


def test_select_policy_by_namespace_labels_highest_priority_first() -> None:
    low = POLICY.replace("name: fp", "name: low").replace("---\n", "")
    high = low.replace("name: low", "name: high").replace(
        "  failbackDelaySeconds: 15\n",
        "  priority: 5\n  namespaceSelector: {matchLabels: {tier: gold}}\n",
    )
    policies = load_text(low + "---\n" + high, "x").policies
    assert [p.metadata.name for p in policies] == ["low", "high"]
    selected = select_policy(policies, {"tier": "gold"})
    assert selected is not None and selected.metadata.name == "high"
    selected = select_policy(policies, {"tier": "silver"})
    assert selected is not None and selected.metadata.name == "low"


def test_compile_table_for_a_namespace_with_its_policy() -> None:
    resources = load_text(PROVIDER + GENERAL + POLICY, "x")
    (policy,) = resources.policies
    only = ResourceSet(providers=resources.providers, routes=resources.routes)
    table = compile_table(only, "ns", policy).table
    assert table.namespace == "ns"
    assert table.failover is not None and table.failover.region_preference == (
        "eu-west",
        "cn-east",
    )


def test_residency_removes_regions_from_targets(compile_text: Compile) -> None:
    text = PROVIDER + route(
        "  models: [cn]\n  residency: {regions: [cn-east]}\n  targets:\n"
        "    - {provider: gateway, model: glm-5}\n"
        "    - {provider: gateway, model: qwen3-32b, tier: 1}\n"
    )
    result = compile_text(text + POLICY)
    assert result.ok
    (cn,) = result.table.routes
    assert cn.residency_regions == ("cn-east",)
    assert [t.regions for t in cn.targets] == [("cn-east",), ("cn-east",)]


def test_residency_no_target_can_satisfy_is_an_error(compile_text: Compile) -> None:
    text = PROVIDER + route(
        "  models: [cn]\n  residency: {regions: [ap-south]}\n  targets:\n"
        "    - {provider: gateway, model: glm-5}\n"
    )
    result = compile_text(text)
    assert result.table.routes == ()
    fields = {(p.field, p.severity) for p in result.problems}
    assert ("spec.residency.regions", Severity.ERROR) in fields
    assert ("spec.targets[0]", Severity.WARNING) in fields


def test_compile_local_applies_a_policy_with_a_namespace_selector(example_text: str) -> None:
    """Local mode has no namespace labels: the policy in the files is the one to apply."""
    selective = POLICY.replace("eu-west", "eu-west-1").replace(
        "spec:\n", "spec:\n  namespaceSelector: {matchLabels: {modelroute.io/enabled: 'true'}}\n"
    )
    table = compile_local(load_text(example_text + "---\n" + selective, "x")).table
    assert table.failover is not None and table.failover.policy == "fp"
    assert [e.region for e in table.providers[0].endpoints] == ["eu-west-1", "us-east-1"]


def test_compile_local_uses_the_files_policy(example_text: str) -> None:
    resources = load_text(example_text + "---\n" + POLICY.replace("eu-west", "eu-west-1"), "x")
    table = compile_local(resources).table
    assert [e.region for e in table.providers[0].endpoints] == ["eu-west-1", "us-east-1"]
