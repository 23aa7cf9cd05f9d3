"""Delivery state in PostgreSQL (pure rules, on the real database): failures count per job and tag only while the
reason repeats, a new tag starts from zero, dead-letterings are counted apart; the dead-letter backoff; the
chaos plan."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.dispatcher import delivery
from services.dispatcher.dead_letters import DeadLetterHandler
from tests.chaos.harness import SERVICE_KINDS, ChaosConfig, plan
from upscaling.config import Settings
from upscaling.migrations import migrate


@pytest.fixture
async def job(infra, conn: asyncpg.Connection) -> int:
    await migrate(infra.database_url)
    return await conn.fetchval(
        "INSERT INTO unit_jobs (title, label, service, tag) VALUES ('t', 'openeo', '{}', $1) RETURNING id",
        f"uj-{uuid.uuid4()}")


async def test_failures_count_while_the_reason_repeats_and_restart_with_a_new_tag(conn: asyncpg.Connection,
                                                                                  job: int) -> None:
    assert await delivery.record_failure(conn, job, "tag-a", "ValueError: x") == 1
    assert await delivery.record_failure(conn, job, "tag-a", "ValueError: x") == 2
    assert await delivery.record_failure(conn, job, "tag-a", "KeyError: y") == 1  # another reason
    assert await delivery.record_failure(conn, job, "tag-a", "KeyError: y") == 2
    assert await delivery.count_dead_letter(conn, job, "tag-a") == 1
    assert await delivery.failures(conn, job, "tag-a") == (2, "KeyError: y", 1)
    assert await delivery.failures(conn, job, "tag-b") == (0, None, 0)  # another submission knows nothing
    assert await delivery.count_dead_letter(conn, job, "tag-b") == 1  # a new tag starts from zero
    assert await delivery.failures(conn, job, "tag-b") == (0, None, 1)
    assert await delivery.record_failure(conn, job, "tag-b", "KeyError: y") == 1


def test_dead_letter_backoff_doubles_up_to_its_bound() -> None:
    handler = DeadLetterHandler.__new__(DeadLetterHandler)
    handler.settings = Settings(dead_letter_backoff_base_s=1.0, dead_letter_backoff_max_s=6.0)
    for n, (low, high) in {1: (0.5, 1.0), 2: (1.0, 2.0), 3: (2.0, 4.0), 4: (3.0, 6.0), 9: (3.0, 6.0)}.items():
        delays = [handler.backoff(n) for _ in range(50)]
        assert all(low <= d <= high for d in delays), (n, min(delays), max(delays))


def test_chaos_plan_kills_every_kind_outside_the_outages() -> None:
    config = ChaosConfig(seed=3, jobs=10, window_s=100, outage_s=20, kills_per_kind=2, limit_s=10)
    services = {"dispatcher": ["d1", "d2"], "monitor": ["m1", "m2"], "gateway": ["g"], "tiler": ["t"]}
    faults = plan(config, services)
    assert faults == plan(config, services)  # seeded
    kinds = {name: kind for kind, names in services.items() for name in names}
    kills = [f for f in faults if f.kind == "kill"]
    assert sorted(kinds[f.target] for f in kills) == sorted(SERVICE_KINDS * 2)
    outages = [f for f in faults if f.kind == "outage"]
    assert {f.target for f in outages} == {"rabbitmq", "postgresql"}
    for kill in kills:
        assert all(not (o.at_s - 2 <= kill.at_s <= o.at_s + o.down_s + 4) for o in outages)
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
