"""The dispatcher's cost-limit check (pure part)."""

from __future__ import annotations

from services.dispatcher.cost_limit import over_limit


def test_a_job_of_a_task_at_its_limit_is_not_submitted() -> None:
    assert over_limit({"task_id": 1, "max_costs": 10.0, "task_costs": 10.0})
    assert over_limit({"task_id": 1, "max_costs": 10.0, "task_costs": 12.5})
    assert not over_limit({"task_id": 1, "max_costs": 10.0, "task_costs": 9.5})
    assert not over_limit({"task_id": 1, "max_costs": None, "task_costs": 1e9})
    assert not over_limit({"task_id": None, "max_costs": None, "task_costs": None})  # a standalone job
