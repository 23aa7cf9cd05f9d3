"""The decisions of one submission try: its next step, its reaction to a failed call, what it sends."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from services.dispatcher.attempt import (
    SEND_WINDOW_S,
    Lease,
    Reaction,
    Step,
    SubmitTry,
    job_spec,
    message_arguments,
    next_step,
    react,
)
from upscaling.leases import START_WINDOW_S
from upscaling.openeo_backend.errors import (
    BackendAuthError,
    BackendError,
    BackendLimitError,
    BackendPermanentError,
    BackendTimeoutError,
    BackendTransientError,
)
from upscaling.openeo_backend.jobs import JobSpec
from upscaling.v1 import common_pb2, jobs_pb2

SPEC = JobSpec("p", None, {}, "t", "d")


def attempt(**state: Any) -> SubmitTry:
    return SubmitTry(1, 2, "uj-1", SPEC, None, **state)


@pytest.mark.parametrize(("state", "step"), [
    ({}, Step.CREATE),                                             # a fresh job: create it
    ({"maybe_created": True}, Step.FIND),                          # an earlier create may have made it: look first
    ({"maybe_created": True, "searched": True}, Step.CREATE),      # looked, not found: create
    ({"backend_job_id": "j"}, Step.STATUS),                        # known job, status unknown: ask
    ({"backend_job_id": "j", "backend_status": "created"}, Step.START),
    ({"backend_job_id": "j", "backend_status": "queued"}, Step.RECORD),
    ({"backend_job_id": "j", "backend_status": "running"}, Step.RECORD),
    ({"backend_job_id": "j", "backend_status": "error", "maybe_created": True}, Step.RECORD),
])
def test_next_step(state: dict[str, Any], step: Step) -> None:
    assert next_step(attempt(**state)) is step


def test_a_new_round_looks_for_the_job_again() -> None:
    t = attempt(maybe_created=True, searched=True)
    t.new_round()
    assert next_step(t) is Step.FIND


def test_nothing_sent_only_before_any_create() -> None:
    assert attempt().nothing_sent
    assert not attempt(maybe_created=True).nothing_sent
    assert not attempt(backend_job_id="j").nothing_sent


@pytest.mark.parametrize(("error", "failures", "reaction"), [
    (BackendLimitError("busy"), 0, Reaction.WAIT),
    (BackendLimitError("busy"), 100, Reaction.WAIT),              # limits never give up
    (BackendTransientError("503"), 1, Reaction.RETRY),
    (BackendTimeoutError("slow"), 7, Reaction.RETRY),
    (BackendTransientError("503"), 8, Reaction.GIVE_UP),
    (BackendAuthError("refused"), 0, Reaction.FAIL),              # already re-authenticated once by the client
    (BackendPermanentError("bad graph"), 0, Reaction.FAIL),
])
def test_react(error: BackendError, failures: int, reaction: Reaction) -> None:
    assert react(error, failures, max_attempts=8) is reaction


def test_lease_send_deadline_within_the_start_window() -> None:
    now = time.monotonic()
    lease = Lease(1, datetime.now(UTC), now)
    assert now < lease.send_deadline() < now + START_WINDOW_S
    assert lease.send_deadline() == now + SEND_WINDOW_S


def test_job_spec_prefers_the_message_and_falls_back_to_the_row() -> None:
    row = {"id": 5, "task_id": 9, "tag": "uj-5", "service": {"application": "https://udp/x.json"},
           "process_id": "row_process", "title": "row title", "format": "netcdf"}
    msg = jobs_pb2.SubmitJobMessage(job_id=5, process_id="msg_process", title="msg title", format="geojson",
                                    service=common_pb2.ServiceRef(application="https://other"))
    spec = job_spec(msg, row, {"year": "2024"})
    assert spec == JobSpec("msg_process", "https://udp/x.json", {"year": "2024"}, "msg title",
                           "Unit job 5 of task 9 [uj-5]", "geojson", tag="uj-5")
    bare = job_spec(jobs_pb2.SubmitJobMessage(job_id=5), {**row, "service": None}, {})
    assert (bare.process_id, bare.namespace, bare.title, bare.format) == ("row_process", None, "row title", "netcdf")


def test_message_arguments() -> None:
    assert message_arguments(jobs_pb2.SubmitJobMessage(job_id=1)) is None
    assert message_arguments(jobs_pb2.SubmitJobMessage(job_id=1, parameters_json='{"a": 1}')) == {"a": 1}
