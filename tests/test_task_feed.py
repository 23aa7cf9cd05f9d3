"""Unit tests of the pure parts of streaming: batch splitting, a task feed's ordering, gap filling, kept events,
views and WatchTaskBatches messages built once per version (the database is a list of stored events)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.task_feed import TaskFeed, join_entries
from upscaling import event_wire
from upscaling.statuses import job_status_to_proto, task_status_to_proto
from upscaling.v1 import jobs_pb2, upscaling_pb2

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def job_event(seq: int, job_id: int, status: str, progress: float = 0.0) -> upscaling_pb2.WatchTaskResponse:
    event = jobs_pb2.JobStatusEvent(job_id=job_id, task_id=7, status=job_status_to_proto(status), progress=progress,
                                    sequence=seq)
    event.time.FromDatetime(NOW)
    return upscaling_pb2.WatchTaskResponse(job_event=event, sequence=seq)


def task_event(seq: int, status: str) -> upscaling_pb2.WatchTaskResponse:
    event = jobs_pb2.TaskStatusEvent(task_id=7, status=task_status_to_proto(status), sequence=seq)
    event.time.FromDatetime(NOW)
    return upscaling_pb2.WatchTaskResponse(task_event=event, sequence=seq)


def rows() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    task = {"id": 7, "title": "t", "label": "openeo", "status": "created", "service": {"endpoint": "e"},
            "parameters": {}, "format": "gtiff", "dimension_name": "spatial_extent", "max_attempts": 1,
            "created": NOW, "updated": NOW, "last_sequence": 0}
    jobs = [{"id": i, "task_id": 7, "seq": i, "title": f"j{i}", "label": "openeo", "status": "created",
             "service": {"endpoint": "e"}, "parameters": {"spatial_extent": i}, "format": "gtiff",
             "backend_job_id": None, "progress": None, "message": None, "created": NOW, "updated": NOW}
            for i in (1, 2)]
    return task, jobs


class StoredEvents:
    """`pool.fetch` over a list of stored events (the task_events query of the feed)."""

    def __init__(self) -> None:
        self.events: list[upscaling_pb2.WatchTaskResponse] = []
        self.queries = 0

    async def fetch(self, _sql: str, _task_id: int, after: int, limit: int) -> list[dict[str, bytes]]:
        self.queries += 1
        return [{"payload": e.SerializeToString()} for e in self.events if e.sequence > after][:limit]


async def loaded_feed(db: StoredEvents, log_size: int = 100) -> TaskFeed:
    async def load(task_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return rows()

    feed = TaskFeed(7, load, db, log_size=log_size)  # type: ignore[arg-type]
    await feed.ready()
    return feed


class Sent:
    """A watcher's `send`: when each message went, and `first`, set once one did."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.first = asyncio.Event()

    async def send(self, body: bytes) -> None:
        self.times.append(time.monotonic())
        self.first.set()


def live(feed: TaskFeed, event: upscaling_pb2.WatchTaskResponse) -> None:
    """An event arriving from the broker, applied and the watchers woken."""
    feed.push(event.SerializeToString(), event)
    feed.flush()


def test_a_batch_is_split_into_the_bytes_of_its_events() -> None:
    bodies = [job_event(i, 1, "queued").SerializeToString() for i in range(1, 300)]
    assert event_wire.split_batch(event_wire.batch_body(bodies)) == bodies
    batch = upscaling_pb2.WatchTaskResponseBatch(events=[job_event(1, 1, "queued")]).SerializeToString()
    assert [e.sequence for _, e in event_wire.decode_raw(batch, event_wire.BATCH_TYPE)] == [1]
    with pytest.raises(ValueError):
        event_wire.split_batch(b"\x0a\x05abc")


