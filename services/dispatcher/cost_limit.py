"""A task's cost limit where the dispatcher leases a job: a job of a task whose recorded costs reached its
`max_costs` is never submitted; the task's unsubmitted jobs end `canceled` with the reason
(`upscaling.jobs.store.stop_for_costs`). The lease statements refuse such jobs too (`costs.REACHED_SQL`), so a
job message read before the limit was reached cannot slip through. A job an earlier try leased (it may exist on
the backend) goes on as before: found by its tag, or submitted."""

from __future__ import annotations

import logging

import asyncpg
from aio_pika.abc import AbstractExchange

from upscaling import jobs
from upscaling.db import Row
from upscaling.jobs import costs

log = logging.getLogger(__name__)


def over_limit(row: Row) -> bool:
    """Whether a job row (with its task's `task_costs` and `max_costs`) may not be submitted for its task's costs."""
    return row["task_id"] is not None and costs.reached(row["max_costs"], row["task_costs"])


async def stop(pool: asyncpg.Pool, events: AbstractExchange, task_id: int) -> None:
    """Stop the task's unsubmitted jobs (one transaction) and publish the events after commit."""
    async with pool.acquire() as conn, conn.transaction():
        pending = await jobs.stop_for_costs(conn, task_id)
    await jobs.publish_committed(events, pending)
    log.info("task reached its max_costs: unsubmitted jobs canceled", extra={"task_id": task_id})
