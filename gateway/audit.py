"""The audit trail: who created, cancelled or retried what, and which resources of other users an administrator
read — with time, correlation id and outcome, stored in PostgreSQL (`audit_log`, only ever inserted into).

`TaskService` methods are wrapped with `audited` (changes, every outcome) and `admin_read` (reads of another
user's task or job by an administrator; one entry per administrator and resource per `READ_DEDUP_S`, so a watch
that reads a task every tick is recorded once a minute, not every second).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import asyncpg

from gateway.auth import Principal
from upscaling.errors import ServiceError
from upscaling.logs import correlation_id

log = logging.getLogger(__name__)

READ_DEDUP_S = 60.0
MAX_DETAIL = 500

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Filters:
    """What to list: empty strings / None match everything."""

    actor: str = ""
    action: str = ""
    resource: str = ""
    resource_id: int | None = None


class AuditLog:
    """Writes and lists audit entries."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._recent_reads: dict[tuple[str, str, int], float] = {}

    async def record(self, caller: Principal, action: str, resource: str, resource_id: int | None,
                     outcome: str, detail: str = "", owner: str | None = None) -> None:
        """Store one entry (the correlation id is the current request's)."""
        await self.pool.execute(
            "INSERT INTO audit_log (actor, admin, action, resource, resource_id, owner, outcome, detail,"
            " correlation_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            caller.user_id, caller.admin, action, resource, resource_id, owner, outcome, detail[:MAX_DETAIL],
            correlation_id.get() or "")

    async def record_read(self, caller: Principal, resource: str, resource_id: int, owner: str) -> None:
        """An administrator read another user's resource (recorded once per READ_DEDUP_S)."""
        now = time.monotonic()
        key = (caller.user_id, resource, resource_id)
        if now - self._recent_reads.get(key, -READ_DEDUP_S) < READ_DEDUP_S:
            return
        if len(self._recent_reads) > 10_000:
            self._recent_reads = {k: t for k, t in self._recent_reads.items() if now - t < READ_DEDUP_S}
        self._recent_reads[key] = now
        await self.record(caller, "admin.read", resource, resource_id, "ok", owner=owner)

    async def list(self, filters: Filters, limit: int, before: int | None) -> list[asyncpg.Record]:
        """Entries newest first, `limit` of them, with ids below `before` when given."""
        return await self.pool.fetch(
            "SELECT * FROM audit_log WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action = $2)"
            " AND ($3 = '' OR resource = $3) AND ($4::bigint IS NULL OR resource_id = $4)"
            " AND ($5::bigint IS NULL OR id < $5) ORDER BY id DESC LIMIT $6",
            filters.actor, filters.action, filters.resource, filters.resource_id, before, limit)


class Audited(Protocol):
    """What the wrapped methods' owner provides."""

    audit: AuditLog | None


S = TypeVar("S", bound=Audited)


def _resource_id(first: Any, result: Any) -> int | None:
    if isinstance(first, int):
        return first
    if isinstance(result, asyncpg.Record):
        return int(result["id"])
    return None


def audited(action: str, resource: str) -> Callable[[Callable[Concatenate[S, Any, Principal, P], Awaitable[R]]],
                                                    Callable[Concatenate[S, Any, Principal, P], Awaitable[R]]]:
    """Record every call of a changing method `(self, id_or_spec, caller, ...)` with its outcome."""

    def wrap(method: Callable[Concatenate[S, Any, Principal, P], Awaitable[R]]
             ) -> Callable[Concatenate[S, Any, Principal, P], Awaitable[R]]:
        @functools.wraps(method)
        async def call(self: S, first: Any, caller: Principal, *args: P.args, **kwargs: P.kwargs) -> R:
            if self.audit is None:
                return await method(self, first, caller, *args, **kwargs)
            try:
                result = await method(self, first, caller, *args, **kwargs)
            except ServiceError as exc:
                await self.audit.record(caller, action, resource, _resource_id(first, None), exc.error_code,
                                        exc.message)
                raise
            except Exception as exc:
                await self.audit.record(caller, action, resource, _resource_id(first, None), "INTERNAL_ERROR",
                                        type(exc).__name__)
                raise
            detail = f"{result} jobs" if isinstance(result, int) and not isinstance(result, bool) else ""
            owner = result["owner"] if isinstance(result, asyncpg.Record) else None
            await self.audit.record(caller, action, resource, _resource_id(first, result), "ok", detail,
                                    owner=owner)
            return result

        return call

    return wrap


def _owner_and_id(result: Any) -> tuple[str, int] | None:
    row = getattr(result, "task", None)  # a TaskView
    if row is None and isinstance(result, tuple) and result:  # (task, jobs)
        row = result[0]
    if row is None:
        row = result
    if isinstance(row, asyncpg.Record):
        return row["owner"], int(row["id"])
    return None


def admin_read(resource: str) -> Callable[[Callable[Concatenate[S, Any, Principal, P], Awaitable[R]]],
                                          Callable[Concatenate[S, Any, Principal, P], Awaitable[R]]]:
    """Record when an administrator reads another user's resource through a method `(self, id, caller, ...)`."""

    def wrap(method: Callable[Concatenate[S, Any, Principal, P], Awaitable[R]]
             ) -> Callable[Concatenate[S, Any, Principal, P], Awaitable[R]]:
        @functools.wraps(method)
        async def call(self: S, first: Any, caller: Principal, *args: P.args, **kwargs: P.kwargs) -> R:
            result = await method(self, first, caller, *args, **kwargs)
            if caller.admin and self.audit is not None:
                found = _owner_and_id(result)
                if found is not None and found[0] != caller.user_id:
                    await self.audit.record_read(caller, resource, found[1], found[0])
            return result

        return call

    return wrap
