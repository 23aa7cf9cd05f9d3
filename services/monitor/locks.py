"""One monitor replica per backend: session-level PostgreSQL advisory locks held on a dedicated connection.

A replica keeps a backend's lock once it got it; when it dies its connection closes, the lock is released and
another replica takes the backend over on its next cycle.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import asyncpg

log = logging.getLogger(__name__)


def lock_key(endpoint: str) -> int:
    """A signed 64-bit advisory lock key derived from "monitor:" + the backend endpoint."""
    digest = hashlib.sha256(f"monitor:{endpoint}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class BackendLocks:
    """Advisory locks of the backends this replica polls."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn: asyncpg.Connection | None = None
        self._held: set[str] = set()
        self._busy = asyncio.Lock()  # the poller and the reconciler share the connection

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            try:
                await self._conn.fetchval("SELECT 1", timeout=10)
                return self._conn
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                log.warning("lock connection lost (%s); locks released", exc)
                self._conn.terminate()
        if self._held:
            log.warning("lost the monitor locks of %s", sorted(self._held))
        self._held.clear()
        self._conn = await asyncpg.connect(self.database_url)
        return self._conn

    async def acquire(self, endpoints: list[str]) -> set[str]:
        """The endpoints whose lock this replica holds after trying to take the missing ones."""
        async with self._busy:
            conn = await self._connection()
            for endpoint in endpoints:
                if endpoint not in self._held and await conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                                                      lock_key(endpoint)):
                    log.info("monitor lock acquired", extra={"backend": endpoint})
                    self._held.add(endpoint)
            return set(self._held)

    async def close(self) -> None:
        """Release every lock (by closing the connection)."""
        async with self._busy:
            if self._conn is not None and not self._conn.is_closed():
                await self._conn.close()
            self._conn = None
            self._held.clear()
