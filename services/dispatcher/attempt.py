"""One try at submitting one unit job, as data: what the try knows between its backend calls (`SubmitTry`), what
it is sent from (`job_spec`), which step comes next (`next_step`) and how it reacts to a failed call (`react`).
Pure: the Submitter (`services.dispatcher.submit`) runs the steps."""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from upscaling.leases import START_WINDOW_S
from upscaling.openeo_backend.errors import BackendError, ErrorKind
from upscaling.openeo_backend.jobs import JobSpec, tag_marker
from upscaling.v1 import jobs_pb2

# A create request is sent at most this far into its lease's renewal window (a margin before START_WINDOW_S).
SEND_WINDOW_S = 0.9 * START_WINDOW_S


@dataclass
class Lease:
    """A try's lease on its job: `unit_jobs.submitted_at` as this try last set it."""

    job_id: int
    value: datetime
    renewed: float  # time.monotonic() of that

    def send_deadline(self) -> float:
        """The time.monotonic() after which a create request may no longer be sent under this renewal."""
        return self.renewed + SEND_WINDOW_S


class Step(enum.Enum):
    """The next thing a try does."""

    FIND = "find"      # look for the backend job an earlier create request may have made (by its tag)
    CREATE = "create"  # create the backend job (and start it in the same call without a start rate limit)
    STATUS = "status"  # ask the backend the status of the job before starting it
    START = "start"    # start the created backend job
    RECORD = "record"  # record the job `queued`


class Reaction(enum.Enum):
    """What a try does after a failed backend call."""

    WAIT = "wait"        # the backend is over a limit: back off and try again (never gives up)
    RETRY = "retry"      # transient: back off and try again
    GIVE_UP = "give_up"  # transient, but the maximum of attempts is reached: the job fails
    FAIL = "fail"        # permanent (or authentication refused after re-authenticating): the job fails


def react(error: BackendError, failures: int, max_attempts: int) -> Reaction:
    """The reaction to `error` when it is the try's `failures`-th transient failure (counting this one if it is
    transient)."""
    if error.kind is ErrorKind.LIMIT:
        return Reaction.WAIT
    if error.kind is ErrorKind.TRANSIENT:
        return Reaction.GIVE_UP if failures >= max_attempts else Reaction.RETRY
    return Reaction.FAIL


@dataclass
class SubmitTry:
    """What one try knows about its job between backend calls."""

    job_id: int
    task_id: int | None
    tag: str
    spec: JobSpec
    lease: Lease | None
    backend_job_id: str | None = None  # known (stored, or found/created by this round)
    backend_status: str | None = None  # the backend job's openEO status when known; None: ask before starting
    maybe_created: bool = False        # a create may have been sent (by this or an earlier try): find it first
    searched: bool = False             # this round already looked for the job by its tag
    search_not_before: float = 0.0     # time.monotonic() before which a search would be too early
    failures: int = 0                  # transient failures so far
    limit_waits: int = 0               # limit refusals so far
    started: float = field(default_factory=time.monotonic)

    @property
    def nothing_sent(self) -> bool:
        """No create request of this job may have reached the backend (its running-job slot can be freed)."""
        return not self.maybe_created and self.backend_job_id is None

    def new_round(self) -> None:
        """Start over after a failed or withdrawn call (the backend job id stays; a search is due again)."""
        self.searched = False


def next_step(t: SubmitTry) -> Step:
    """The next step of a try."""
    if t.backend_job_id is None:
        return Step.FIND if t.maybe_created and not t.searched else Step.CREATE
    if t.backend_status is None:
        return Step.STATUS
    if t.backend_status == "created":
        return Step.START
    return Step.RECORD


def job_spec(msg: jobs_pb2.SubmitJobMessage, row: dict[str, Any] | Any, arguments: dict[str, Any]) -> JobSpec:
    """The backend job of a unit job: the message's fields, else the job row's."""
    service = row["service"] or {}
    return JobSpec(
        process_id=msg.process_id or row["process_id"],
        namespace=service.get("application") or msg.service.application or None,
        arguments=arguments,
        title=msg.title or row["title"],
        description=f"Unit job {row['id']} of task {row['task_id']} {tag_marker(row['tag'])}",
        format=msg.format or row["format"] or "",
        tag=row["tag"])


def message_arguments(msg: jobs_pb2.SubmitJobMessage) -> dict[str, Any] | None:
    """The UDP arguments a message carries (None: read them from the job row)."""
    if not msg.parameters_json:
        return None
    arguments: dict[str, Any] = json.loads(msg.parameters_json)
    return arguments
