"""The monitor's polling interval rule (services.monitor.poller.next_interval)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from services.monitor.poller import CycleResult, next_interval

LOW, HIGH = 0.5, 10.0


def test_any_change_polls_at_the_shortest_interval() -> None:
    results = [CycleResult("a", active=5), CycleResult("b", active=1, changes=1)]
    assert next_interval(HIGH, results, LOW, HIGH) == LOW


def test_nothing_active_polls_at_the_longest_interval() -> None:
    assert next_interval(LOW, [CycleResult("a"), CycleResult("b")], LOW, HIGH) == HIGH
    assert next_interval(LOW, [], LOW, HIGH) == HIGH  # no backend polled by this replica


def test_active_without_changes_backs_off_by_half_up_to_the_longest() -> None:
    quiet = [CycleResult("a", active=3)]
    interval, seen = LOW, []
    for _ in range(12):
        interval = next_interval(interval, quiet, LOW, HIGH)
        seen.append(interval)
    assert seen[:3] == pytest.approx([0.75, 1.125, 1.6875])
    assert all(b >= a for a, b in pairwise(seen)) and seen[-1] == HIGH


def test_backoff_starts_from_the_shortest_when_the_current_is_below_it() -> None:
    assert next_interval(0.0, [CycleResult("a", active=1)], LOW, HIGH) == pytest.approx(LOW * 1.5)


def test_reported_costs_and_usage_are_recorded_when_they_differ() -> None:
    from services.monitor.poller import Monitor

    usage = {"cpu": {"value": 1.5, "unit": "cpu-seconds"}}
    row = {"costs": None, "usage": None}
    assert Monitor._spent(row, {"costs": 2, "usage": usage}) == {"costs": 2.0, "usage": usage}
    assert Monitor._spent({"costs": 2.0, "usage": usage}, {"costs": 2, "usage": usage}) == {}
    assert Monitor._spent(row, {"costs": "free", "usage": {"cpu": "lots"}}) == {}  # malformed: ignored
    assert Monitor._spent(row, {}) == {}
