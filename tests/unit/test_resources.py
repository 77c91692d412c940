"""The resource models and the loader: what a user writes in YAML, and what they are told back.

Every refusal must name the field to fix (as a dotted manifest path, in the
camelCase the user wrote) and say why; these are the words ``kubectl apply``
and ``modelroute validate`` show.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelroute.resources import (
    BudgetAction,
    Capability,
    FailoverPolicy,
    ModelProvider,
    ModelRoute,
    Problem,
    Reason,
    ResourceSet,
    RouteSpec,
    Severity,
    load_files,
    load_text,
    parse_manifest,
)
from modelroute.resources.policy import LabelSelector

Load = Callable[[str], ResourceSet]

ROUTE = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: r, namespace: default}
spec:
  models: [general]
  targets:
    - {provider: p, model: m}
"""

PROVIDER = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: p}
spec:
  endpoints:
    - {region: us-east, baseURL: "http://127.0.0.1:1/v1"}
"""


def only_problem(resources: ResourceSet) -> Problem:
    assert not resources.routes and not resources.providers, "the manifest should be refused"
    assert len(resources.problems) == 1, [str(p) for p in resources.problems]
    return resources.problems[0]


# -- the issue's example -------------------------------------------------------------------


def test_issue_example_parses_with_every_field(load: Load, example_text: str) -> None:
    resources = load(example_text)
    assert resources.problems == []
    (provider,) = resources.providers
    (route,) = resources.routes
    assert provider.metadata.name == "global-api"
    assert [(e.region, e.base_url) for e in provider.spec.endpoints] == [
        ("us-east-1", "http://127.0.0.1:18101/v1"),
        ("eu-west-1", "http://127.0.0.1:18102/v1"),
    ]
    assert provider.spec.credentials is not None
    assert provider.spec.credentials.env == "GLOBAL_API_KEY"
    (model,) = provider.spec.models
    assert model.upstream == "deepseek-v4-flash"
    assert model.output_usd_per_mtok == 0.25
    assert model.input_usd_per_mtok is None
    assert model.capabilities == (Capability.TEXT, Capability.CODE)

    spec = route.spec
    assert spec.models == ("general", "gpt-4o")
    assert [(t.provider, t.model, t.tier, t.weight) for t in spec.targets] == [
        ("global-api", "deepseek-v4-flash", 0, 1),
        ("global-api", "qwen3-32b", 1, 1),
    ]
    assert spec.latency_budget_ms == 900
    assert (spec.timeouts.first_byte_ms, spec.timeouts.total_ms) == (3000, 30000)
    assert (spec.retry.max_attempts, spec.retry.base_backoff_ms, spec.retry.max_backoff_ms) == (
        3,
        50,
        2000,
    )


def test_dump_round_trips_in_camel_case(load: Load, example_text: str) -> None:
    route = load(example_text).routes[0]
    dumped = route.dump()
    assert dumped["spec"]["latencyBudgetMs"] == 900
    assert dumped["spec"]["timeouts"] == {"firstByteMs": 3000, "totalMs": 30000}
    assert "latency_budget_ms" not in dumped["spec"]
    assert ModelRoute.model_validate(dumped) == route


def test_snake_case_names_work_in_code() -> None:
    spec = RouteSpec(models=("a",), targets=({"provider": "p", "model": "m"},), latency_budget_ms=5)  # type: ignore[arg-type]
    assert spec.latency_budget_ms == 5


# -- unknown fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("  latencyBudgetMS: 900\n", "spec.latencyBudgetMS"),
        ("  latency_budget: 900\n", "spec.latency_budget"),
        ("  retry: {maxAttempt: 2}\n", "spec.retry.maxAttempt"),
        ("  timeouts: {firstByte: 10}\n", "spec.timeouts.firstByte"),
    ],
)
def test_unknown_field_is_refused_naming_it(load: Load, extra: str, field: str) -> None:
    problem = only_problem(load(ROUTE + extra))
    assert problem.field == field
    assert "unknown field" in problem.message
    assert problem.where == "ModelRoute default/r"
    assert problem.is_error


def test_unknown_field_in_a_target_names_its_index(load: Load) -> None:
    text = ROUTE.replace("{provider: p, model: m}", "{provider: p, model: m, wieght: 2}")
    problem = only_problem(load(text))
    assert problem.field == "spec.targets[0].wieght"


# -- cross-field rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        (
            "  timeouts: {firstByteMs: 5000, totalMs: 1000}\n",
            "spec.timeouts",
            ["firstByteMs", "totalMs", "5000", "1000"],
        ),
        (
            "  retry: {baseBackoffMs: 5000, maxBackoffMs: 100}\n",
            "spec.retry",
            ["baseBackoffMs", "maxBackoffMs"],
        ),
        (
            "  budget: {usdPerDay: 5, usdPerHour: 1}\n",
            "spec.budget",
            ["exactly one", "usdPerHour", "usdPerDay"],
        ),
        ("  budget: {action: reject}\n", "spec.budget", ["exactly one"]),
        ("  budget: {usdPerDay: -5}\n", "spec.budget.usdPerDay", ["greater than 0"]),
        ("  budget: {usdPerMonth: 0}\n", "spec.budget.usdPerMonth", ["greater than 0"]),
        ("  hedge: {afterMs: 200, percentile: 95}\n", "spec.hedge", ["afterMs", "percentile"]),
        ("  hedge: {maxHedges: 2}\n", "spec.hedge", ["afterMs", "percentile"]),
        ("  latencyBudgetMs: -1\n", "spec.latencyBudgetMs", ["greater than 0"]),
        ("  retry: {maxAttempts: 0}\n", "spec.retry.maxAttempts", ["greater than or equal"]),
    ],
)
def test_bad_setting_is_refused_naming_the_field(
    load: Load, extra: str, field: str, words: list[str]
) -> None:
    problem = only_problem(load(ROUTE + extra))
    assert problem.field == field
    for word in words:
        assert word in problem.message, problem.message


def test_first_byte_equal_to_total_is_fine(load: Load) -> None:
    resources = load(ROUTE + "  timeouts: {firstByteMs: 1000, totalMs: 1000}\n")
    assert resources.problems == []


def test_one_budget_window_and_action_are_accepted(load: Load) -> None:
    (route,) = load(ROUTE + "  budget: {usdPerDay: 12.5, action: downgrade}\n").routes
    assert route.spec.budget is not None
    assert route.spec.budget.usd_per_day == 12.5
    assert route.spec.budget.action is BudgetAction.DOWNGRADE


def test_hedge_with_one_trigger_is_accepted(load: Load) -> None:
    assert load(ROUTE + "  hedge: {afterMs: 400}\n").problems == []
    assert load(ROUTE + "  hedge: {percentile: 95}\n").problems == []


@pytest.mark.parametrize(
    ("targets", "words"),
    [
        (
            "    - {provider: p, model: m}\n    - {provider: p, model: m, tier: 1}\n",
            "listed twice",
        ),
        ("    - {provider: p, model: m, weight: 0}\n", "every weight is 0"),
        (
            "    - {provider: p, model: m, weight: 0}\n    - {provider: p, model: n, weight: 0}\n",
            "every weight is 0",
        ),
    ],
)
def test_bad_target_list_is_refused(load: Load, targets: str, words: str) -> None:
    text = ROUTE.replace("    - {provider: p, model: m}\n", targets)
    problem = only_problem(load(text))
    assert problem.field == "spec"
    assert problem.message.startswith("targets:")
    assert words in problem.message


def test_target_with_an_empty_region_list_is_refused(load: Load) -> None:
    text = ROUTE.replace("{provider: p, model: m}", "{provider: p, model: m, regions: []}")
    assert only_problem(load(text)).field == "spec.targets[0].regions"


def test_standby_target_next_to_a_live_one_is_fine(load: Load) -> None:
    text = ROUTE.replace(
        "    - {provider: p, model: m}\n",
        "    - {provider: p, model: m}\n    - {provider: p, model: n, weight: 0}\n",
    )
    assert load(text).problems == []


def test_empty_targets_need_classify(load: Load) -> None:
    text = ROUTE.replace("  targets:\n    - {provider: p, model: m}\n", "  targets: []\n")
    problem = only_problem(load(text))
    assert "targets" in problem.message and "classify" in problem.message
    no_targets = ROUTE.replace("  targets:\n    - {provider: p, model: m}\n", "")
    assert only_problem(load(no_targets)).message == problem.message
    assert load(no_targets + "  classify: true\n").problems == []


def test_route_alias_listed_twice_is_refused(load: Load) -> None:
    problem = only_problem(load(ROUTE.replace("[general]", "[general, gpt-4o, general]")))
    assert problem.field == "spec"
    assert "models" in problem.message and "twice" in problem.message


def test_provider_model_listed_twice_is_refused(load: Load) -> None:
    text = PROVIDER + "  models:\n    - {name: a}\n    - {name: a, outputUSDPerMTok: 1}\n"
    problem = only_problem(load(text))
    assert problem.where == "ModelProvider p"
    assert "models" in problem.message and "twice" in problem.message


def test_provider_region_listed_twice_is_refused(load: Load) -> None:
    text = PROVIDER + '    - {region: us-east, baseURL: "http://127.0.0.1:2/v1"}\n'
    problem = only_problem(load(text))
    assert "region" in problem.message and "us-east" in problem.message


def test_provider_needs_an_endpoint(load: Load) -> None:
    text = PROVIDER.replace(
        '  endpoints:\n    - {region: us-east, baseURL: "http://127.0.0.1:1/v1"}\n',
        "  endpoints: []\n",
    )
    assert only_problem(load(text)).field == "spec.endpoints"


@pytest.mark.parametrize(
    "creds",
    [
        "  credentials: {}\n",
        "  credentials: {env: KEY, secretRef: {name: s, key: k}}\n",
    ],
)
def test_credentials_need_exactly_one_source(load: Load, creds: str) -> None:
    problem = only_problem(load(PROVIDER + creds))
    assert problem.field == "spec.credentials"
    assert "env" in problem.message and "secretRef" in problem.message


def test_inline_key_is_not_a_field(load: Load) -> None:
    problem = only_problem(load(PROVIDER + "  credentials: {apiKey: sk-123}\n"))
    assert problem.field == "spec.credentials.apiKey"
    assert "sk-123" not in str(problem)


def test_negative_price_is_refused(load: Load) -> None:
    problem = only_problem(load(PROVIDER + "  models:\n    - {name: a, outputUSDPerMTok: -1}\n"))
    assert problem.field == "spec.models[0].outputUSDPerMTok"


@pytest.mark.parametrize("name", ["Qwen3-32B", "Qwen/Qwen3-32B", "glm 5", "-x", "a@b"])
def test_provider_model_ids_are_lowercase(load: Load, name: str) -> None:
    problem = only_problem(load(PROVIDER + f"  models:\n    - {{name: '{name}'}}\n"))
    assert problem.field == "spec.models[0].name"
    assert "lowercase" in problem.message and "upstreamModel" in problem.message


def test_provider_model_keeps_the_upstream_spelling(load: Load) -> None:
    text = PROVIDER + "  models:\n    - {name: qwen3-32b, upstreamModel: Qwen/Qwen3-32B}\n"
    (provider,) = load(text).providers
    assert provider.spec.models[0].upstream == "Qwen/Qwen3-32B"


def test_unknown_capability_is_refused(load: Load) -> None:
    problem = only_problem(
        load(PROVIDER + "  models:\n    - {name: a, capabilities: [telepathy]}\n")
    )
    assert problem.field == "spec.models[0].capabilities[0]"
    assert "vision" in problem.message  # the allowed values are listed


def test_bad_region_name_and_url_are_refused(load: Load) -> None:
    text = PROVIDER.replace("region: us-east", "region: US_East").replace("http://", "ftp://")
    fields = {p.field for p in load(text).problems}
    assert fields == {"spec.endpoints[0].region", "spec.endpoints[0].baseURL"}


# -- FailoverPolicy ----------------------------------------------------------------------


POLICY = """\
apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {name: fp}
spec:
  regionPreference: [us-east, eu-west]
