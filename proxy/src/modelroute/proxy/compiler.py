"""Compile resources into a :class:`~modelroute.proxy.table.CompiledTable`.

The same function serves ``modelroute validate``, local mode, the operator
and its validating webhook, so a route refused in one place is refused
everywhere, with the same words.  Compilation never raises on bad input: a
route with an error is left out of the table (the rest still serve) and the
problems say why, with the field to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelroute.resources import (
    BUILTIN_BY_NAME,
    CatalogueModel,
    ConnectRacing,
    FailoverPolicy,
    HealthCheck,
    ModelProvider,
    ModelRoute,
    OutlierDetection,
    Problem,
    Reason,
    ResourceSet,
    Severity,
)

from .table import (
    CompiledEndpoint,
    CompiledFailover,
    CompiledMirror,
    CompiledProvider,
    CompiledRoute,
    CompiledTable,
    CompiledTarget,
    KeySource,
)

LOCAL_NAMESPACE = "local"


@dataclass
class RouteOutcome:
    """How one ``ModelRoute`` fared; the operator turns this into status conditions."""

    namespace: str | None
    name: str
    accepted: bool = True
    resolved_refs: bool = True
    problems: list[Problem] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.accepted and self.resolved_refs


@dataclass
class CompileResult:
    table: CompiledTable
    problems: list[Problem]
    routes: dict[tuple[str | None, str], RouteOutcome]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors


def provider_catalogue(provider: ModelProvider) -> dict[str, CatalogueModel]:
    """The models a provider serves: the built-in catalogue (unless switched off) plus its own."""
    models: dict[str, CatalogueModel] = (
        dict(BUILTIN_BY_NAME) if provider.spec.builtin_catalogue else {}
    )
    for model in provider.spec.models:
        models[model.name] = model
    return models


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _where(route: ModelRoute) -> str:
    ns = route.metadata.namespace
    return f"ModelRoute {ns}/{route.metadata.name}" if ns else f"ModelRoute {route.metadata.name}"


def order_regions(listed: Iterable[str], preference: Iterable[str] | None) -> tuple[str, ...]:
    """Listed regions reordered by a policy's preference; unlisted-in-policy ones keep their order last."""
    listed = list(listed)
    if not preference:
        return tuple(listed)
    pref = [r for r in preference if r in listed]
    return tuple(pref + [r for r in listed if r not in pref])


def select_policy(
    policies: Iterable[FailoverPolicy], namespace_labels: Mapping[str, str]
) -> FailoverPolicy | None:
    """The policy that applies to a namespace: highest ``priority``, then name, among matches."""
    matching = [p for p in policies if p.spec.namespace_selector.matches(dict(namespace_labels))]
    if not matching:
        return None
    return sorted(matching, key=lambda p: (-p.spec.priority, p.metadata.name))[0]


