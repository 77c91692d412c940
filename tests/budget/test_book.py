"""BudgetBook per pod: what the dispatcher reads for each action, windows, reloads."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from modelroute.proxy.budget import BudgetBook, window_span
from modelroute.proxy.table import (
    CompiledEndpoint,
    CompiledProvider,
    CompiledRoute,
    CompiledTable,
)

from modelroute.resources import BudgetAction

Route = Callable[..., CompiledRoute]


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, text: str) -> None:
        self.now = ts(text)

    def __call__(self) -> float:
        return self.now

    def set(self, text: str) -> None:
        self.now = ts(text)


@pytest.fixture
def clock() -> Clock:
    return Clock("2026-11-25T12:00:00")


def test_route_without_budget_has_no_state_and_costs_nothing(clock: Clock) -> None:
    book = BudgetBook(clock=clock)
    plain = CompiledRoute(name="free", aliases=("free",), targets=())
    assert book.state(plain) is None
    book.spend(plain, 10.0)
    assert book.remaining() == {}
    assert not book.alert_due(plain)


def test_reject_state_and_message(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    general = route("general", "reject", usdPerDay=50)
    st = book.state(general)
    assert st is not None
    assert (st.window, st.limit_usd, st.spent_usd, st.remaining_usd) == ("day", 50, 0, 50)
    assert not st.exhausted

    book.spend(general, 30.0)
    book.spend(general, 20.0123)
    st = book.state(general)
    assert st is not None
    assert st.exhausted
    assert st.action is BudgetAction.REJECT
    assert st.spent_usd == pytest.approx(50.0123)
    assert st.remaining_usd == 0
    assert st.window_start == ts("2026-11-25T00:00:00")
    assert st.resets_at == ts("2026-11-26T00:00:00")
    assert st.message() == (
        'route "general" spent $50.0123 of its $50.00/day budget (action reject); '
        "resets at 2026-11-26T00:00:00Z; raise spec.budget.usdPerDay or wait"
    )


def test_exhausted_exactly_at_the_limit(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    r = route(usdPerHour=0.5)
    book.spend(r, 0.49)
    st = book.state(r)
    assert st is not None
    assert not st.exhausted
    assert st.remaining_usd == pytest.approx(0.01)
    book.spend(r, 0.01)
    st = book.state(r)
    assert st is not None
    assert st.exhausted


def test_downgrade_state(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    r = route("reasoning", "downgrade", usdPerMonth=1000)
    book.spend(r, 999.99)
    st = book.state(r)
    assert st is not None
    assert not st.exhausted
    book.spend(r, 0.02)
    st = book.state(r)
    assert st is not None
    assert st.exhausted
    assert st.action is BudgetAction.DOWNGRADE
    assert (st.window, st.resets_at) == ("month", ts("2026-12-01T00:00:00"))
    assert "$1000.00/month budget (action downgrade)" in st.message()
    assert "resets at 2026-12-01T00:00:00Z; raise spec.budget.usdPerMonth or wait" in st.message()


def test_alert_due_once_per_window(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    r = route("light", "alert", usdPerHour=1)
    book.spend(r, 0.5)
    assert not book.alert_due(r)  # not exhausted yet: nothing to log
    book.spend(r, 0.6)
    st = book.state(r)
    assert st is not None
    assert st.exhausted
    assert st.action is BudgetAction.ALERT
    assert "(action alert)" in st.message()
    assert book.alert_due(r)  # the first request over budget logs
    assert not book.alert_due(r)  # and no other in this hour
    book.spend(r, 5)
    assert not book.alert_due(r)

    clock.set("2026-11-25T13:00:00")  # the next hour: a fresh budget, a fresh alert
    assert not book.alert_due(r)
    book.spend(r, 1.0)
    assert book.alert_due(r)
    assert not book.alert_due(r)


def test_hour_rollover(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    r = route(usdPerHour=2)
    clock.set("2026-11-25T14:59:59.900")
    book.spend(r, 2.5)
    st = book.state(r)
    assert st is not None
    assert st.exhausted
    assert st.resets_at == ts("2026-11-25T15:00:00")
    clock.set("2026-11-25T15:00:00")
    st = book.state(r)
    assert st is not None
    assert not st.exhausted
    assert st.spent_usd == 0
    assert st.window_start == ts("2026-11-25T15:00:00")
    assert st.resets_at == ts("2026-11-25T16:00:00")


def test_day_rollover_keeps_the_month(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    daily = route("d", usdPerDay=10)
    monthly = route("m", usdPerMonth=10)
    clock.set("2026-11-25T23:59:59")
    book.spend(daily, 10)
    book.spend(monthly, 10)
    clock.set("2026-11-26T00:00:00")
    d, m = book.state(daily), book.state(monthly)
    assert d is not None
    assert m is not None
    assert (d.exhausted, d.spent_usd) == (False, 0)
    assert (m.exhausted, m.spent_usd) == (True, 10)


@pytest.mark.parametrize(
    ("now", "start", "end", "wid"),
    [
        ("2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00", "m2026-12"),
        ("2028-02-29T10:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00", "m2028-02"),
    ],
)
def test_month_window_edges(now: str, start: str, end: str, wid: str) -> None:
    span = window_span("month", ts(now))
    assert (span.start, span.end, span.id) == (ts(start), ts(end), wid)


def test_window_ids_name_the_calendar_window() -> None:
    now = ts("2026-11-25T09:30:00")
    assert window_span("hour", now).id == "h2026-11-25T09"
    assert window_span("day", now).id == "d2026-11-25"


def test_spend_survives_a_reload_with_a_new_table(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    provider = CompiledProvider(
        name="deepseek",
        endpoints=(CompiledEndpoint(region="global", base_url="http://127.0.0.1:9"),),
    )
    old = CompiledTable(
        namespace="team-a", providers=(provider,), routes=(route("general", usdPerDay=50),)
    ).sealed()
    book.spend(old.routes[0], 40)
    # A reload: a different table object (re-parsed from its wire form), same route name.
    new = CompiledTable.from_json(old.to_json())
    assert new is not old
    assert new.routes[0] is not old.routes[0]
    st = book.state(new.routes[0])
    assert st is not None
    assert st.spent_usd == 40
    book.spend(new.routes[0], 15)
    st = book.state(old.routes[0])
    assert st is not None
    assert st.exhausted  # one counter, whichever object asks


def test_changed_limit_applies_to_the_spend_so_far(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    book.spend(route("general", usdPerDay=50), 60)
    st = book.state(route("general", usdPerDay=50))
    assert st is not None
    assert st.exhausted
    raised = book.state(route("general", usdPerDay=100))
    assert raised is not None
    assert (raised.exhausted, raised.spent_usd, raised.remaining_usd) == (False, 60, 40)
    lowered = book.state(route("general", usdPerDay=20))
    assert lowered is not None
    assert lowered.exhausted


def test_switching_window_kind_keeps_that_windows_spend(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    clock.set("2026-11-25T09:10:00")
    book.spend(route("general", usdPerDay=50), 7)
    clock.set("2026-11-25T10:10:00")
    book.spend(route("general", usdPerDay=50), 3)
    hourly = book.state(route("general", usdPerHour=5))
    assert hourly is not None
    assert (hourly.window, hourly.spent_usd) == ("hour", 3)  # this hour only


def test_remaining_gauge_and_observe(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    a, b = route("a", usdPerDay=10), route("b", usdPerHour=1)
    book.spend(a, 4)
    book.spend(b, 3)
    assert book.remaining() == {"a": 6, "b": 0}
    # The reloaded table drops b and adds c: the gauge follows it before c's first request.
    book.observe([route("a", usdPerDay=20), route("c", usdPerMonth=5)])
    assert book.remaining() == {"a": 16, "c": 5}
    assert [s.route for s in book.states()] == ["a", "c"]
    book.spend(b, 0.1)  # a request that started on the old table finishes
    assert "b" not in book.remaining()


def test_bad_costs_are_ignored(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    r = route(usdPerDay=1)
    for bad in (-5.0, 0.0, math.nan, math.inf):
        book.spend(r, bad)
    st = book.state(r)
    assert st is not None
    assert st.spent_usd == 0


def test_sub_cent_limits_are_shown_exactly(clock: Clock, route: Route) -> None:
    book = BudgetBook(clock=clock)
    st = book.state(route(usdPerHour=0.005))
    assert st is not None
    assert "of its $0.005/hour budget" in st.message()


def test_per_pod_book_has_no_redis(clock: Clock) -> None:
    book = BudgetBook(clock=clock)
    assert not book.redis_connected
    assert book.redis_url is None


def test_the_per_request_check_agrees_with_the_state_across_windows_and_tables(
    clock: Clock, route: Route
) -> None:
    """``exhausted`` (the dispatcher's check, read from cached counters) says what
    ``state`` says: across hour and day boundaries, a reloaded table's new route
    object, and ``observe``; and what ``spend`` charged is what ``state`` reports."""
    book = BudgetBook(clock=clock)
    hourly = route("chat", "reject", usdPerHour=1.0)

    def check(r: CompiledRoute) -> None:
        state = book.state(r)
        assert state is not None
        assert (book.exhausted(r) is not None) == state.exhausted

    book.spend(hourly, 0.6)
    check(hourly)
    book.spend(hourly, 0.5)
    check(hourly)  # 1.1 of 1.0: exhausted
    assert book.exhausted(hourly) is not None
    clock.set("2026-11-25T13:00:01")  # the next hour: a fresh window
    check(hourly)
    assert book.exhausted(hourly) is None
    book.spend(hourly, 0.4)
    reloaded = route("chat", "reject", usdPerHour=1.0)  # same name, a new table's object
    book.spend(reloaded, 0.4)
    state = book.state(reloaded)
    assert state is not None and state.spent_usd == pytest.approx(0.8)
    book.observe([reloaded])
    book.spend(reloaded, 0.3)
    check(reloaded)
    assert book.exhausted(reloaded) is not None  # 1.1 of 1.0 this hour
    daily = route("chat", "reject", usdPerDay=2.0)  # the limit changed window: day
    clock.set("2026-11-25T23:59:59")
    book.spend(daily, 1.5)
    check(daily)
    clock.set("2026-11-26T00:00:01")
    check(daily)
    state = book.state(daily)
    assert state is not None and state.spent_usd == 0.0