"""


def test_policy_defaults(load: Load) -> None:
    (policy,) = load(POLICY).policies
    assert isinstance(policy, FailoverPolicy)
    assert policy.spec.region_preference == ("us-east", "eu-west")
    assert policy.spec.failback_delay_seconds == 60
    assert policy.spec.namespace_selector.matches({"anything": "x"})


def test_policy_region_listed_twice_is_refused(load: Load) -> None:
    problem = only_problem(load(POLICY.replace("[us-east, eu-west]", "[us-east, us-east]")))
    assert "regionPreference" in problem.message


def test_policy_needs_a_region(load: Load) -> None:
    problem = only_problem(load(POLICY.replace("[us-east, eu-west]", "[]")))
    assert problem.field == "spec.regionPreference"


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]}, {"t": "a"}, True),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]},
            {"t": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, {"t": ""}, True),
        ({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, {"t": ""}, False),
    ],
)
def test_label_selector(selector: dict[str, object], labels: dict[str, str], matches: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is matches


def test_label_selector_in_without_values_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs values"):
        LabelSelector.model_validate({"matchExpressions": [{"key": "t", "operator": "In"}]})


# -- the loader ------------------------------------------------------------------------------


def test_wrong_api_version_and_kind_are_named(load: Load) -> None:
    bad_version = ROUTE.replace("modelroute.io/v1alpha1", "modelroute.io/v1")
    problem = only_problem(load(bad_version))
    assert problem.field == "apiVersion" and problem.reason is Reason.PARSE_ERROR
    assert "modelroute.io/v1alpha1" in problem.message
    problem = only_problem(load(ROUTE.replace("kind: ModelRoute", "kind: ModelRoutes")))
    assert problem.field == "kind" and "ModelRoute" in problem.message


def test_yaml_syntax_error_names_the_line() -> None:
    resources = load_text(ROUTE + "  targets: [\n", "bad.yaml")
    problem = only_problem(resources)
    assert problem.reason is Reason.PARSE_ERROR
    assert problem.where.startswith("bad.yaml line ")


def test_status_is_ignored_and_foreign_kinds_skipped(load: Load) -> None:
    text = (
        ROUTE
        + "status: {observedGeneration: 3}\n---\n"
        + "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n---\n"
    )
    resources = load(text)
    assert resources.problems == []
    assert len(resources.routes) == 1
    assert resources.skipped == ["Deployment app (apps/v1)"]


def test_kubectl_list_is_unpacked(load: Load) -> None:
    body = "\n".join("  " + line for line in ROUTE.splitlines())
    text = "apiVersion: v1\nkind: List\nitems:\n- " + body.lstrip() + "\n"
    resources = load(text)
    assert resources.problems == [] and len(resources.routes) == 1


def test_non_mapping_document_is_a_problem() -> None:
    result = parse_manifest(["a", "list"], "x.yaml document 1")
    assert isinstance(result, list)
    assert result[0].reason is Reason.PARSE_ERROR


def test_parse_manifest_returns_typed_resources(example_text: str) -> None:
    import yaml

    docs = list(yaml.safe_load_all(example_text))
    assert isinstance(parse_manifest(docs[0], "x"), ModelProvider)
    assert isinstance(parse_manifest(docs[1], "x"), ModelRoute)


def test_load_files_walks_directories_and_reports_unreadable(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "route.yml").write_text(ROUTE)
    (tmp_path / "provider.yaml").write_text(PROVIDER)
    (tmp_path / "notes.txt").write_text("not yaml: [")
    resources = load_files([tmp_path, tmp_path / "missing.yaml"])
    assert len(resources.routes) == 1 and len(resources.providers) == 1
    (problem,) = resources.problems
    assert problem.where.endswith("missing.yaml") and "cannot read" in problem.message


def test_configmap_mounted_directory_is_read_once(tmp_path: Path) -> None:
    """A mounted ConfigMap shows each key twice: ``x.yaml`` → ``..data/x.yaml`` → ``..2026_…/x.yaml``."""
    real = tmp_path / "..2026_11_25_10_00_00.123"
    real.mkdir()
    (real / "provider.yaml").write_text(PROVIDER)
    (real / "route.yaml").write_text(ROUTE)
    (tmp_path / "..data").symlink_to(real.name)
    for name in ("provider.yaml", "route.yaml"):
        (tmp_path / name).symlink_to(Path("..data") / name)
    resources = load_files([tmp_path])
    assert resources.problems == []
    assert len(resources.providers) == 1 and len(resources.routes) == 1


def test_directory_walk_skips_hidden_entries_and_non_manifests(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.yaml").write_text("not: [valid")
    (tmp_path / ".#route.yaml").symlink_to("nowhere")  # an editor lock file
    (tmp_path / "ci.yml").write_text("jobs: {test: {runs-on: ubuntu}}\n")
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: chart\n")
    (tmp_path / "route.yaml").write_text(ROUTE)
    resources = load_files([tmp_path])
    assert resources.problems == [] and len(resources.routes) == 1
    assert len(resources.skipped) == 2
    assert any("ci.yml" in s for s in resources.skipped)


def test_named_file_is_judged_in_full(tmp_path: Path) -> None:
    (tmp_path / "ci.yml").write_text("jobs: {}\n")
    (problem,) = load_files([tmp_path / "ci.yml"]).problems
    assert problem.field == "apiVersion"


def test_our_manifest_without_kind_is_still_judged(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(ROUTE.replace("kind: ModelRoute\n", ""))
    (problem,) = load_files([tmp_path]).problems
    assert problem.field == "kind"


def test_problem_text_says_where_what_and_why() -> None:
    problem = Problem("ModelRoute ns/r", "spec.targets[1].model", "no such model")
    assert str(problem) == "error: ModelRoute ns/r: spec.targets[1].model: no such model"
    warning = Problem("ModelRoute ns/r", "", "unused", severity=Severity.WARNING)
    assert str(warning) == "warning: ModelRoute ns/r: unused" and not warning.is_error
