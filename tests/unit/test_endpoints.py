"""Endpoint outlier detection and probe verdicts (proxy/endpoints.py), on an injected clock.

An endpoint is a provider's base URL in one region; whether connections to it
succeed is shared by every route and model that uses it.  Each rule here is
one docs/failover.md makes: a few local-origin failures in a row eject it,
ejections grow with repetition and decay with time in rotation, probes
eject at once and bring it back after successes in a row.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from modelroute.proxy.compiler import CompileResult
from modelroute.proxy.endpoints import (
    EndpointBook,
    EndpointHealth,
    EndpointSettings,
    ErrorKind,
    endpoints_in,
    settings_of,
)
from modelroute.proxy.health import HealthBook
from modelroute.proxy.request import Endpoint, extract_features
from modelroute.proxy.router import DropReason, plan
from pydantic import ValidationError

from modelroute.resources import HealthCheck, OutlierDetection

REFUSED, TIMEOUT = ErrorKind.CONNECT_REFUSED, ErrorKind.CONNECT_TIMEOUT


def endpoint(probed: bool = True, **outlier: int) -> EndpointHealth:
    e = EndpointHealth(EndpointSettings(OutlierDetection(**outlier), HealthCheck()))
    e.probed = probed
    return e


def test_defaults_are_the_documented_ones() -> None:
    o, c = OutlierDetection(), HealthCheck()
    assert (o.consecutive_local_origin_failures, o.base_ejection_ms, o.max_ejection_ms) == (
        3,
        1000,
        30_000,
    )
    assert (c.interval_ms, c.jitter_percent, c.timeout_ms) == (1000, 20, 300)
    assert (c.healthy_threshold, c.unhealthy_threshold, c.http) == (2, 1, None)


def test_consecutive_local_origin_failures_eject_and_an_answer_resets_the_streak() -> None:
    e = endpoint()
    assert not e.local_failure(REFUSED, "refused", 0.0)
    assert not e.local_failure(REFUSED, "refused", 0.1)
    e.answered(0.2)  # a 5xx is still an answer: the network path works
    assert not e.local_failure(REFUSED, "refused", 0.3)
    assert not e.local_failure(TIMEOUT, "no connection", 0.4)
    assert e.available(0.4)
    assert e.local_failure(REFUSED, "refused", 0.5)
    assert not e.available(0.5) and e.ejections == 1
    assert "3 local-origin failures" in e.reason and e.last_error is REFUSED


def test_a_failed_probe_ejects_at_once_and_successes_in_a_row_bring_it_back() -> None:
    e = endpoint()
    assert e.probe_result(False, 10.0, ErrorKind.PROBE_TIMEOUT, "no connect in 300 ms")
    assert not e.available(10.0)
    # the minimum ejection (1 s) has passed, but one success is not enough
    e.probe_result(True, 11.0)
    assert not e.available(11.0)
    e.probe_result(False, 11.5, ErrorKind.PROBE_TIMEOUT)  # the streak starts over
    e.probe_result(True, 12.0)
    assert not e.available(12.0)
    e.probe_result(True, 13.0)
    assert e.available(13.0) and not e.ejected and e.returned_at == 13.0
    assert e.ejections == 1  # failures while ejected don't eject again


def test_successes_before_the_minimum_time_still_wait_for_it() -> None:
    e = endpoint(base_ejection_ms=5000)
    e.probe_result(False, 0.0, ErrorKind.PROBE_REFUSED)
    e.probe_result(True, 1.0)
    e.probe_result(True, 2.0)
    assert not e.available(4.9)
    assert e.available(5.0)


def test_without_probes_an_ejection_ends_by_time() -> None:
    e = endpoint(probed=False)
    for t in (0.0, 0.1, 0.2):
        e.local_failure(REFUSED, "refused", t)
    assert not e.available(1.1)
    assert e.available(1.2)


def test_repeated_ejections_last_longer_capped_and_decay_in_rotation() -> None:
    e = endpoint(probed=False, consecutive_local_origin_failures=1, max_ejection_ms=3000)
    durations = []
    t = 0.0
    for _ in range(5):  # flapping: ejected again the moment it is back
        e.local_failure(REFUSED, "refused", t)
        durations.append(round(e.ejected_until - t, 3))
        t = e.ejected_until
        e.settle(t)
    assert durations == [1.0, 2.0, 3.0, 3.0, 3.0]  # base × n, capped
    assert e.multiplier == 5
    # 20 s in rotation (2 × 10 bases) takes two off the multiplier
    e.local_failure(REFUSED, "refused", t + 20.0)
    assert e.multiplier == 4 and e.ejected_until - (t + 20.0) == 3.0


def test_a_panic_request_that_fails_restarts_the_probe_streak() -> None:
    e = endpoint()
    e.probe_result(False, 0.0, ErrorKind.PROBE_TIMEOUT)
    e.probe_result(True, 1.0)
    e.local_failure(REFUSED, "refused", 1.5)
    e.probe_result(True, 2.0)
    assert not e.available(2.0)


def test_an_answer_while_ejected_counts_as_a_probe_success() -> None:
    """A request panic sent to the ejected endpoint was answered: one of healthyThreshold."""
    e = endpoint()
    e.probe_result(False, 0.0, ErrorKind.PROBE_TIMEOUT)
    e.answered_while_out(0.5)  # before the minimum ejection (1 s): counted, still out
    assert not e.available(0.5) and e.probe_successes == 1
    e.answered_while_out(1.2)
    assert e.available(1.2) and not e.ejected and e.returned_at == 1.2
    e.answered(2.0)  # a plain answer in rotation counts nothing towards a return
    assert e.probe_successes == 2 and e.last_answered_at == 2.0


def test_a_failed_probe_older_than_an_answer_judges_nothing() -> None:
    """A probe sent into the dark times out after the path healed and a request was answered."""
    e = endpoint()
    e.probe_result(False, 0.0, ErrorKind.PROBE_TIMEOUT)
    e.probe_result(True, 1.0)
    e.answered_while_out(1.3)
    assert e.available(1.3)
    # started at 1.1, before the answer: stale, neither ejects nor restarts a streak
    assert not e.probe_result(False, 1.4, ErrorKind.PROBE_TIMEOUT, "no connect", started=1.1)
    assert e.available(1.4) and e.consecutive == 0 and e.last_error_at == 0.0
    # one started after the answer is evidence as ever
    assert e.probe_result(False, 2.0, ErrorKind.PROBE_TIMEOUT, "no connect", started=1.5)
    assert not e.available(2.0)


def test_probe_schedule_is_jittered_downward_only() -> None:
    e = endpoint()
    rng = random.Random(7)
    gaps = []
    for _ in range(200):
        e.schedule_next(100.0, rng)
        gaps.append(e.next_probe_at - 100.0)
    assert 0.8 <= min(gaps) < 0.82 and 0.98 < max(gaps) <= 1.0
    e.suspect(100.5)
    assert e.next_probe_at == 100.5  # a request's timeout brings the probe forward
    e.probing = True
    e.schedule_next(100.0, rng)
    e.suspect(100.1)
    assert e.next_probe_at > 100.5  # one probe at a time


ROUTES = """\
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: gw}
spec:
  endpoints:
    - {region: us-east, baseURL: "http://127.0.0.1:1/v1"}
    - {region: eu-west, baseURL: "http://127.0.0.1:2/v1"}
  healthCheck: {http: {path: /models}}
