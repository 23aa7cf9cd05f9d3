"""The task status rules of upscaling.statuses (see its docstring) and the openEO status mapping."""

from __future__ import annotations

from itertools import product

import pytest

from upscaling.statuses import (
    ACTIVE_JOB_STATUSES,
    JOB_STATUSES,
    TASK_STATUSES,
    TERMINAL_JOB_STATUSES,
    derive_task_status,
    from_openeo,
    job_status_from_proto,
    job_status_to_proto,
    task_status_from_proto,
    task_status_to_proto,
)


@pytest.mark.parametrize(("counts", "cancel_requested", "expected"), [
    ({}, False, "created"),
    ({}, True, "canceled"),
    ({"created": 3}, False, "created"),
    ({"created": 3}, True, "created"),  # cancel requested, jobs not yet canceled: still what they are
    ({"created": 2, "queued": 1}, False, "queued"),
    ({"created": 2, "finished": 1}, False, "queued"),  # work remains, some submitted, none running
    ({"unknown": 1}, False, "queued"),
    ({"created": 1, "running": 1, "failed": 5}, False, "running"),
    ({"queued": 4, "running": 1}, False, "running"),
    ({"finished": 1, "failed": 9}, False, "finished"),
    ({"finished": 1, "canceled": 9}, False, "finished"),
    ({"failed": 2, "canceled": 1}, False, "failed"),
    ({"canceled": 3}, False, "canceled"),
    ({"finished": 3}, True, "canceled"),  # every job terminal and the task was canceled
    ({"failed": 1, "running": 0}, False, "failed"),  # zero counts are ignored
    ({"created": 0, "finished": 2}, False, "finished"),
])
def test_derive_task_status(counts: dict[str, int], cancel_requested: bool, expected: str) -> None:
    assert derive_task_status(counts, cancel_requested) == expected


def test_every_combination_gives_a_task_status_and_terminal_only_when_every_job_is() -> None:
    for values in product((0, 1, 2), repeat=len(JOB_STATUSES)):
        counts = dict(zip(JOB_STATUSES, values, strict=True))
        if not any(values):
            continue  # a task without jobs: the first two cases above
        for cancel in (False, True):
            status = derive_task_status(counts, cancel)
            assert status in TASK_STATUSES
            active = sum(counts[s] for s in ACTIVE_JOB_STATUSES)
            assert (status in TERMINAL_JOB_STATUSES) == (active == 0), (counts, cancel, status)


@pytest.mark.parametrize(("openeo", "apex"), [
    ("created", "created"), ("queued", "queued"), ("running", "running"), ("finished", "finished"),
    ("canceled", "canceled"), ("cancelled", "canceled"), ("error", "failed"), ("FINISHED", "finished"),
    ("", "unknown"), (None, "unknown"), ("paused", "unknown"),
])
def test_from_openeo(openeo: str | None, apex: str) -> None:
    assert from_openeo(openeo) == apex


def test_proto_round_trips() -> None:
    for status in JOB_STATUSES:
        assert job_status_from_proto(job_status_to_proto(status)) == status
    for status in TASK_STATUSES:
        assert task_status_from_proto(task_status_to_proto(status)) == status
