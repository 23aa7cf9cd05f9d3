"""Cancellation: stop the backend jobs of unit jobs whose cancellation was requested."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from upscaling.backends import BackendConfig

log = logging.getLogger(__name__)

STOPPABLE = ("queued", "running")

# Stops one backend job: (backend, backend job id), run in a worker thread.
Stopper = Callable[[BackendConfig, str], Awaitable[Any]]


def to_stop(rows: Sequence[asyncpg.Record]) -> list[asyncpg.Record]:
    """Active jobs whose cancellation was requested and that run (or wait) on the backend."""
    return [r for r in rows if r["cancel"] and r["status"] in STOPPABLE and r["backend_job_id"]]


async def stop_jobs(stop: Stopper, backend: BackendConfig, rows: Sequence[asyncpg.Record]) -> int:
    """`stop` (`DELETE /jobs/{id}/results`) each job at once; returns how many stops succeeded. The listing that
    follows reports them `canceled`, which is recorded like any other change."""
    outcomes = await asyncio.gather(*(stop(backend, r["backend_job_id"]) for r in rows), return_exceptions=True)
    stopped = 0
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.warning("could not stop backend job", extra={"backend": backend.endpoint, "job_id": row["id"],
                                                             "backend_job_id": row["backend_job_id"],
                                                             "error": str(outcome)})
        else:
            stopped += 1
    return stopped