---
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: unused}
spec:
  endpoints:
    - {region: ap-south, baseURL: "http://127.0.0.1:3/v1"}
---
apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {name: p}
spec:
  regionPreference: [us-east, eu-west]
  outlierDetection: {consecutiveLocalOriginFailures: 2}
  healthCheck: {intervalMs: 2000, timeoutMs: 250}
---
"""


def route(name: str, model: str) -> str:
    return (
        f"apiVersion: modelroute.io/v1alpha1\nkind: ModelRoute\nmetadata: {{name: {name}}}\n"
        f"spec:\n  models: [{name}]\n  targets:\n    - {{provider: gw, model: {model}}}\n---\n"
    )


def test_an_ejection_drops_the_endpoint_from_every_route_and_model(
    compile_text: Callable[[str], CompileResult],
) -> None:
    result = compile_text(ROUTES + route("a", "deepseek-v4-flash") + route("b", "qwen3-32b"))
    assert result.ok, [str(p) for p in result.errors]
    table = result.table
    # only endpoints some route uses; the policy's settings with the provider's on top
    found = endpoints_in(table)
    assert sorted(found) == ["gw@eu-west", "gw@us-east"]
    settings = settings_of(found["gw@us-east"][0])
    assert settings.outlier.consecutive_local_origin_failures == 2
    assert (settings.check.interval_ms, settings.check.timeout_ms) == (2000, 250)
    assert settings.check.http is not None and settings.check.http.path == "/models"

    health = HealthBook()
    health.endpoints.set_probed(True)
    health.endpoints.configure(
        ((k, settings_of(p)) for k, (p, _) in found.items()), 0.0, random.Random(1)
    )
    us = health.endpoints.get("gw@us-east")
    assert us is not None
    us.local_failure(REFUSED, "refused", 1.0)  # route a's request
    us.local_failure(REFUSED, "refused", 1.1)  # route b's, another model
    features = extract_features(
        {"model": "a", "messages": [{"role": "user", "content": "hi"}]}, Endpoint.CHAT
    )
    for r in table.routes:
        p = plan(r, table, features, health, 1.2, random.Random(1))
        assert [c.region for c in p.candidates] == ["eu-west"]
        (drop,) = p.dropped
        assert drop.reason is DropReason.ENDPOINT_EJECTED and "gw@us-east" in drop.detail


def test_reconfiguring_keeps_state_unless_the_settings_changed() -> None:
    book = EndpointBook()
    same = EndpointSettings(OutlierDetection(), HealthCheck())
    book.configure([("p@r", same)], 0.0, random.Random(1))
    e = book.get("p@r")
    assert e is not None and e.next_probe_at <= 0.1  # a new endpoint is probed soon
    e.local_failure(REFUSED, "x", 0.0)
    book.configure([("p@r", same), ("p@s", same)], 1.0, random.Random(1))
    assert book.get("p@r") is e
    book.configure([("p@s", same)], 2.0, random.Random(1))
    assert book.get("p@r") is None  # gone from the table: forgotten (and no longer probed)
    other = EndpointSettings(OutlierDetection(consecutive_local_origin_failures=9), HealthCheck())
    kept = book.get("p@s")
    book.configure([("p@s", other)], 3.0, random.Random(1))
    assert book.get("p@s") is not kept


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (OutlierDetection, {"baseEjectionMs": 5000, "maxEjectionMs": 1000}, "below baseEjectionMs"),
        (OutlierDetection, {"consecutiveLocalOriginFailures": 0}, "greater than or equal to 1"),
        (HealthCheck, {"intervalMs": 500, "timeoutMs": 500}, "must be below intervalMs"),
        (HealthCheck, {"jitterPercent": 95}, "less than or equal to 90"),
        (HealthCheck, {"http": {"path": "/../admin"}}, "must stay under"),
        (HealthCheck, {"http": {"path": "//evil.example/v1"}}, "must stay under"),
        (HealthCheck, {"http": {"path": "https://evil.example/"}}, "should match pattern"),
        (HealthCheck, {"http": {"path": "/models?x=1"}}, "should match pattern"),
        (HealthCheck, {"intervalMs": 1000, "bogus": 1}, "Extra inputs"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_the_reason(
    model: type[OutlierDetection] | type[HealthCheck], fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        model.model_validate(fields)


def test_a_providers_health_check_overrides_only_the_fields_it_sets() -> None:
    policy = HealthCheck.model_validate({"intervalMs": 5000, "timeoutMs": 400})
    mine = HealthCheck.model_validate({"http": {"path": "/models"}})
    merged = policy.merged(mine)
    assert (merged.interval_ms, merged.timeout_ms) == (5000, 400)
    assert merged.http is not None and merged.http.path == "/models"
    assert policy.merged(None) is policy
