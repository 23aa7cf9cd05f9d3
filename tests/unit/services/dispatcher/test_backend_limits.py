"""services.dispatcher.backend_limits against this run's PostgreSQL: which jobs count towards a backend's
running-job limit, reservations and their release, and the start-rate slots."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from services.dispatcher import backend_limits
from services.dispatcher.backend_limits import RESERVATION_TTL_S, lock_key
from upscaling.backends import BackendConfig
from upscaling.migrations import migrate


@pytest.fixture(scope="module", autouse=True)
def _migrated(infra: Any) -> Iterator[None]:
    asyncio.run(migrate(infra.database_url))
    yield


def _backend(max_running_jobs: int = 0, starts_per_second: float = 0.0) -> BackendConfig:
    endpoint = f"https://openeo-{uuid.uuid4().hex[:12]}.example/openeo/1.2"
    return BackendConfig(endpoint=endpoint, url=endpoint, max_running_jobs=max_running_jobs,
                         starts_per_second=starts_per_second)


async def _job(conn: asyncpg.Connection, backend: BackendConfig, status: str = "created", *,
               backend_job_id: str | None = None, reserved_s_ago: float | None = None, attempts: int = 0) -> int:
    """A unit job of `backend`; `reserved_s_ago` sets `submitted_at` that many seconds ago."""
    job_id: int = await conn.fetchval(
        "INSERT INTO unit_jobs (title, label, status, service, tag, backend, backend_job_id, attempts, submitted_at)"
        " VALUES ('limits test', 'openeo', $1, '{}'::jsonb, $2, $3, $4, $5,"
        " CASE WHEN $6::float8 IS NULL THEN NULL ELSE now() - make_interval(secs => $6) END) RETURNING id",
        status, uuid.uuid4().hex, backend.endpoint, backend_job_id, attempts, reserved_s_ago)
    return job_id


async def _slot_free(conn: asyncpg.Connection, backend: BackendConfig, job_id: int) -> bool:
    async with conn.transaction():
        return await backend_limits.running_slot_free(conn, backend, job_id)


def test_lock_key_is_stable_signed_64_bit_and_per_endpoint() -> None:
    keys = {lock_key(f"https://b{i}.example") for i in range(1000)}
    assert len(keys) == 1000 and all(-(2**63) <= k < 2**63 for k in keys)
    assert lock_key("https://b1.example") == lock_key("https://b1.example")
    assert any(k < 0 for k in keys)  # signed, as pg_advisory_xact_lock(bigint) takes it


async def test_unlimited_backend_needs_no_transaction(conn: asyncpg.Connection) -> None:
    assert await backend_limits.running_slot_free(conn, _backend(), 1) is True
    with pytest.raises(RuntimeError, match="inside a transaction"):
        await backend_limits.running_slot_free(conn, _backend(max_running_jobs=1), 1)


async def test_what_counts_towards_the_running_limit(conn: asyncpg.Connection) -> None:
    backend, other = _backend(max_running_jobs=3), _backend(max_running_jobs=3)
    candidate = await _job(conn, backend)
    # never counted: finished/failed/canceled jobs, unreserved or expired reservations, other backends' jobs
    for status in ("finished", "failed", "canceled"):
        await _job(conn, backend, status)
    await _job(conn, backend, reserved_s_ago=RESERVATION_TTL_S + 60)
    await _job(conn, backend)
    for status in ("queued", "running", "unknown"):
        await _job(conn, other, status)
    assert await _slot_free(conn, backend, candidate)
    # counted: queued/running/unknown, a fresh reservation, a created job the backend already knows
    await _job(conn, backend, "running")
    await _job(conn, backend, reserved_s_ago=1)
    assert await _slot_free(conn, backend, candidate)  # 2 of 3
    await _job(conn, backend, backend_job_id="j-1")
    assert not await _slot_free(conn, backend, candidate)  # 3 of 3


async def test_the_job_itself_does_not_count(conn: asyncpg.Connection) -> None:
    backend = _backend(max_running_jobs=1)
    job = await _job(conn, backend, reserved_s_ago=1)  # a redelivered message of a job reserved earlier
    assert await _slot_free(conn, backend, job)
    assert not await _slot_free(conn, backend, await _job(conn, backend))


async def test_release_takes_back_a_reservation_and_its_attempt(conn: asyncpg.Connection) -> None:
    backend = _backend(max_running_jobs=1)
    job = await _job(conn, backend, reserved_s_ago=1, attempts=2)
    reserved_at: datetime = await conn.fetchval("SELECT submitted_at FROM unit_jobs WHERE id = $1", job)
    await backend_limits.release_running_slot(conn, job, reserved_at.replace(year=2000))  # another reservation
    assert await conn.fetchval("SELECT submitted_at FROM unit_jobs WHERE id = $1", job) == reserved_at
    await backend_limits.release_running_slot(conn, job, reserved_at)
    row = await conn.fetchrow("SELECT submitted_at, attempts FROM unit_jobs WHERE id = $1", job)
    assert row["submitted_at"] is None and row["attempts"] == 1
    assert await _slot_free(conn, backend, await _job(conn, backend))  # the slot is free again
    created = await _job(conn, backend, backend_job_id="j-2", reserved_s_ago=1, attempts=1)
    await backend_limits.release_running_slot(conn, created)  # the create request was sent: kept
    row = await conn.fetchrow("SELECT submitted_at, attempts FROM unit_jobs WHERE id = $1", created)
    assert row["submitted_at"] is not None and row["attempts"] == 1


async def test_start_slots_are_spaced_by_the_rate(conn: asyncpg.Connection) -> None:
    assert await backend_limits.start_slot_wait(conn, _backend()) == 0.0
    backend = _backend(starts_per_second=2.0)
    waits = [await backend_limits.start_slot_wait(conn, backend) for _ in range(4)]
    # each reservation is one spacing (0.5 s and the margin) after the previous one; time passes between the
    # calls, so allow some slack
    spacing = backend_limits.start_spacing(backend)
    assert 0.5 < spacing < 0.55
    assert waits[0] == 0.0
    for i, wait in enumerate(waits[1:], 1):
        assert spacing * i - 0.3 < wait <= spacing * i, waits
    assert await backend_limits.start_slot_wait(conn, _backend(starts_per_second=2.0)) == 0.0  # per backend


def test_the_pacer_sends_in_the_slot_spaced_and_never_late() -> None:
    backend = _backend(starts_per_second=5.0)
    spacing = backend_limits.start_spacing(backend)
    pacer = backend_limits.StartPacer()
    slots = [pacer.slot(backend, 0.0) for _ in range(3)]  # reserved at once: still spaced locally
    assert [round(b - a, 6) for a, b in itertools.pairwise(slots)] == [round(spacing, 6)] * 2
    for slot in slots:
        pacer.wait_turn(backend, slot)
        assert time.monotonic() >= slot  # never before its slot (so never closer than the spacing to the last)
    late = pacer.slot(backend, 0.0)
    time.sleep(max(0.0, late - time.monotonic()) + spacing)  # the thread came a whole spacing after the slot
    with pytest.raises(backend_limits.SlotMissed):
        pacer.wait_turn(backend, late)