class _Compiler:
    def __init__(self, resources: ResourceSet, failover: FailoverPolicy | None) -> None:
        self.resources = resources
        self.failover = failover
        self.problems: list[Problem] = list(resources.problems)
        self.providers: dict[str, ModelProvider] = {}
        self.catalogues: dict[str, dict[str, CatalogueModel]] = {}

    def add_providers(self) -> list[CompiledProvider]:
        out = []
        for provider in sorted(self.resources.providers, key=lambda p: p.metadata.name):
            name = provider.metadata.name
            if name in self.providers:
                self.problems.append(
                    Problem(
                        f"ModelProvider {name}",
                        "metadata.name",
                        "defined twice; the first one is used",
                        Reason.DUPLICATE_NAME,
                    )
                )
                continue
            self.providers[name] = provider
            self.catalogues[name] = provider_catalogue(provider)
            creds = provider.spec.credentials
            preference = self.failover.spec.region_preference if self.failover else None
            regions = order_regions((e.region for e in provider.spec.endpoints), preference)
            by_region = {e.region: e for e in provider.spec.endpoints}
            out.append(
                CompiledProvider(
                    name=name,
                    api=provider.spec.api,
                    endpoints=tuple(
                        CompiledEndpoint(region=r, base_url=by_region[r].base_url.rstrip("/"))
                        for r in regions
                    ),
                    credentials=(
                        KeySource(env=creds.env, secret_ref=creds.secret_ref, header=creds.header)
                        if creds
                        else None
                    ),
                    connect_timeout_ms=provider.spec.connect_timeout_ms,
                    max_connections=provider.spec.max_connections,
                    outlier_detection=(
                        self.failover.spec.outlier_detection
                        if self.failover
                        else OutlierDetection()
                    ),
                    health_check=(
                        self.failover.spec.health_check if self.failover else HealthCheck()
                    ).merged(provider.spec.health_check),
                    **_egress(provider),
                )
            )
        return out

    def resolve_target(
        self,
        where: str,
        path: str,
        provider_name: str,
        model_name: str,
        tier: int,
        weight: int,
        only_regions: tuple[str, ...] | None,
        residency: tuple[str, ...] | None,
        outcome: RouteOutcome,
    ) -> CompiledTarget | None:
        provider = self.providers.get(provider_name)
        if provider is None:
            outcome.resolved_refs = False
            outcome.problems.append(
                Problem(
                    where,
                    f"{path}.provider",
                    f"no ModelProvider named {provider_name!r}"
                    + (f" in namespace {outcome.namespace!r}" if outcome.namespace else "")
                    + _suggest(provider_name, self.providers)
                    + (f" (known: {', '.join(sorted(self.providers))})" if self.providers else ""),
                    Reason.UNKNOWN_PROVIDER,
                )
            )
            return None
        catalogue = self.catalogues[provider_name]
        model = catalogue.get(model_name)
        if model is None:
            outcome.resolved_refs = False
            outcome.problems.append(
                Problem(
                    where,
                    f"{path}.model",
                    f"ModelProvider {provider_name!r} serves no model {model_name!r}"
                    + _suggest(model_name, catalogue)
                    + " (see `modelroute catalog`, or add it to the provider's spec.models)",
                    Reason.UNKNOWN_MODEL,
                )
            )
            return None
        preference = self.failover.spec.region_preference if self.failover else None
        regions = order_regions((e.region for e in provider.spec.endpoints), preference)
        if only_regions is not None:
            unknown = [r for r in only_regions if r not in regions]
            if unknown:
                outcome.resolved_refs = False
                outcome.problems.append(
                    Problem(
                        where,
                        f"{path}.regions",
                        f"ModelProvider {provider_name!r} has no endpoint in {unknown} "
                        f"(it has {list(regions)})",
                        Reason.UNKNOWN_REGION,
                    )
                )
                return None
            regions = tuple(r for r in regions if r in only_regions)
        if residency is not None:
            regions = tuple(r for r in regions if r in residency)
        if model.output_usd_per_mtok is None:
            outcome.problems.append(
                Problem(
                    where,
                    f"{path}.model",
                    f"{model_name!r} has no known output price; its tokens are counted as unpriced, "
                    "not as $0 (set outputUSDPerMTok in the provider's spec.models to price it)",
                    Reason.UNPRICED_MODEL,
                    Severity.WARNING,
                )
            )
        return CompiledTarget(
            provider=provider_name,
            model=model.name,
            upstream_model=model.upstream,
            tier=tier,
            weight=weight,
            regions=regions,
            output_usd_per_mtok=model.output_usd_per_mtok,
            input_usd_per_mtok=model.input_usd_per_mtok,
            context_tokens=model.context_tokens,
            capabilities=model.capabilities,
        )

    def compile_route(self, route: ModelRoute) -> tuple[CompiledRoute | None, RouteOutcome]:
        spec = route.spec
        where = _where(route)
        outcome = RouteOutcome(namespace=route.metadata.namespace, name=route.metadata.name)
        residency = spec.residency.regions if spec.residency else None
        targets: list[CompiledTarget] = []
        for i, t in enumerate(spec.targets):
            ct = self.resolve_target(
                where,
                f"spec.targets[{i}]",
                t.provider,
                t.model,
                t.tier,
                t.weight,
                t.regions,
                residency,
                outcome,
            )
            if ct is None:
                continue
            if t.capabilities:  # what the route says this target can do besides its model's
                extra = tuple(c for c in t.capabilities if c not in ct.capabilities)
                ct = ct.model_copy(update={"capabilities": (*ct.capabilities, *extra)})
            missing = [c.value for c in spec.requires if c not in ct.capabilities]
            if missing:
                outcome.resolved_refs = False
                outcome.problems.append(
                    Problem(
                        where,
                        f"spec.targets[{i}].model",
                        f"{ct.model!r} lacks {missing} that this route requires "
                        f"(it has {[c.value for c in ct.capabilities]}); pick a model with "
                        f"{missing[0]}, e.g. from `modelroute catalog`",
                        Reason.MISSING_CAPABILITY,
                    )
                )
                continue
            if residency is not None and not ct.regions:
                outcome.problems.append(
                    Problem(
                        where,
                        f"spec.targets[{i}]",
                        f"{ct.key} is never used: none of its regions is in residency.regions "
                        f"{list(residency)}",
                        Reason.RESIDENCY_UNSATISFIABLE,
                        Severity.WARNING,
                    )
                )
            targets.append(ct)
        if residency is not None and targets and not any(t.regions for t in targets):
            outcome.resolved_refs = False
            outcome.problems.append(
                Problem(
                    where,
                    "spec.residency.regions",
                    f"no target can be served from the allowed regions {list(residency)}; "
                    "add a target whose provider has an endpoint there",
                    Reason.RESIDENCY_UNSATISFIABLE,
                )
            )
        mirror = None
        if spec.mirror is not None:
            mt = self.resolve_target(
                where,
                "spec.mirror",
                spec.mirror.provider,
                spec.mirror.model,
                0,
                1,
                None,
                residency,
                outcome,
            )
            if mt is not None:
                mirror = CompiledMirror(
                    target=mt,
                    percent=spec.mirror.percent,
                    max_concurrent=spec.mirror.max_concurrent,
                )
        if not outcome.ready:
            return None, outcome
        outcome.problems.extend(self.unraced(where, spec.connect_racing, targets))
        compiled = CompiledRoute(
            name=route.metadata.name,
            namespace=route.metadata.namespace,
            aliases=spec.models,
            match_headers=tuple((h.name.lower(), h.value) for h in spec.match_headers),
            requires=spec.requires,
            targets=tuple(targets),
            classify=spec.classify,
            classifier=spec.classifier,
            residency_regions=residency,
            latency_budget_ms=spec.latency_budget_ms,
            timeouts=spec.timeouts,
            retry=spec.retry,
            circuit_breaker=spec.circuit_breaker,
            hedge=spec.hedge,
            connect_racing=spec.connect_racing,
            budget=spec.budget,
            mirror=mirror,
            sticky=spec.sticky,
            forward_client_auth=spec.forward_client_auth,
            record_content=spec.record_content,
        )
        return compiled, outcome

    def unraced(
        self, where: str, racing: ConnectRacing, targets: Sequence[CompiledTarget]
    ) -> list[Problem]:
        """A warning per provider whose connects the route's racing can never race.

        The race deadline is clamped to ``[floorMs, connectTimeoutMs)``: with the
        floor at or above the connect timeout the connect fails before the race
        would start, so "racing on" would quietly do nothing for that provider.
        """
        if not racing.enabled:
            return []
        out = []
        for name in dict.fromkeys(t.provider for t in targets):
            timeout = self.providers[name].spec.connect_timeout_ms
            if racing.floor_ms >= timeout:
                out.append(
                    Problem(
                        where,
                        "spec.connectRacing.floorMs",
                        f"floorMs ({racing.floor_ms} ms; 100 by default) is not below ModelProvider {name}'s "
                        f"connectTimeoutMs ({timeout} ms): its connects are never raced; "
                        f"lower floorMs or raise connectTimeoutMs",
                        Reason.INVALID_SPEC,
                        Severity.WARNING,
                    )
                )
        return out


