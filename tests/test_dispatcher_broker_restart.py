"""A dispatcher keeps consuming after its RabbitMQ restarts (a private broker node, stopped and started while the
dispatcher holds messages): the robust channel must re-register the job consumer, and health must follow it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.chaos.servers import PrivateRabbitMQ
from tests.conftest import Infra
from tests.dispatcher_support import Broker, all_in, dispatcher_env, insert_task, one_backend_job_per_tag
from tests.infra import ServiceProcess, free_port, unique_name, wait_grpc_serving
from tests.support import LocalOpenEO, wait_until
from upscaling.migrations import migrate

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def rabbitmq() -> Iterator[PrivateRabbitMQ]:
    server = PrivateRabbitMQ()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def backend(infra: Infra) -> Iterator[LocalOpenEO]:
    asyncio.run(migrate(infra.database_url))
    server = LocalOpenEO()
    try:
        yield server
    finally:
        server.stop()


async def _publish(url: str, prefix: str, conn: asyncpg.Connection, job_ids: list[int]) -> None:
    """Publish the jobs' messages on a connection of its own (closed again; the topology stays)."""
    mq = await Broker(url, prefix).__aenter__()
    try:
        await mq.publish_jobs(conn, job_ids)
    finally:
        await mq.connection.close()


async def test_jobs_are_submitted_after_the_broker_restarts(
        rabbitmq: PrivateRabbitMQ, backend: LocalOpenEO, conn: asyncpg.Connection, service_env: dict[str, str],
        tmp_path: Path) -> None:
    prefix = unique_name("restart")
    health = f"127.0.0.1:{free_port()}"
    env = dispatcher_env(service_env, backend, prefix, RABBITMQ_URL=rabbitmq.url,
                         DISPATCHER_HEALTH_PORT=health.rsplit(":", 1)[1])
    proc = ServiceProcess("dispatcher", "services.dispatcher", env, tmp_path / "dispatcher.log")
    proc.start()
    try:
        wait_grpc_serving(health, proc, timeout=60)
        task_id, job_ids = await insert_task(conn, backend, 12)
        await _publish(rabbitmq.url, prefix, conn, job_ids[:4])
        await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, 4), what="first jobs")

        # Messages published just before the broker goes away (some held by the dispatcher as it stops) and
        # messages published after it is back must all be submitted by the same dispatcher process.
        await _publish(rabbitmq.url, prefix, conn, job_ids[4:8])
        await asyncio.to_thread(rabbitmq.stop)
        await asyncio.to_thread(rabbitmq.start)
        await _publish(rabbitmq.url, prefix, conn, job_ids[8:])
        await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, 12), limit_s=90,
                         what="every job submitted after the broker restart")
        assert proc.process.poll() is None, "the dispatcher must ride out the restart, not be restarted"
        one_backend_job_per_tag(backend.report(), [r["tag"] for r in await conn.fetch(
            "SELECT tag FROM unit_jobs WHERE task_id = $1", task_id)])
        # Ready again: its consumers are registered on the new broker connection.
        await asyncio.to_thread(wait_grpc_serving, health, proc, 30)
    finally:
        proc.stop(timeout=10)
