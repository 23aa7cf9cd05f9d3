"""The spending rule (pure): what job reports add to their task, usage totals, the max_costs limit."""

from __future__ import annotations

import math

from upscaling.jobs import costs

CPU = {"cpu": {"value": 4.0, "unit": "cpu-seconds"}, "duration": {"value": 1.0, "unit": "seconds"}}


def test_backend_values_are_checked() -> None:
    assert costs.as_costs(1) == 1.0 and costs.as_costs(2.5) == 2.5
    assert [costs.as_costs(v) for v in (None, True, "3", math.nan, math.inf)] == [None] * 5
    assert costs.as_usage({"cpu": {"value": 3, "unit": "cpu-seconds"}, "memory": {"value": "x"}, "bad": 5,
                           "disk": {"value": 1}}) == {"cpu": {"value": 3.0, "unit": "cpu-seconds"},
                                                      "disk": {"value": 1.0, "unit": ""}}
    assert costs.as_usage(None) is None and costs.as_usage({"memory": {}}) is None


def test_a_report_adds_its_difference_and_a_reset_takes_nothing_back() -> None:
    spend = costs.Spend()
    spend.add({"costs": None, "usage": None}, {"costs": 2.0, "usage": CPU})
    assert spend.costs == 2.0 and spend.usage == {("cpu", "cpu-seconds"): 4.0, ("duration", "seconds"): 1.0}
    later = costs.Spend()
    later.add({"costs": 2.0, "usage": CPU}, {"costs": 3.5})
    assert later.costs == 1.5 and later.usage == {}
    reset = costs.Spend()  # a resubmission forgets the job's report: what it cost stays spent
    reset.add({"costs": 3.5, "usage": CPU}, {"costs": None, "usage": None})
    assert not reset
    again = costs.Spend()  # the next attempt's report adds in full
    again.add({"costs": None, "usage": None}, {"costs": 1.0})
    assert again.costs == 1.0


def test_usage_totals_never_mix_units() -> None:
    spend = costs.Spend()
    spend.add({}, {"usage": CPU})
    total = costs.add_usage(None, spend)
    assert total == {"cpu": {"value": 4.0, "unit": "cpu-seconds"}, "duration": {"value": 1.0, "unit": "seconds"}}
    other = costs.Spend()
    other.add({}, {"usage": {"cpu": {"value": 1.0, "unit": "cpu-hours"}, "duration": {"value": 2, "unit": "seconds"}}})
    assert costs.add_usage(total, other) == {"cpu": {"value": 4.0, "unit": "cpu-seconds"},
                                             "duration": {"value": 3.0, "unit": "seconds"},
                                             "cpu (cpu-hours)": {"value": 1.0, "unit": "cpu-hours"}}


def test_the_limit_is_reached_at_or_above_it() -> None:
    assert not costs.reached(None, 1e9)
    assert not costs.reached(10.0, 9.99) and costs.reached(10.0, 10.0) and costs.reached(10.0, 10.4)
    assert not costs.reached(10.0, None)
    assert costs.stop_reason(10.0, 10.4) == "max_costs 10 reached (spent 10.4)"
    assert costs.stop_reason(0.25, 0.30000000000000004) == "max_costs 0.25 reached (spent 0.3)"
