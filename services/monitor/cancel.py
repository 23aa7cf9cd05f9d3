"""Cancellation: stop the backend jobs of unit jobs whose cancellation was requested."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from services.monitor import backend_api
from upscaling.backends import BackendConfig

log = logging.getLogger(__name__)

STOPPABLE = ("queued", "running")

Runner = Callable[..., Awaitable[Any]]


def to_stop(rows: Sequence[asyncpg.Record]) -> list[asyncpg.Record]:
    """Active jobs whose cancellation was requested and that run (or wait) on the backend."""
    return [r for r in rows if r["cancel"] and r["status"] in STOPPABLE and r["backend_job_id"]]


async def stop_jobs(run: Runner, backend: BackendConfig, timeout_s: float, rows: Sequence[asyncpg.Record],
                    calls: backend_api.CallCounter) -> int:
    """`DELETE /jobs/{id}/results` for each job (in worker threads); returns how many stops succeeded. The
    listing that follows reports them `canceled`, which is recorded like any other change."""
    outcomes = await asyncio.gather(
        *(run(backend_api.stop, backend, timeout_s, r["backend_job_id"], calls) for r in rows),
        return_exceptions=True)
    stopped = 0
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.warning("could not stop backend job", extra={"backend": backend.endpoint, "job_id": row["id"],
                                                             "backend_job_id": row["backend_job_id"],
                                                             "error": str(outcome)})
        else:
            stopped += 1
    return stopped
