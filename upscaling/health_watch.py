"""gRPC health that follows the dependencies: a service reports NOT_SERVING while PostgreSQL or RabbitMQ is down
(it keeps running and reconnects by itself) and SERVING again once both answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]
# A health service name that stays SERVING while the process runs: liveness probes ask for it, so a dependency
# outage makes a service unready (the overall "" status) but never gets it restarted.
LIVENESS = "liveness"
CHECK_TIMEOUT_S = 5.0


def database_check(pool: asyncpg.Pool) -> Check:
    """A check that the database answers `SELECT 1` (a pooled connection; the pool reconnects)."""
    return lambda: pool.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_S)


def broker_check(connection: AbstractRobustConnection) -> Check:
    """A check that the robust broker connection is connected right now (not reconnecting)."""

    async def check() -> None:
        if connection.is_closed or not connection.connected.is_set():
            raise ConnectionError("not connected to RabbitMQ (reconnecting)")

    return check


async def failing(checks: dict[str, Check]) -> dict[str, str]:
    """The checks that fail now, with their error."""

    async def run(check: Check) -> str | None:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            return None
        except Exception as exc:
            return str(exc) or type(exc).__name__

    named = list(checks.items())  # a service may add checks while these run
    results = await asyncio.gather(*(run(c) for _, c in named))
    return {name: error for (name, _), error in zip(named, results, strict=True) if error is not None}


class HealthWatch:
    """Sets the overall health status ("") of a gRPC health servicer from `checks`, every `interval_s`."""

    def __init__(self, servicer: health.aio.HealthServicer, checks: dict[str, Check], interval_s: float = 2.0) -> None:
        self.servicer = servicer
        self.checks = checks
        self.interval_s = interval_s
        self.serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-watch")



    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        await self.servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        while True:
            down = await failing(self.checks)
            serving = not down
            if serving != self.serving:
                codes = health_pb2.HealthCheckResponse
                status = codes.SERVING if serving else codes.NOT_SERVING
                await self.servicer.set("", status)
                if serving:
                    log.log(logging.INFO if self.serving is None else logging.WARNING, "dependencies up: SERVING")
                else:
                    log.warning("dependency down: NOT_SERVING", extra={"down": down})
                self.serving = serving
            await asyncio.sleep(self.interval_s)