def compile_table(
    resources: ResourceSet,
    namespace: str = LOCAL_NAMESPACE,
    failover: FailoverPolicy | None = None,
) -> CompileResult:
    """Compile one namespace's resources (already filtered to it) into a sealed table."""
    compiler = _Compiler(resources, failover)
    providers = compiler.add_providers()
    routes: list[CompiledRoute] = []
    outcomes: dict[tuple[str | None, str], RouteOutcome] = {}
    claimed: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
    for route in sorted(
        resources.routes, key=lambda r: (r.metadata.namespace or "", r.metadata.name)
    ):
        key = (route.metadata.namespace, route.metadata.name)
        if key in outcomes:
            compiler.problems.append(
                Problem(
                    _where(route),
                    "metadata.name",
                    "defined twice; the first one is used",
                    Reason.DUPLICATE_NAME,
                )
            )
            continue
        compiled, outcome = compiler.compile_route(route)
        if compiled is not None:
            match = compiled.match_headers
            taken = [a for a in compiled.aliases if (a, match) in claimed]
            if taken:
                outcome.accepted = False
                owner = claimed[(taken[0], match)]
                outcome.problems.append(
                    Problem(
                        _where(route),
                        "spec.models",
                        f"{taken} already captured by ModelRoute {owner!r} with the same header "
                        "match; remove it here or add spec.matchHeaders to tell them apart",
                        Reason.DUPLICATE_ALIAS,
                    )
                )
                compiled = None
            else:
                for alias in compiled.aliases:
                    claimed[(alias, match)] = route.metadata.name
                routes.append(compiled)
        outcomes[key] = outcome
        compiler.problems.extend(outcome.problems)
    failover_c = None
    if failover is not None:
        known = {e.region for p in compiler.providers.values() for e in p.spec.endpoints}
        unknown = [r for r in failover.spec.region_preference if r not in known]
        if unknown and known:
            compiler.problems.append(
                Problem(
                    f"FailoverPolicy {failover.metadata.name}",
                    "spec.regionPreference",
                    f"regions {unknown} are not served by any provider here (known: {sorted(known)})",
                    Reason.UNKNOWN_REGION,
                    Severity.WARNING,
                )
            )
        failover_c = CompiledFailover(
            policy=failover.metadata.name,
            region_preference=failover.spec.region_preference,
            ejection=failover.spec.ejection,
            failback_delay_seconds=failover.spec.failback_delay_seconds,
        )
    table = CompiledTable(
        namespace=namespace, providers=tuple(providers), routes=tuple(routes), failover=failover_c
    ).sealed()
    return CompileResult(table=table, problems=compiler.problems, routes=outcomes)


def compile_local(resources: ResourceSet) -> CompileResult:
    """Local mode: every resource in the files, one table, the highest-priority policy applied.

    There is no namespace (and so no labels) locally: a policy's ``namespaceSelector``
    can't match, so the one a cluster would rank first is taken as meant for this table.
    """
    policy = min(
        resources.policies, key=lambda p: (-p.spec.priority, p.metadata.name), default=None
    )
    return compile_table(resources, LOCAL_NAMESPACE, policy)


def _egress(provider: ModelProvider) -> dict[str, Any]:
    """A provider's ``spec.egress`` as table fields (none when it follows the environment)."""
    egress = provider.spec.egress
    if egress is None:
        return {}
    creds = egress.proxy_credentials
    return {
        "egress_proxy": egress.proxy.rstrip("/"),
        "egress_proxy_credentials": (
            KeySource(env=creds.env, secret_ref=creds.secret_ref) if creds else None
        ),
    }