async def test_events_are_applied_in_sequence_order_and_gaps_filled_once_from_the_database() -> None:
    db = StoredEvents()
    db.events = [job_event(1, 1, "queued"), job_event(2, 1, "running", 10.0), task_event(3, "running"),
                 job_event(4, 2, "queued")]
    feed = await loaded_feed(db)
    for event in (db.events[2], db.events[1]):  # 3 before 2, and 1 never arrives: a gap
        feed.push(event.SerializeToString(), event)
    feed.flush()
    assert feed.last == 0
    await feed._filling  # type: ignore[misc]
    assert feed.last == 4 and db.queries == 1
    assert [e.sequence for e in feed.entries_after(0) or []] == [1, 2, 3, 4]
    assert feed.state is not None and feed.state.status == "running"
    assert [j["status"] for j in feed.state.jobs] == ["running", "queued"]
    assert feed.state.jobs[0]["progress"] == 10.0 and feed.state.jobs[1]["progress"] is None
    # an event far ahead that the database does not know is garbage: dropped after the fill
    ghost = job_event(99, 1, "failed")
    feed.push(ghost.SerializeToString(), ghost)
    feed.flush()
    await feed._filling  # type: ignore[misc]
    assert feed.last == 4 and not feed._pending


async def test_views_are_built_once_per_version_and_deltas_carry_only_changed_jobs() -> None:
    feed = await loaded_feed(StoredEvents())
    text = feed.snapshot_text()
    assert feed.snapshot_text() is text and feed.snapshot_bytes() is feed.snapshot_bytes()
    live(feed, job_event(1, 2, "running", 30.0))
    assert feed.snapshot_text() is not text
    body = json.loads(feed.snapshot_text())["data"]
    assert body["sequence"] == 1 and body["job_counts"]["running"] == 1 and len(body["jobs"]) == 2
    delta = json.loads(feed.delta_text(0))["data"]
    assert delta["delta"] is True and delta["jobs"] == [{"id": 2, "status": "running", "progress": 30.0,
                                                         "message": None}]
    assert json.loads(feed.delta_text(1))["data"]["jobs"] == []
    snapshot = upscaling_pb2.WatchTaskResponse.FromString(feed.task_snapshot_bytes())
    assert not snapshot.snapshot.jobs and dict(snapshot.snapshot.job_counts) == {"created": 1, "running": 1}


async def test_a_watcher_behind_the_kept_events_is_told_to_read_the_database() -> None:
    feed = await loaded_feed(StoredEvents(), log_size=10)
    for seq in range(1, 40):
        event = job_event(seq, 1, "running", float(seq))
        feed.push(event.SerializeToString(), event)
    feed.flush()
    assert feed.last == 39
    assert feed.entries_after(0) is None  # trimmed: the watcher resyncs from the database
    assert [e.sequence for e in feed.entries_after(36) or []] == [37, 38, 39]
    assert feed.entries_after(39) == []


async def test_batches_join_the_events_a_watcher_lacks_once_per_position_and_version() -> None:
    feed = await loaded_feed(StoredEvents())
    events = [job_event(seq, 1 + seq % 2, "running", float(seq)) for seq in range(1, 8)]
    for event in events[:5]:
        feed.push(event.SerializeToString(), event)
    feed.flush()
    entries = feed.entries_after(2)
    assert entries is not None
    body, end = feed.batch_after(2, entries)
    assert end.sequence == 5 and feed.batch_after(2, entries)[0] is body  # shared by the watchers at 2
    assert list(upscaling_pb2.WatchTaskBatchesResponse.FromString(body).events) == events[2:5]
    # the broker's batch encoding and WatchTaskBatchesResponse are the same bytes
    assert body == event_wire.batch_body([e.SerializeToString() for e in events[2:5]])
    for event in events[5:]:
        feed.push(event.SerializeToString(), event)
    feed.flush()
    moved = feed.entries_after(2)
    assert moved is not None and feed.batch_after(2, moved)[1].sequence == 7  # a new version: built again
    snapshot = upscaling_pb2.WatchTaskBatchesResponse.FromString(feed.framed(feed.snapshot_bytes, "snapshot"))
    assert [e.WhichOneof("update") for e in snapshot.events] == ["snapshot"] and snapshot.events[0].sequence == 7
    # a message holds at most about `limit` bytes, and always at least one event
    big = list(moved)
    size = len(big[0].body)
    first, last = join_entries(big, limit=2 * (size + 6))  # (6: a generous allowance for each head)
    assert last.sequence == 4 and len(upscaling_pb2.WatchTaskBatchesResponse.FromString(first).events) == 2
    assert join_entries(big, limit=1)[1].sequence == 3


