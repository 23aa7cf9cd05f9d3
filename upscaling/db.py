"""PostgreSQL access through asyncpg: the connection pool every service shares."""

from __future__ import annotations

import json
from typing import Any, Protocol, overload

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from upscaling.config import Settings

# A connection of its own or one acquired from a pool: both run queries the same way.
AnyConnection = asyncpg.Connection | PoolConnectionProxy


class Row(Protocol):
    """A row by column name: an asyncpg Record, or any mapping standing in for one (events, tests)."""

    def __getitem__(self, key: str, /) -> Any: ...

    @overload
    def get(self, key: str, /) -> Any: ...

    @overload
    def get(self, key: str, default: Any, /) -> Any: ...


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook of pools whose users never change session state: asyncpg still rolls back an open
    transaction and drops listener callbacks; the round trip of the full reset query (UNLISTEN, RESET ALL,
    advisory unlock, CLOSE ALL) is skipped."""


async def create_pool(settings: Settings, *, session_state: bool = True) -> asyncpg.Pool:
    """Open a pool on DATABASE_URL with JSON/JSONB decoded to Python objects. `session_state=False`: the pool's
    users never LISTEN, SET, take session-level advisory locks or keep cursors on its connections, so releasing
    a connection needs no reset query."""
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        init=_init_connection,
        command_timeout=60,
        reset=None if session_state else _keep_session,
    )


async def check(pool: asyncpg.Pool) -> None:
    """Raise unless the database answers a trivial query."""
    async with pool.acquire(timeout=5) as conn:
        await conn.fetchval("SELECT 1")
