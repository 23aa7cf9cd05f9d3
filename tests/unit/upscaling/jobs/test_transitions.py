"""The one transition rule: a batch of changes does what the same changes do one by one."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upscaling.jobs import transitions
from upscaling.statuses import JOB_STATUSES, TERMINAL_JOB_STATUSES, derive_task_status

JOB_IDS = (1, 2, 3, 4)


def fresh_jobs() -> dict[int, dict[str, Any]]:
    return {job_id: {"id": job_id, "status": "created", "tag": f"t-{job_id}", "backend_job_id": None,
                     "progress": None, "message": None, "usage": None, "costs": None, "results": None}
            for job_id in JOB_IDS}


changes = st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(JOB_STATUSES),
    "backend_job_id": st.sampled_from([None, "b-1", "b-2"]),
    "progress": st.sampled_from([None, 0.0, 50.0, 100.0]),
    "message": st.sampled_from([None, "boom"]),
    "results": st.sampled_from([None, {"assets": {}}]),
    "allow_from_terminal": st.booleans(),
    "expect_tag": st.sampled_from(["t-1", "t-2"]),
})
sequences = st.lists(st.tuples(st.sampled_from(JOB_IDS), changes), max_size=25)


def run_in_batches(changes_: list[tuple[int, dict[str, Any]]], sizes: list[int]
                   ) -> tuple[dict[int, dict[str, Any]], dict[str, int], list[tuple[int, dict[str, Any]]], set[int]]:
    """Apply the changes in consecutive batches of the given sizes (the rest as one batch), carrying the state."""
    jobs = fresh_jobs()
    counts = dict(Counter(j["status"] for j in jobs.values()))
    events: list[tuple[int, dict[str, Any]]] = []
    finished: set[int] = set()
    i = 0
    for size in [*sizes, len(changes_)]:
        batch = changes_[i:i + max(1, size)]
        i += len(batch)
        if not batch:
            break
        plan = transitions.plan(jobs, counts, batch)
        assert plan.counts is not None
        counts = plan.counts
        jobs.update({job_id: row for job_id, row in plan.rows.items()})
        events.extend((e.job_id, e.state) for e in plan.events)
        finished |= plan.finish
    return jobs, counts, events, finished


@settings(max_examples=300, deadline=None)
@given(sequences, st.lists(st.integers(min_value=1, max_value=6), max_size=10))
def test_batches_and_single_changes_agree(changes_: list[tuple[int, dict[str, Any]]], sizes: list[int]) -> None:
    one_by_one = run_in_batches(changes_, [1] * len(changes_))
    batched = run_in_batches(changes_, sizes)
    whole = run_in_batches(changes_, [len(changes_)])
    assert one_by_one == batched == whole
    jobs, counts, _, _ = whole
    # The stored counts always match the jobs, so the task status derived from them is the true one.
    assert counts == dict(Counter(j["status"] for j in jobs.values()))
    assert derive_task_status(counts) == derive_task_status(Counter(j["status"] for j in jobs.values()))


def test_terminal_jobs_keep_their_status_unless_allowed() -> None:
    job = fresh_jobs()[1] | {"status": "finished"}
    assert transitions.apply(job, {"status": "running"}) == {}
    assert transitions.apply(job, {"status": "created", "allow_from_terminal": True}) == {"status": "created"}
    assert transitions.apply(job, {"status": "finished", "progress": 100.0}) == {"progress": 100.0}


def test_an_unchanged_change_records_nothing() -> None:
    jobs = fresh_jobs()
    plan = transitions.plan(jobs, {"created": 4}, [(1, {"status": "created", "message": None})])
    assert plan.rows == {} and plan.events == [] and plan.counts == {"created": 4}


def test_private_fields_change_without_an_event() -> None:
    plan = transitions.plan(fresh_jobs(), {"created": 4}, [(2, {"results": {"type": "Collection"}})])
    assert plan.rows[2]["results"] == {"type": "Collection"} and plan.events == [] and not plan.spend


def test_reported_costs_are_an_event_and_add_to_the_task() -> None:
    usage = {"cpu": {"value": 2.0, "unit": "cpu-seconds"}}
    plan = transitions.plan(fresh_jobs(), {"created": 4}, [(2, {"usage": usage, "costs": 3.0})])
    assert [e.state["costs"] for e in plan.events] == [3.0] and plan.events[0].state["usage"] == usage
    assert plan.spend.costs == 3.0 and plan.spend.usage == {("cpu", "cpu-seconds"): 2.0}


def test_a_stale_tag_leaves_the_job_alone() -> None:
    plan = transitions.plan(fresh_jobs(), {"created": 4}, [(1, {"status": "queued", "expect_tag": "t-9"}),
                                                           (2, {"status": "queued", "expect_tag": "t-2"})])
    assert plan.stale == {1} and set(plan.rows) == {2} and plan.counts == {"created": 3, "queued": 1}


def test_counts_missing_a_job_ask_for_a_recount() -> None:
    with pytest.raises(transitions.CountsMissed):
        transitions.plan(fresh_jobs(), {"queued": 4}, [(1, {"status": "running"})])


def test_terminal_changes_set_finished_and_standalone_jobs_have_no_counts() -> None:
    plan = transitions.plan(fresh_jobs(), None, [(3, {"status": "failed", "message": "x"}), (3, {"progress": 1.0})])
    assert plan.counts is None and plan.finish == {3} and plan.rows[3]["status"] in TERMINAL_JOB_STATUSES
    assert [e.job_id for e in plan.events] == [3, 3]


def test_unknown_change_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="not a job change"):
        transitions.apply(fresh_jobs()[1], {"tag": "x"})
