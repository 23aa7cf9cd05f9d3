"""Malformed and unknown messages straight onto the jobs exchange (garbage bytes, other protobufs, unknown job
ids, wrong content types) and the events exchange, while a normal task runs and is watched over gRPC and a
WebSocket: every bad job message is dead-lettered, then explained and dropped by the dispatcher's dead-letter
handler (kept in `dead_letters`), bad events are dropped, and the normal task
finishes with both watchers seeing its end."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import aio_pika
import grpc
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from services.dispatcher.consumer import parse
from tests.fuzz import counts
from tests.fuzz.stack import FuzzStack, log_tail
from upscaling.statuses import task_status_from_proto
from upscaling.v1 import jobs_pb2, tiler_pb2, upscaling_pb2, upscaling_pb2_grpc

UNKNOWN_JOB_IDS = st.integers(10**12, 2**63 - 1) | st.integers(-(2**63), 0)
JOB_BODIES = st.one_of(
    st.binary(max_size=500),
    st.builds(lambda i, t: jobs_pb2.SubmitJobMessage(job_id=i, task_id=t, title="x").SerializeToString(),
              UNKNOWN_JOB_IDS, st.integers(-(2**63), 2**63 - 1)),
    st.sampled_from([b"", b"{}", b'{"job_id": 1}', b"\x08", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                     tiler_pb2.TileAoiRequest(aoi_geojson="{}", grid="20x20km").SerializeToString(),
                     upscaling_pb2.WatchTaskResponse(sequence=5).SerializeToString()]),
)
CONTENT_TYPES = st.sampled_from(["application/x-protobuf", None, "application/json", "text/plain", "", "x" * 200])
JOB_MESSAGES = st.tuples(JOB_BODIES, CONTENT_TYPES)


def _expect_dead(stack: FuzzStack, body: bytes, content_type: str | None) -> bool:
    """Whether the dispatcher must dead-letter this message (else it names an existing job: a duplicate)."""
    try:
        msg = parse(body, content_type)
    except ValueError:
        return True
    return stack.db.fetchval("SELECT count(*) FROM unit_jobs WHERE id = $1", msg.job_id) == 0


class Publisher:
    """A publisher-confirms channel on the stack's broker, driven from synchronous tests."""

    def __init__(self, stack: FuzzStack) -> None:
        self.stack = stack
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self._open())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _open(self) -> None:
        self.connection = await aio_pika.connect(self.stack.rabbitmq_url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        topology = self.stack.topology
        self.jobs = await self.channel.get_exchange(topology.jobs_exchange, ensure=True)
        self.events = await self.channel.get_exchange(topology.events_exchange, ensure=True)
        self.dead = await self.channel.get_queue(topology.dead_letter_queue, ensure=True)

    def publish_job(self, body: bytes, content_type: str | None) -> None:
        message = aio_pika.Message(body, content_type=content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        self.run(self.jobs.publish(message, routing_key=self.stack.topology.jobs_routing_key))

    def publish_event(self, body: bytes, routing_key: str) -> None:
        self.run(self.events.publish(aio_pika.Message(body, content_type="application/x-protobuf"),
                                     routing_key=routing_key))

    def take_dead(self) -> list[bytes]:
        async def drain() -> list[bytes]:
            out = []
            while (message := await self.dead.get(fail=False, no_ack=True)) is not None:
                out.append(message.body)
            return out

        return self.run(drain())

    def close(self) -> None:
        self.run(self.connection.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _watch_grpc(stack: FuzzStack, task_id: int, out: dict[str, Any]) -> None:
    with grpc.insecure_channel(stack.gateway_grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        updates = list(stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=240))
    last = updates[-1]
    out["grpc"] = (task_status_from_proto(last.task_event.status) if last.WhichOneof("update") == "task_event"
                   else task_status_from_proto(last.snapshot.status))


def _watch_ws(stack: FuzzStack, task_id: int, out: dict[str, Any]) -> None:
    last: dict[str, Any] = {}
    with connect(f"{stack.ws}/ws/upscale_tasks/{task_id}?interval=0.2") as ws:
        for raw in ws:
            last = json.loads(raw)
    out["ws"] = last.get("data", {}).get("status")


def _event_bodies(task_id: int) -> st.SearchStrategy[tuple[bytes, str]]:
    """Bad status events: garbage, events of unknown tasks, stale or odd events of the watched task."""
    keys = st.sampled_from([f"task.{task_id}", f"task.{task_id}.job.1", "task.0", "task.x", "task.", "task.#",
                            f"task.{task_id + 1}", "task.99999999999"]) \
        | st.text(max_size=20).map(lambda t: f"task.{t}")
    events = st.one_of(
        st.binary(max_size=300),
        st.builds(lambda s, st_: upscaling_pb2.WatchTaskResponse(
            sequence=s, task_event=jobs_pb2.TaskStatusEvent(task_id=task_id, status=st_)).SerializeToString(),
            st.integers(-(2**63), 1), st.integers(0, 2**31 - 1)),  # stale sequence, odd status values
        st.builds(lambda t: upscaling_pb2.WatchTaskResponse(
            sequence=1, job_event=jobs_pb2.JobStatusEvent(task_id=t, job_id=t)).SerializeToString(),
            st.integers(-(2**63), 2**63 - 1)),
    )
    return st.tuples(events, keys)


def _dropped(stack: FuzzStack) -> int:
    """Dead letters the dispatcher's dead-letter handler explained and dropped (they name no job)."""
    return stack.db.fetchval("SELECT count(*) FROM dead_letters WHERE decision = 'dropped'")


def wait_running(stack: FuzzStack, task_id: int, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while requests.get(f"{stack.http}/upscale_tasks/{task_id}", timeout=30).json()["status"] != "running":
        assert time.monotonic() < deadline, "the task never started running"
        time.sleep(0.1)


def test_queue_garbage_dead_lettered_while_a_task_runs(fuzz_stack: FuzzStack) -> None:
    stack = fuzz_stack
    publisher = Publisher(stack)
    publisher.take_dead()
    handled_before = _dropped(stack)
    stack.backend.configure(run_seconds=3)  # the task is still running while the garbage arrives
    try:
        reply = requests.post(f"{stack.http}/upscale_tasks", json=stack.task_body(4), timeout=60)
        assert reply.status_code == 201, reply.text
        task_id = reply.json()["id"]
        wait_running(stack, task_id)
    finally:
        stack.backend.configure(run_seconds=0.3)
    watched: dict[str, Any] = {}
    watchers = [threading.Thread(target=_watch_grpc, args=(stack, task_id, watched)),
                threading.Thread(target=_watch_ws, args=(stack, task_id, watched))]
    for watcher in watchers:
        watcher.start()
    expected_dead = 0
    try:
        @given(jobs=st.lists(JOB_MESSAGES, min_size=1, max_size=8), events=st.lists(_event_bodies(task_id),
                                                                                   max_size=8))
        @settings(max_examples=settings().max_examples)
        def publish_garbage(jobs: list[tuple[bytes, str | None]], events: list[tuple[bytes, str]]) -> None:
            nonlocal expected_dead
            for body, content_type in jobs:
                counts.record("queue: jobs exchange")
                expected_dead += _expect_dead(stack, body, content_type)
                publisher.publish_job(body, content_type)
            for body, key in events:
                counts.record("queue: events exchange")
                publisher.publish_event(body, key)

        publish_garbage()
        deadline = time.monotonic() + 120
        while _dropped(stack) - handled_before < expected_dead and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        dropped = _dropped(stack) - handled_before
        assert dropped == expected_dead, (dropped, expected_dead, log_tail(stack, "fuzz-dispatcher"))
        assert publisher.take_dead() == []  # the dead-letter handler leaves nothing behind
        counts.OUTCOMES["job messages dead-lettered"] += dropped
    finally:
        for watcher in watchers:
            watcher.join(timeout=240)
        publisher.close()
    assert watched == {"grpc": "finished", "ws": "finished"}, watched
    body = requests.get(f"{stack.http}/upscale_tasks/{task_id}", timeout=30).json()
    assert body["status"] == "finished" and body["job_counts"].get("finished") == 4, body["job_counts"]
    dispatcher_log = log_tail(stack, "fuzz-dispatcher", 10**8)
    assert "poison job message dead-lettered" in dispatcher_log
    assert "unknown unit job dead-lettered" in dispatcher_log
    assert "status event" in log_tail(stack, "fuzz-gateway", 10**8)  # dropped events are logged
