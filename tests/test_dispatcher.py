"""The dispatcher as real processes against the local openEO backend, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Infra
from tests.dispatcher_support import (
    Broker,
    all_in,
    dispatcher_env,
    insert_task,
    job_statuses,
    one_backend_job_per_tag,
    start_service,
)
from tests.infra import ServiceProcess, unique_name
from tests.support import LocalOpenEO, wait_until
from upscaling.migrations import migrate
from upscaling.v1 import common_pb2, jobs_pb2, upscaling_pb2

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def openeo_backend(infra: Infra) -> Iterator[LocalOpenEO]:
    asyncio.run(migrate(infra.database_url))
    backend = LocalOpenEO()
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture
def backend(openeo_backend: LocalOpenEO) -> LocalOpenEO:
    openeo_backend.reset()
    return openeo_backend


@pytest.fixture
async def mq(infra: Infra) -> AsyncIterator[Broker]:
    async with Broker(infra.rabbitmq_url, unique_name("dispatcher")) as b:
        yield b


@pytest.fixture
def procs() -> Iterator[list[ServiceProcess]]:
    """Service processes a test started; stopped afterwards."""
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(timeout=10)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path


def _start(module: str, env: dict[str, str], log_path: Path, procs: list[ServiceProcess]) -> ServiceProcess:
    proc = start_service(module, env, log_path)
    procs.append(proc)
    return proc


async def _stop_settled(mq: Broker, *dispatchers: ServiceProcess) -> None:
    """Stop the dispatchers gracefully and assert every message was handled and acknowledged: a graceful stop
    finishes or returns its in-flight messages, and a message a stopped consumer held is ready again, so empty
    job and dead-letter queues prove it, however slow the machine (no fixed sleep before a negative assertion)."""
    for proc in dispatchers:
        assert await asyncio.to_thread(proc.stop) == 0, proc.log()[-3000:]
        assert "returned to the queue" not in proc.log(), proc.log()[-3000:]
    for queue in (mq.declared.jobs_queue, mq.declared.dead_letter_queue):
        declared = await mq.channel.declare_queue(queue.name, passive=True)
        assert declared.declaration_result.message_count == 0, queue.name


async def _tags(conn: asyncpg.Connection, job_ids: list[int]) -> list[str]:
    return [r["tag"] for r in await conn.fetch("SELECT tag FROM unit_jobs WHERE id = ANY($1::bigint[]) ORDER BY id",
                                               job_ids)]


async def test_jobs_are_created_started_and_recorded(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    env = dispatcher_env(service_env, backend, mq.topology.prefix)
    proc = _start("dispatcher", env, logs / "dispatcher.log", procs)
    task_id, job_ids = await insert_task(conn, backend, 6)
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, 6), what="jobs queued")
    rows = await conn.fetch("SELECT * FROM unit_jobs WHERE task_id = $1 ORDER BY id", task_id)
    assert all(r["backend_job_id"] and r["submitted_at"] and r["attempts"] == 1 for r in rows)
    assert all(r["backend"] == backend.endpoint for r in rows)
    assert await conn.fetchval("SELECT status FROM upscale_tasks WHERE id = $1", task_id) in ("queued", "running")
    # One `queued` event per job (carrying the backend job id), plus the task's own status change.
    events = await conn.fetch("SELECT sequence, job_id, payload FROM task_events WHERE task_id = $1 ORDER BY sequence",
                              task_id)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    queued = [upscaling_pb2.WatchTaskResponse.FromString(e["payload"]) for e in events if e["job_id"]]
    assert sum(1 for e in queued if e.job_event.status == common_pb2.JOB_STATUS_QUEUED) == 6
    assert any(not e["job_id"] for e in events)
    published = await wait_until(lambda: _events(mq, len(events)), what="events published")
    assert sorted(r.sequence for r in published) == [e["sequence"] for e in events]
    report = backend.report()
    one_backend_job_per_tag(report, await _tags(conn, job_ids))
    assert report["totals"]["started"] == 6
    # The "unit jobs submitted" lines (one per recorded batch) name all 6 jobs with the task's correlation id;
    # no password in the log.
    text = proc.log()
    assert "demo:demo" not in text and '"password"' not in text
    cid = await conn.fetchval("SELECT correlation_id FROM upscale_tasks WHERE id = $1", task_id)
    lines = [json.loads(line) for line in text.splitlines() if '"unit jobs submitted"' in line]
    assert all(line["correlation_id"] == cid and line["task_id"] == task_id for line in lines)
    assert sorted(j for line in lines for j in line["job_ids"]) == sorted(job_ids)

    # A redelivered message for a submitted job does nothing (once it was handled: see _stop_settled).
    await mq.publish_jobs(conn, job_ids[:2])
    await _stop_settled(mq, proc)
    assert backend.report()["totals"]["created"] == 6


_published: list[upscaling_pb2.WatchTaskResponse] = []


async def _events(mq: Broker, n: int) -> list[upscaling_pb2.WatchTaskResponse] | None:
    _published.extend(await mq.drain_events())
    if len(_published) >= n:
        found = list(_published)
        _published.clear()
        return found
    return None


async def test_lost_create_responses_never_duplicate(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    backend.configure(faults={"create_job": {"lost": 0.4, "lost_503": 0.2}, "start_job": {"503": 0.2, "lost": 0.1},
                              "list_jobs": {"503": 0.1}}, seed=11)
    env = dispatcher_env(service_env, backend, mq.topology.prefix, SUBMIT_MAX_ATTEMPTS="30")
    _start("dispatcher", env, logs / "dispatcher.log", procs)
    task_id, job_ids = await insert_task(conn, backend, 12)
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, 12), limit_s=45,
                     what="jobs queued despite faults")
    report = backend.report()
    assert report["faults"]["create_job"]["lost"] > 0
    one_backend_job_per_tag(report, await _tags(conn, job_ids))
    rows = await conn.fetch("SELECT backend_job_id FROM unit_jobs WHERE task_id = $1", task_id)
    assert len({r["backend_job_id"] for r in rows}) == 12


async def test_duplicate_messages_on_two_replicas_create_one_job_each(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    # A relay may publish a job message twice (confirm lost); both copies may be handled at once.
    backend.configure(faults={"create_job": {"delay": 0.5}}, fault_delay=0.3, seed=9)
    env = dispatcher_env(service_env, backend, mq.topology.prefix, OPENEO_TIMEOUT_S="1")
    for name in ("a", "b"):
        _start("dispatcher", env, logs / f"dispatcher-{name}.log", procs)
    task_id, job_ids = await insert_task(conn, backend, 6)
    for _ in range(3):
        await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, 6), what="jobs queued")
    await _stop_settled(mq, *procs)  # every copy handled
    one_backend_job_per_tag(backend.report(), await _tags(conn, job_ids))
    assert await conn.fetchval("SELECT max(attempts) FROM unit_jobs WHERE task_id = $1", task_id) == 1


async def test_slow_creates_past_the_client_timeout_are_found_not_repeated(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    # The backend handles these creates after the client gave up waiting.
    backend.configure(faults={"create_job": {"delay": 0.5}}, fault_delay=1.3, seed=3)
    env = dispatcher_env(service_env, backend, mq.topology.prefix, OPENEO_TIMEOUT_S="1")
    proc = _start("dispatcher", env, logs / "dispatcher.log", procs)
    task_id, job_ids = await insert_task(conn, backend, 4)
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, 4), what="jobs queued")
    report = backend.report()
    assert report["faults"]["create_job"]["delay"] > 0
    one_backend_job_per_tag(report, await _tags(conn, job_ids))
    assert "found the backend job of an earlier try by its tag" in proc.log()


async def test_backend_refusals_wait_and_start_rate_is_kept(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    # No running-jobs limit configured: the backend's own limit (ConcurrentJobLimit) makes jobs wait, not fail.
    backend.configure(queue_seconds=0.1, run_seconds=0.4, max_concurrent=1, concurrency_status=400)
    env = dispatcher_env(service_env, backend, mq.topology.prefix,
                         MONITOR_INTERVAL_MIN_S="0.1", MONITOR_INTERVAL_MAX_S="0.3", SUBMIT_MAX_ATTEMPTS="2")
    first = _start("dispatcher", env, logs / "dispatcher.log", procs)
    _start("monitor", env, logs / "monitor.log", procs)
    task_id, job_ids = await insert_task(conn, backend, 3)
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"finished"}, 3), limit_s=60, what="all jobs finished")
    report = backend.report()
    assert report["totals"]["rejections"].get("concurrency", 0) > 0
    assert report["users"]["demo"]["max_active"] == 1
    one_backend_job_per_tag(report, await _tags(conn, job_ids))

    # 3 starts per second configured here, the backend refuses more than 4 per second (no burst).
    assert first.stop() == 0
    backend.admin("POST", "reset", {"jobs": True, "counters": True})
    backend.configure(max_concurrent=0, start_rate=4, start_burst=1)
    rated = {**env, "OPENEO_BACKENDS": backend.backends_env(starts_per_second=3)}
    _start("dispatcher", rated, logs / "dispatcher-rated.log", procs)
    task_id, job_ids = await insert_task(conn, backend, 5)
    started = time.monotonic()
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, 5), what="jobs queued")
    assert time.monotonic() - started >= 4 / 3 - 0.1
    report = backend.report()
    assert report["totals"]["started"] == 5
    assert report["totals"]["rejections"].get("start_rate", 0) == 0


async def test_many_backend_calls_in_flight_with_a_slow_backend_and_the_start_rate_kept(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    # Every create and every start is held DELAY_S by the backend: a job costs 2 * DELAY_S of backend latency, so
    # 8 calls in flight (the old ceiling) need at least n * 2 * DELAY_S / 8 to submit n jobs.
    delay_s = 1.0
    backend.configure(faults={"create_job": {"delay": 1.0}, "start_job": {"delay": 1.0}}, fault_delay=delay_s)
    env = dispatcher_env(service_env, backend, mq.topology.prefix)
    first = _start("dispatcher", env, logs / "dispatcher.log", procs)
    n = 48
    task_id, job_ids = await insert_task(conn, backend, n)
    started = time.monotonic()
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, n), what="jobs queued")
    took = time.monotonic() - started
    eight_in_flight = n * 2 * delay_s / 8
    assert took < eight_in_flight / 2, f"{n} jobs took {took:.2f} s (8 calls in flight: >= {eight_in_flight} s)"
    print(f"{n} jobs, {delay_s} s per create and start: submitted in {took:.2f} s (8 in flight: >= "
          f"{eight_in_flight} s)")
    report = backend.report()
    assert report["totals"]["started"] == n
    one_backend_job_per_tag(report, await _tags(conn, job_ids))
    assert first.stop() == 0

    # With a start rate limit: the creates still overlap, the starts keep 10 per second. The backend refuses more
    # than 20 per second with a burst of 3: each start is sent in its slot or later, and one sent late (a busy
    # event loop, 30 worker threads sharing the GIL on 2 cores) may arrive close to the next one. Calls take 1 s
    # here, so 8 in flight could not come near the rate's 3.9 s.
    backend.admin("POST", "reset", {"jobs": True, "counters": True})
    backend.configure(start_rate=20, start_burst=3)
    rate, n = 10.0, 40
    _start("dispatcher", {**env, "OPENEO_BACKENDS": backend.backends_env(starts_per_second=rate)},
           logs / "dispatcher-rated.log", procs)
    task_id, job_ids = await insert_task(conn, backend, n)
    started = time.monotonic()
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, n), what="jobs queued")
    took = time.monotonic() - started
    assert took >= (n - 1) / rate, f"{n} starts in {took:.2f} s at {rate}/s"
    eight_in_flight = n * 2 * delay_s / 8
    assert took < eight_in_flight - 1.0, f"{n} jobs took {took:.2f} s (8 calls in flight: >= {eight_in_flight} s)"
    print(f"{n} jobs, {delay_s} s per call, {rate} starts/s: submitted in {took:.2f} s (8 in flight: >= "
          f"{eight_in_flight} s)")
    report = backend.report()
    assert report["totals"]["started"] == n
    assert report["totals"]["rejections"].get("start_rate", 0) == 0
    one_backend_job_per_tag(report, await _tags(conn, job_ids))


async def test_running_limit_shared_by_replicas(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    backend.configure(queue_seconds=0.1, run_seconds=0.3)
    env = dispatcher_env(service_env, backend, mq.topology.prefix,
                         OPENEO_BACKENDS=backend.backends_env(max_running_jobs=2, starts_per_second=20),
                         MONITOR_INTERVAL_MIN_S="0.1", MONITOR_INTERVAL_MAX_S="0.3")
    for name in ("a", "b"):
        _start("dispatcher", env, logs / f"dispatcher-{name}.log", procs)
    _start("monitor", env, logs / "monitor.log", procs)
    task_id, job_ids = await insert_task(conn, backend, 10)
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: all_in(conn, task_id, {"finished"}, 10), limit_s=60, what="all jobs finished")
    report = backend.report()
    assert report["users"]["demo"]["max_active"] <= 2
    assert report["totals"]["rejections"] == {} or sum(report["totals"]["rejections"].values()) == 0
    one_backend_job_per_tag(report, await _tags(conn, job_ids))
    assert await conn.fetchval("SELECT status FROM upscale_tasks WHERE id = $1", task_id) == "finished"
    assert sum(p.log().count('"unit jobs submitted"') for p in procs[:2]) >= 1


async def test_permanent_error_and_unknown_backend_fail_the_job(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    _start("dispatcher", dispatcher_env(service_env, backend, mq.topology.prefix), logs / "dispatcher.log", procs)
    bad_task, bad_jobs = await insert_task(conn, backend, 2, arguments={"year": "2024"})
    lost_task, lost_jobs = await insert_task(conn, backend, 1, endpoint="https://nowhere.example/openeo/1.2")
    await mq.publish_jobs(conn, bad_jobs + lost_jobs)
    await wait_until(lambda: all_in(conn, bad_task, {"failed"}, 2), what="jobs failed")
    await wait_until(lambda: all_in(conn, lost_task, {"failed"}, 1), what="job failed")
    messages = [r["message"] for r in await conn.fetch(
        "SELECT message FROM unit_jobs WHERE task_id = $1", bad_task)]
    assert all(m.startswith("ProcessParameterMissing:") and "spatial_extent" in m for m in messages), messages
    assert "not configured" in await conn.fetchval("SELECT message FROM unit_jobs WHERE task_id = $1", lost_task)
    assert await conn.fetchval("SELECT status FROM upscale_tasks WHERE id = $1", bad_task) == "failed"
    assert backend.report()["totals"]["started"] == 0


async def test_poison_message_is_dead_lettered_and_canceled_jobs_are_not_submitted(
        backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker, service_env: dict[str, str],
        procs: list[ServiceProcess], logs: Path) -> None:
    proc = _start("dispatcher", dispatcher_env(service_env, backend, mq.topology.prefix), logs / "d.log", procs)
    before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM dead_letters")
    await mq.publish(b"\xff\xff not a protobuf")
    unknown = jobs_pb2.SubmitJobMessage(job_id=987654321).SerializeToString()
    await mq.publish(unknown)  # unknown job: dead-lettered too
    task_id, job_ids = await insert_task(conn, backend, 3)
    await conn.execute("UPDATE upscale_tasks SET cancel_requested = true WHERE id = $1", task_id)
    await mq.publish_jobs(conn, job_ids)

    async def two_dead_letters() -> list[asyncpg.Record]:
        rows = await conn.fetch("SELECT * FROM dead_letters WHERE id > $1 ORDER BY id", before)
        return rows if len(rows) >= 2 else []

    # The dispatcher's dead-letter handler explains and drops both: nothing names a job to fail.
    dead = await wait_until(two_dead_letters, what="dead letters handled")
    assert sorted(bytes(r["body"]) for r in dead) == sorted([b"\xff\xff not a protobuf", unknown])
    assert {r["decision"] for r in dead} == {"dropped"}
    assert any(r["reason"].startswith("undecodable job message") for r in dead), dead
    assert any(r["reason"] == "job message for an unknown unit job 987654321" for r in dead), dead
    await wait_until(lambda: all_in(conn, task_id, {"canceled"}, 3), what="jobs canceled")
    assert await conn.fetchval("SELECT status FROM upscale_tasks WHERE id = $1", task_id) == "canceled"
    assert backend.report()["totals"]["created"] == 0
    assert "poison job message" in proc.log() and "unknown unit job" in proc.log()
    assert "dead letter dropped" in proc.log()
    await _stop_settled(mq, proc)  # the dead letters were acknowledged, not merely held


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_dispatcher_stopped_while_busy_loses_and_duplicates_nothing(
        how: signal.Signals, backend: LocalOpenEO, conn: asyncpg.Connection, mq: Broker,
        service_env: dict[str, str], procs: list[ServiceProcess], logs: Path) -> None:
    # Slow creates keep the dispatcher busy; lost responses leave it unsure whether jobs exist.
    backend.configure(faults={"create_job": {"delay": 0.5, "lost": 0.2}, "start_job": {"503": 0.2}},
                      fault_delay=0.6, seed=5)
    env = dispatcher_env(service_env, backend, mq.topology.prefix, GRPC_GRACE_S="0.3", DISPATCHER_PREFETCH="2",
                         OPENEO_TIMEOUT_S="2", SUBMIT_MAX_ATTEMPTS="30")
    first = _start("dispatcher", env, logs / "first.log", procs)
    task_id, job_ids = await insert_task(conn, backend, 16)
    await mq.publish_jobs(conn, job_ids)
    await wait_until(lambda: _submitted_at_least(conn, task_id, 3), what="some jobs submitted")
    assert first.process is not None
    first.process.send_signal(how)
    first.process.wait(timeout=20)
    if how == signal.SIGTERM:
        assert first.process.returncode == 0, first.log()[-3000:]
    counts = await job_statuses(conn, task_id)
    assert counts.get("created", 0) > 0, counts  # work was left
    _start("dispatcher", env, logs / "second.log", procs)
    await wait_until(lambda: all_in(conn, task_id, {"queued", "running", "finished"}, 16), limit_s=60,
                     what="all jobs submitted after the restart")
    one_backend_job_per_tag(backend.report(), await _tags(conn, job_ids))


async def _submitted_at_least(conn: asyncpg.Connection, task_id: int, n: int) -> bool:
    counts = await job_statuses(conn, task_id)
    return counts.get("queued", 0) + counts.get("running", 0) >= n