def test_workers_default_to_the_cpus_available_within_a_container_quota(tmp_path: Any, monkeypatch: Any) -> None:
    from gateway import workers

    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    cpus = workers.available_cpus(cpu_max)
    assert cpus >= 1
    cpu_max.write_text("150000 100000\n")
    assert workers.available_cpus(cpu_max) == min(cpus, 2)
    monkeypatch.setenv("GATEWAY_WORKERS", "3")
    assert workers.worker_count() == 3
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("GATEWAY_WORKERS", bad)
        with pytest.raises(ValueError, match="GATEWAY_WORKERS"):
            workers.worker_count()


async def test_at_the_end_streams_send_after_the_sockets_terminal_snapshots() -> None:
    from gateway.watch import _full_batches
    feed = await loaded_feed(StoredEvents())
    order: list[str] = []
    snapshot_sent = asyncio.Event()

    async def send(body: bytes) -> None:
        order.append("stream")
        snapshot_sent.set()

    async def socket() -> None:
        with feed.socket_turn() as sent:
            await feed.wait_terminal(5.0)
            order.append("socket")
            sent()

    stream = asyncio.create_task(_full_batches(feed, send, 0))
    watcher = asyncio.create_task(socket())
    await snapshot_sent.wait()
    live(feed, task_event(1, "finished"))
    await asyncio.wait_for(asyncio.gather(stream, watcher), 5.0)
    assert order == ["stream", "socket", "stream"]


async def test_a_socket_that_does_not_send_holds_the_streams_end_back_only_briefly(monkeypatch: Any) -> None:
    from gateway import task_feed
    from gateway.watch import _full_batches
    monkeypatch.setattr(task_feed, "SOCKETS_FIRST_S", 0.2)
    feed = await loaded_feed(StoredEvents())
    sent = Sent()
    with feed.socket_turn():  # a WebSocket that never gets to send its snapshot
        stream = asyncio.create_task(_full_batches(feed, sent.send, 0))
        await sent.first.wait()
        live(feed, task_event(1, "finished"))
        ended = time.monotonic()
        await asyncio.wait_for(stream, 5.0)
    assert len(sent.times) == 2 and 0.15 <= sent.times[1] - ended < 2.0


async def test_a_stream_sends_the_terminal_state_at_once_and_ends_a_moment_later(monkeypatch: Any) -> None:
    from gateway import task_feed
    from gateway.watch import _full, _task_level
    monkeypatch.setattr(task_feed, "END_AFTER_S", 0.3)
    feed = await loaded_feed(StoredEvents())
    sent = Sent()
    streams = [asyncio.create_task(_full(feed, sent.send, 0)), asyncio.create_task(_task_level(feed, sent.send, 0))]
    await sent.first.wait()
    live(feed, task_event(1, "finished"))
    applied = time.monotonic()
    await asyncio.wait_for(streams[0], 5.0)
    await asyncio.wait_for(streams[1], 5.0)
    ended = time.monotonic()
    assert len(sent.times) == 4
    assert max(sent.times) - applied < 0.3 <= 1.01 * (ended - applied)  # the terminal state at once, the end later
    # a watcher arriving after the end gets the terminal snapshot and its end at once
    late = Sent()
    started = time.monotonic()
    await asyncio.wait_for(_full(feed, late.send, 0), 5.0)
    assert len(late.times) == 1 and time.monotonic() - started < 0.3


async def test_on_a_change_the_sockets_wake_before_the_streams() -> None:
    from gateway.watch import _full_batches
    feed = await loaded_feed(StoredEvents())
    order: list[str] = []
    sent = asyncio.Event()

    async def send(body: bytes) -> None:
        order.append("stream")
        sent.set()

    async def socket() -> None:
        await feed.wait(feed.last, socket=True)
        order.append("socket")

    stream = asyncio.create_task(_full_batches(feed, send, 0))  # waits for the change before the socket does
    await sent.wait()
    watcher = asyncio.create_task(socket())
    for _ in range(3):
        await asyncio.sleep(0)
    sent.clear()
    live(feed, job_event(1, 1, "running"))
    await asyncio.wait_for(asyncio.gather(watcher, sent.wait()), 5.0)
    stream.cancel()
    assert order == ["stream", "socket", "stream"]
