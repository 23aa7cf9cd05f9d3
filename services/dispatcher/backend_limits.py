"""Per-backend limits shared by every dispatcher replica, kept in PostgreSQL.

- Running jobs: a transaction-level advisory lock per backend serialises reservations; the jobs that count are
  the backend's `queued`/`running`/`unknown` jobs plus those reserved for submission (still `created`, with
  `submitted_at` set by a reservation less than `RESERVATION_TTL_S` ago, or a backend job already created).
  A reservation is `submitted_at` on the job row, set in the same transaction as the check.
- Starts per second: the next free start slot of a backend lives in `backend_state.next_start_at`; reserving
  one is a single upsert (row-locked), the caller sleeps until its slot. Slots are `start_spacing` apart (the
  rate's interval plus a small margin, so the jitter between sending a request and the backend taking it cannot
  put one start more in a second than the rate allows). `StartPacer` keeps the slot at the moment the worker
  thread sends the request: never before its slot, never closer than the spacing to this process's previous
  start, and not at all once the slot passed by more than half the spacing (a start that waited for a
  worker thread behind creates takes a new slot instead of going out in a burst with the others).
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime

import asyncpg

from upscaling.backends import BackendConfig
from upscaling.db import AnyConnection

# Start slots are this much further apart than the rate's interval (see the module docstring).
START_SPACING_MARGIN = 1.05
# A start is sent at most this fraction of the spacing after its slot; later, it takes a new slot.
START_SLOT_TOLERANCE = 0.5

# A reservation older than this no longer counts (its dispatcher died and the message was dead-lettered).
RESERVATION_TTL_S = 600

# The one rule of which jobs count against a backend's running-jobs limit ($3: RESERVATION_TTL_S).
_ACTIVE = """(status IN ('queued', 'running', 'unknown')
       OR (status = 'created' AND (backend_job_id IS NOT NULL
                                   OR submitted_at > now() - make_interval(secs => $3))))"""

_COUNT_SQL = f"""
SELECT count(*) FROM unit_jobs
WHERE backend = $1 AND id <> $2
  AND {_ACTIVE}
"""

_COUNTS_SQL = f"""
SELECT backend, count(*) AS n FROM unit_jobs
WHERE backend = ANY($1::text[]) AND id <> $2
  AND {_ACTIVE}
GROUP BY backend
"""

_START_SLOT_SQL = """
INSERT INTO backend_state AS s (backend, next_start_at) VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (backend) DO UPDATE
    SET next_start_at = greatest(s.next_start_at, now()) + make_interval(secs => $2)
RETURNING extract(epoch FROM s.next_start_at - make_interval(secs => $2) - now())::float8 AS wait_s
"""


def lock_key(endpoint: str) -> int:
    """A signed 64-bit advisory lock key derived from "dispatcher:" + the backend endpoint."""
    digest = hashlib.sha256(f"dispatcher:{endpoint}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def running_slot_free(conn: AnyConnection, backend: BackendConfig, job_id: int) -> bool:
    """Whether `job_id` may be submitted to `backend` now (call inside a transaction, then reserve the slot by
    setting the job's `submitted_at` and `backend` before committing: the advisory lock is held until then)."""
    if backend.max_running_jobs <= 0:
        return True
    if not conn.is_in_transaction():
        raise RuntimeError("running_slot_free must run inside a transaction")
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(backend.endpoint))
    count = await conn.fetchval(_COUNT_SQL, backend.endpoint, job_id, float(RESERVATION_TTL_S))
    return count < backend.max_running_jobs


async def active_counts(conn: AnyConnection | asyncpg.Pool, endpoints: list[str], job_id: int = 0
                        ) -> dict[str, int]:
    """The jobs counting against each backend's running-jobs limit (the rule of `running_slot_free`), without
    `job_id`: an estimate for choosing a backend (`running_slot_free` is the check that holds)."""
    rows = await conn.fetch(_COUNTS_SQL, endpoints, job_id, float(RESERVATION_TTL_S))
    counts = dict.fromkeys(endpoints, 0)
    counts.update({r["backend"]: r["n"] for r in rows})
    return counts


async def release_running_slot(conn: AnyConnection | asyncpg.Pool, job_id: int,
                               reserved_at: datetime | None = None) -> None:
    """Drop the reservation of a job whose create request was never sent (it stays `created`; the attempt
    counted by the reservation is taken back). With `reserved_at`, only if the reservation is still that one."""
    await conn.execute("UPDATE unit_jobs SET submitted_at = NULL, attempts = greatest(attempts - 1, 0)"
                       " WHERE id = $1 AND status = 'created' AND backend_job_id IS NULL"
                       " AND submitted_at IS NOT NULL AND ($2::timestamptz IS NULL OR submitted_at = $2)",
                       job_id, reserved_at)


def start_spacing(backend: BackendConfig) -> float:
    """Seconds between two start slots of a backend (0 without a rate limit)."""
    if backend.starts_per_second <= 0:
        return 0.0
    return START_SPACING_MARGIN / backend.starts_per_second


async def start_slot_wait(conn: AnyConnection | asyncpg.Pool, backend: BackendConfig) -> float:
    """Reserve the backend's next start slot; returns the seconds to wait until it (0 without a rate limit)."""
    if backend.starts_per_second <= 0:
        return 0.0
    wait_s = await conn.fetchval(_START_SLOT_SQL, backend.endpoint, start_spacing(backend))
    return max(0.0, float(wait_s or 0.0))


class SlotMissed(Exception):
    """A start got its worker thread too long after its slot: nothing was sent, it needs a new slot."""


class StartPacer:
    """This process's start slots per backend, kept where the request is sent (thread-safe): `slot` turns a
    reserved slot into a local time.monotonic() no closer than the spacing to the previous one; `wait_turn`, in
    the worker thread right before the request, waits for the slot and for the spacing since this process's last
    start, or raises SlotMissed when the slot passed by more than the tolerance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_slot: dict[str, float] = {}
        self._sent: dict[str, float] = {}
        self._send_locks: dict[str, threading.Lock] = {}

    def slot(self, backend: BackendConfig, wait_s: float) -> float:
        """The local time of a slot reserved `wait_s` from now."""
        spacing = start_spacing(backend)
        with self._lock:
            at = max(time.monotonic() + wait_s, self._next_slot.get(backend.endpoint, 0.0))
            self._next_slot[backend.endpoint] = at + spacing
        return at

    def wait_turn(self, backend: BackendConfig, slot: float) -> None:
        """Block until this start may be sent (call right before sending it); SlotMissed when it is too late."""
        spacing = start_spacing(backend)
        with self._lock:
            send_lock = self._send_locks.setdefault(backend.endpoint, threading.Lock())
        with send_lock:
            at = max(slot, self._sent.get(backend.endpoint, 0.0) + spacing)
            if at > slot + START_SLOT_TOLERANCE * spacing or time.monotonic() > slot + START_SLOT_TOLERANCE * spacing:
                raise SlotMissed()
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._sent[backend.endpoint] = at  # planned, not actual: a late wake-up does not push the next one out
