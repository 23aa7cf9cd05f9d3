"""Delivery state of job messages in PostgreSQL (`job_delivery_state`, `dead_letters`, `dispatcher_heartbeats`):
failures counted per job and submission (tag) by the dispatcher itself, never by the broker's delivery count, so
consumer deaths cannot make a healthy job poison."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import uuid
from collections.abc import Callable, Iterator

import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from upscaling.db import AnyConnection

log = logging.getLogger(__name__)

# Consecutive failures for the same reason (a new reason starts again at 1); a new tag starts from zero.
_FAILURE_SQL = """
INSERT INTO job_delivery_state AS s (job_id, tag, failures, last_error) VALUES ($1, $2, 1, $3)
ON CONFLICT (job_id) DO UPDATE SET
    failures = CASE WHEN s.tag = EXCLUDED.tag AND s.last_error IS NOT DISTINCT FROM EXCLUDED.last_error
                    THEN s.failures + 1 ELSE 1 END,
    dead_letters = CASE WHEN s.tag = EXCLUDED.tag THEN s.dead_letters ELSE 0 END,
    tag = EXCLUDED.tag, last_error = EXCLUDED.last_error, updated = now()
RETURNING failures
"""

_DEAD_LETTER_SQL = """
INSERT INTO job_delivery_state AS s (job_id, tag, dead_letters) VALUES ($1, $2, 1)
ON CONFLICT (job_id) DO UPDATE SET
    dead_letters = CASE WHEN s.tag = EXCLUDED.tag THEN s.dead_letters + 1 ELSE 1 END,
    failures = CASE WHEN s.tag = EXCLUDED.tag THEN s.failures ELSE 0 END,
    last_error = CASE WHEN s.tag = EXCLUDED.tag THEN s.last_error END,
    tag = EXCLUDED.tag, updated = now()
RETURNING dead_letters
"""


async def record_failure(pool: asyncpg.Pool, job_id: int, tag: str, error: str) -> int:
    """Count a failed handling of a job's message; returns its consecutive failures for this reason."""
    return await pool.fetchval(_FAILURE_SQL, job_id, tag, error[:2000])


async def failures(conn: AnyConnection | asyncpg.Pool, job_id: int, tag: str) -> tuple[int, str | None, int]:
    """(failures for the last reason, that reason, dead letters) of a job's submission with this tag."""
    row = await conn.fetchrow("SELECT failures, last_error, dead_letters FROM job_delivery_state"
                              " WHERE job_id = $1 AND tag = $2", job_id, tag)
    return (0, None, 0) if row is None else (row["failures"], row["last_error"], row["dead_letters"])


async def count_dead_letter(conn: AnyConnection, job_id: int, tag: str) -> int:
    """Count one more dead-lettering of a job's submission; returns how many it has had."""
    return await conn.fetchval(_DEAD_LETTER_SQL, job_id, tag)


async def log_dead_letter(conn: AnyConnection | asyncpg.Pool, job_id: int | None, decision: str, reason: str,
                          body: bytes) -> None:
    """Keep what was decided about a dead letter (the body up to 64 KiB)."""
    await conn.execute("INSERT INTO dead_letters (job_id, decision, reason, body) VALUES ($1, $2, $3, $4)",
                       job_id, decision, reason[:2000], body[:65536])


def is_connection_error(exc: BaseException) -> bool:
    """Whether an error comes from a lost PostgreSQL or RabbitMQ connection (an outage, never a job's fault)."""
    return isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                            asyncpg.TooManyConnectionsError, AMQPError, ChannelInvalidStateError, ConnectionError))


async def database_up(pool: asyncpg.Pool) -> bool:
    """Whether the database answers right now."""
    try:
        await pool.fetchval("SELECT 1", timeout=5)
        return True
    except Exception:
        return False


async def wait_database(pool: asyncpg.Pool, stop: asyncio.Event | None = None) -> None:
    """Wait until the database answers (or `stop` is set)."""
    delay = 0.2
    while not await database_up(pool):
        if stop is not None and stop.is_set():
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def ride_out_outage(message: AbstractIncomingMessage, pool: asyncpg.Pool, stopping: asyncio.Event,
                          exc: Exception, what: str) -> bool | None:
    """After `exc` while handling `message`: None when no dependency is down (the caller decides what the error
    means); True to try the message again (the database was down and is back); False when this delivery is over
    (its channel is gone, so the broker redelivers it, or the service stops: it went back to the queue)."""
    if channel_gone(message):
        log.warning("broker connection lost while %s; the message will be redelivered", what,
                    extra={"error": repr(exc)})
        return False
    if await database_up(pool):
        return None
    log.warning("database unavailable while %s; holding the message until it is back", what,
                extra={"error": repr(exc)})
    await wait_database(pool, stopping)
    if stopping.is_set():
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)
        return False
    return True


def channel_gone(message: AbstractIncomingMessage) -> bool:
    """Whether the channel a message came on is closed (a broker outage: the broker redelivers it)."""
    try:
        return message.channel.is_closed
    except ChannelInvalidStateError:
        return True


class HeldJobs:
    """The jobs whose messages a consumer holds right now (several messages of one job are counted)."""

    def __init__(self) -> None:
        self._counts: collections.Counter[int] = collections.Counter()

    @contextlib.contextmanager
    def hold(self, job_id: int) -> Iterator[None]:
        self._counts[job_id] += 1
        try:
            yield
        finally:
            self._counts[job_id] -= 1
            if self._counts[job_id] <= 0:
                del self._counts[job_id]

    def ids(self) -> set[int]:
        return set(self._counts)


class Heartbeat:
    """This dispatcher's row in `dispatcher_heartbeats`: renewed every `interval_s` with the ids of the jobs whose
    messages it holds, removed on a clean stop."""

    def __init__(self, pool: asyncpg.Pool, held: Callable[[], set[int]], interval_s: float) -> None:
        self.pool = pool
        self.held = held
        self.interval_s = interval_s
        self.name = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await self.pool.execute(
                    "INSERT INTO dispatcher_heartbeats (consumer, seen_at, job_ids) VALUES ($1, now(), $2)"
                    " ON CONFLICT (consumer) DO UPDATE SET seen_at = now(), job_ids = EXCLUDED.job_ids",
                    self.name, sorted(self.held()), timeout=10)
            except Exception as exc:
                log.debug("heartbeat not written: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.pool.execute("DELETE FROM dispatcher_heartbeats WHERE consumer = $1", self.name, timeout=5)
