"""The migration runner against the real PostgreSQL: ordering, idempotence, advisory lock, bad files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Infra
from tests.infra import unique_name, with_database
from upscaling.migrations import apply_migrations, discover, migrate


@pytest.fixture
async def fresh_db(infra: Infra):
    """An empty database of its own, dropped afterwards."""
    name = unique_name("upscaling_mig")
    admin = await asyncpg.connect(infra.admin_database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(infra.admin_database_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_migrations_create_schema_once(fresh_db: str) -> None:
    versions = [m.version for m in discover()]
    assert versions == sorted(versions) and versions[0] == 1
    assert await migrate(fresh_db) == versions
    assert await migrate(fresh_db) == []
    conn = await asyncpg.connect(fresh_db)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == versions
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"upscale_tasks", "unit_jobs", "schema_migrations"} <= tables
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(fresh_db: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_db) for _ in range(6)))
    applied = [v for r in results for v in r]
    assert sorted(applied) == [m.version for m in discover()], results


async def test_failed_migration_rolls_back_and_stops(fresh_db: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE b (id int); SELECT * FROM no_such_table;")
    conn = await asyncpg.connect(fresh_db)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await apply_migrations(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('a') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('b') IS NULL")
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
        # The lock was released: a fixed file applies on the next run.
        (tmp_path / "0002_broken.sql").write_text("CREATE TABLE b (id int);")
        assert await apply_migrations(conn, tmp_path) == [2]
    finally:
        await conn.close()


def test_misnamed_and_duplicate_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match=r"NNNN_name\.sql"):
        discover(tmp_path)
    (tmp_path / "1_init.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="two migrations with version 1"):
        discover(tmp_path)
