"""Streaming at scale, through the real interfaces of a gateway running several worker processes: many gRPC and
WebSocket watchers of several tasks see every sequence exactly once and in order, whichever worker serves them;
a stalled watcher delays nobody, does not grow the gateway's memory and is not cancelled; the `?delta=true`
WebSocket and the task-level WatchTask. Every gRPC case also runs on WatchTaskBatches (several events per
message), which must give the very events WatchTask gives."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import psutil
import pytest
import pytest_asyncio
import websockets

from gateway import events_hub
from gateway.workers import WORKER_HEADER
from tests.infra import wait_grpc_serving, wait_http_ok
from tests.support import db_connect
from tests.tasks_support import Gateway, create, events_exchange_of, gateway_process
from upscaling import jobs as jobstore
from upscaling.statuses import TERMINAL_TASK_STATUSES
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

WORKERS = 3
# One TCP connection per channel (gRPC would otherwise share one between channels to the same address).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 1 << 26)]


@pytest.fixture(scope="module")
def workers_gateway(stack: Any, service_env: dict[str, str], infra: Any,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_process(stack, service_env, infra, tmp_path_factory.mktemp("workers"), name="workers",
                         GATEWAY_WORKERS=str(WORKERS), MAX_WATCHES_PER_USER="0") as gateway:
        yield gateway


@pytest_asyncio.fixture
async def wdb(workers_gateway: Gateway) -> AsyncIterator[Any]:
    conn = await db_connect(workers_gateway.database_url)
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def wexchange(workers_gateway: Gateway) -> AsyncIterator[Any]:
    async with events_exchange_of(workers_gateway) as exchange:
        yield exchange


async def job_ids(conn: Any, task_id: int) -> list[int]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)]


async def last_sequence(conn: Any, task_id: int) -> int:
    return await conn.fetchval("SELECT last_sequence FROM upscale_tasks WHERE id = $1", task_id)


class GrpcWatcher:
    """A WatchTask stream (`batched`: WatchTaskBatches) on a connection of its own, read into `items` (every event,
    one by one; `sizes`: the events of each stream message) by a task."""

    def __init__(self, address: str, task_id: int, after: int = 0, task_level: bool = False,
                 batched: bool = False) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=OWN_CONNECTION)
        stub = upscaling_pb2_grpc.UpscalingServiceStub(self.channel)
        self.batched = batched
        if batched:
            self.call = stub.WatchTaskBatches(upscaling_pb2.WatchTaskBatchesRequest(
                task_id=task_id, after_sequence=after, task_level_only=task_level), timeout=300)
        else:
            self.call = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id, after_sequence=after,
                                                                      task_level_only=task_level), timeout=300)
        self.items: list[upscaling_pb2.WatchTaskResponse] = []
        self.sizes: list[int] = []
        self.received_at: list[float] = []
        self.worker = ""

    async def started(self) -> None:
        self.worker = dict(await asyncio.wait_for(self.call.initial_metadata(), 30))[WORKER_HEADER]

    async def read_all(self) -> None:
        try:
            async for message in self.call:
                now = time.time()
                events = list(message.events) if self.batched else [message]
                self.sizes.append(len(events))
                self.items += events
                self.received_at += [now] * len(events)
        finally:
            await self.channel.close()

    def sequences(self) -> list[int]:
        return [i.sequence for i in self.items]


class WsWatcher:
    """A WebSocket of one task, its messages read into `messages` until the gateway closes it."""

    def __init__(self, http: str, task_id: int, query: str) -> None:
        self.url = http.replace("http://", "ws://") + f"/ws/upscale_tasks/{task_id}?{query}"
        self.messages: list[dict[str, Any]] = []
        self.worker = ""
        self.ws: Any = None

    async def started(self, **options: Any) -> None:
        self.ws = await websockets.connect(self.url, **options)
        self.worker = self.ws.response.headers[WORKER_HEADER]
        self.messages.append(json.loads(await asyncio.wait_for(self.ws.recv(), 30)))  # init
        self.messages.append(json.loads(await asyncio.wait_for(self.ws.recv(), 30)))  # first snapshot

    async def read_all(self) -> None:
        async for raw in self.ws:
            self.messages.append(json.loads(raw))

    def statuses(self) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages if m["type"] == "status"]


async def drive(conn: Any, exchange: Any, task_id: int, jobs: list[int]) -> None:
    """Change every job of a task the ways the dispatcher and monitor do: batches, single changes published in
    reverse order (racing publishers), a stored change never published, progress rounds, then the end."""
    tags = {r["id"]: r["tag"] for r in await conn.fetch("SELECT id, tag FROM unit_jobs WHERE id = ANY($1::bigint[])",
                                                       jobs[:10])}
    async with conn.transaction():
        events, stale = await jobstore.record_submitted(
            conn, task_id, [(j, f"b-{j}", None, tags[j]) for j in jobs[:10]])
    assert not stale
    await jobstore.publish(exchange, events)
    singles = []
    for job in jobs[10:]:
        async with conn.transaction():
            singles.append(await jobstore.update_job(conn, job, status="queued", backend_job_id=f"b-{job}"))
    for events in reversed(singles):
        await jobstore.publish(exchange, events)
    async with conn.transaction():  # stored, never published: filled from the database
        await jobstore.update_jobs(conn, [(j, {"status": "running", "progress": 5.0}) for j in jobs[:5]],
                                   task_id=task_id)
    for round_ in range(1, 4):
        async with conn.transaction():
            events = await jobstore.update_jobs(
                conn, [(j, {"status": "running", "progress": 10.0 * round_}) for j in jobs], task_id=task_id)
        await jobstore.publish_many(exchange, events)
    for i, job in enumerate(jobs):
        async with conn.transaction():
            events = await jobstore.update_job(conn, job, status="failed" if i % 4 == 0 else "finished",
                                               message="boom" if i % 4 == 0 else None)
        await jobstore.publish(exchange, events)


async def task_body(gw: Gateway, task_id: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{gw.http}/upscale_tasks/{task_id}", timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {"status": body["status"], "job_counts": body["job_counts"], "progress": body["progress"],
            "jobs": body["jobs"]}


async def test_many_watchers_of_many_tasks_on_several_workers_see_every_sequence_once_in_order(
        workers_gateway: Gateway, wdb: Any, wexchange: Any) -> None:
    gw = workers_gateway
    tasks = [create(gw, 20) for _ in range(3)]
    grpc_watchers = {t: [GrpcWatcher(gw.grpc, t, batched=k % 2 == 1) for k in range(8)] for t in tasks}
    level_watchers = {t: [GrpcWatcher(gw.grpc, t, task_level=True, batched=k == 1) for k in range(2)]
                      for t in tasks}
    ws_watchers = {t: [WsWatcher(gw.http, t, "interval=0.2") for _ in range(6)] for t in tasks}
    every = [w for group in (grpc_watchers, level_watchers, ws_watchers) for ws in group.values() for w in ws]
    await asyncio.gather(*(w.started() for w in every))
    readers = [asyncio.ensure_future(w.read_all()) for w in every]
    for w in (*grpc_watchers.values(), *level_watchers.values()):
        for g in w:
            await wait_items(g, 1)  # the snapshot: the stream is subscribed

    resumed: dict[int, list[GrpcWatcher]] = {}
    for t in tasks:
        await drive(wdb, wexchange, t, await job_ids(wdb, t))
    for t in tasks:  # late watchers resuming from the middle (from the database or the kept events)
        resumed[t] = [GrpcWatcher(gw.grpc, t, after=k, batched=batched) for batched in (False, True)
                      for k in (1, 17, 40)]
    late = [w for ws in resumed.values() for w in ws]
    await asyncio.gather(*(w.started() for w in late))
    readers += [asyncio.ensure_future(w.read_all()) for w in late]
    await asyncio.wait_for(asyncio.gather(*readers), 120)

    workers_seen = {w.worker for w in every + late}
    assert len(workers_seen) >= 2, f"every watcher landed on worker {workers_seen}"
    assert len({w.worker for w in every + late if isinstance(w, GrpcWatcher) and w.batched}) >= 2
    batched = [w for ws in grpc_watchers.values() for w in ws if w.batched]
    assert all(w.sizes[0] == 1 for w in batched)  # the snapshot alone
    assert any(size > 1 for w in batched for size in w.sizes[1:])  # a published batch travels as one message
    for t in tasks:
        last = await last_sequence(wdb, t)
        final = await task_body(gw, t)
        assert final["status"] == "finished" and last > 60
        for w in grpc_watchers[t]:
            assert w.items[0].WhichOneof("update") == "snapshot" and w.items[0].sequence == 0
            assert w.sequences()[1:] == list(range(1, last + 1)), f"worker {w.worker}"
            assert w.items[-1].task_event.status == common_pb2.TASK_STATUS_FINISHED
        for w, after in zip(resumed[t], (1, 17, 40) * 2, strict=True):
            assert w.sequences() == list(range(after + 1, last + 1)), f"worker {w.worker}"
        for w in level_watchers[t]:
            assert not w.items[0].snapshot.jobs and dict(w.items[0].snapshot.job_counts) == {"created": 20}
            assert all(i.WhichOneof("update") == "task_event" for i in w.items[1:])
            seqs = w.sequences()
            assert seqs == sorted(set(seqs)) and seqs[-1] == last
            assert dict(w.items[-1].task_event.job_counts) == {k: v for k, v in final["job_counts"].items() if v}
            assert w.items[-1].task_event.status == common_pb2.TASK_STATUS_FINISHED
        for w in ws_watchers[t]:
            # compressed once per worker for all sockets (gateway.ws_deflate), and still decoded right
            assert "server_no_context_takeover" in w.ws.response.headers["Sec-WebSocket-Extensions"]
            snapshots = w.statuses()
            seqs = [s["sequence"] for s in snapshots]
            assert seqs == sorted(set(seqs)) and seqs[-1] == last, f"worker {w.worker}"
            assert comparable(snapshots[-1]) == comparable(final)
            assert snapshots[-1]["status"] in TERMINAL_TASK_STATUSES


async def wait_items(watcher: GrpcWatcher, n: int, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while len(watcher.items) < n:
        assert time.monotonic() < deadline, f"{len(watcher.items)} of {n} items"
        await asyncio.sleep(0.05)


def gateway_memory(gw: Gateway) -> int:
    """RSS of the gateway's worker processes (bytes)."""
    assert gw.process.process is not None
    parent = psutil.Process(gw.process.process.pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children()])


async def test_a_stalled_watcher_delays_nobody_does_not_grow_memory_and_is_not_cancelled(
        workers_gateway: Gateway, wdb: Any, wexchange: Any) -> None:
    gw = workers_gateway
    task_id = create(gw, 20)
    jobs = await job_ids(wdb, task_id)
    healthy = [GrpcWatcher(gw.grpc, task_id, batched=k == 2) for k in range(4)]
    stalled = [GrpcWatcher(gw.grpc, task_id, batched=k >= 2) for k in range(4)]
    stalled_ws = [WsWatcher(gw.http, task_id, "interval=0.05") for _ in range(2)]
    await asyncio.gather(*(w.started() for w in healthy + stalled))
    for w in stalled_ws:
        await w.started(max_queue=1)  # the client reads no further than one message: the socket stalls
    readers = [asyncio.ensure_future(w.read_all()) for w in healthy]
    for w in healthy:
        await wait_items(w, 1)
    before = gateway_memory(gw)

    big = "x" * 20_000  # each event carries 20 kB: what stalled watchers miss would be ~300 MB if buffered
    rounds = 100
    for r in range(rounds):
        async with wdb.transaction():
            events = await jobstore.update_jobs(wdb, [(j, {"message": f"{r}:{big}"}) for j in jobs], task_id=task_id)
        await jobstore.publish_many(wexchange, events)
    last = await last_sequence(wdb, task_id)
    for w in healthy:
        await wait_items(w, last + 1, limit_s=120)
    grown = gateway_memory(gw) - before
    # the healthy watchers got every event promptly: event time -> receipt
    delays = [at - i.job_event.time.ToMicroseconds() / 1e6 for w in healthy
              for i, at in zip(w.items[1:], w.received_at[1:], strict=True)]
    assert max(delays) < 10, f"max delay {max(delays):.1f} s"
    assert grown < 80 * 2**20, f"the gateway grew by {grown / 2**20:.0f} MB while watchers stalled"

    # the stalled ones resume: nothing was cancelled, every sequence arrives exactly once and in order
    readers += [asyncio.ensure_future(w.read_all()) for w in stalled + stalled_ws]
    for i, job in enumerate(jobs):
        async with wdb.transaction():
            events = await jobstore.update_job(wdb, job, status="finished" if i else "failed")
        await jobstore.publish(wexchange, events)
    await asyncio.wait_for(asyncio.gather(*readers), 180)
    last = await last_sequence(wdb, task_id)
    for w in healthy + stalled:
        assert w.sequences() == [0, *range(1, last + 1)]
    for w in stalled[2:]:  # a batched stream behind catches up in messages of many events (at most ~1 MB each)
        assert max(w.sizes) > 20 and len(w.sizes) < last / 4
    for w in stalled_ws:
        snapshots = w.statuses()
        assert snapshots[-1]["sequence"] == last and snapshots[-1]["status"] == "finished"
        assert [s["sequence"] for s in snapshots] == sorted({s["sequence"] for s in snapshots})


async def test_delta_websocket_sends_only_what_changed(workers_gateway: Gateway, wdb: Any, wexchange: Any) -> None:
    gw = workers_gateway
    task_id = create(gw, 6)
    jobs = await job_ids(wdb, task_id)
    watcher = WsWatcher(gw.http, task_id, "interval=0.1&delta=true")
    await watcher.started()
    reader = asyncio.ensure_future(watcher.read_all())
    first = watcher.statuses()[0]
    assert len(first["jobs"]) == 6 and "delta" not in first and first["jobs"][0]["parameters"]
    state = {j["id"]: dict(j) for j in first["jobs"]}
    for job in jobs[:2]:
        async with wdb.transaction():
            events = await jobstore.update_job(wdb, job, status="running", backend_job_id=f"d-{job}", progress=20.0)
        await jobstore.publish(wexchange, events)
        await asyncio.sleep(0.3)
    for i, job in enumerate(jobs):
        async with wdb.transaction():
            events = await jobstore.update_job(wdb, job, status="finished" if i % 2 else "failed",
                                               message=None if i % 2 else "boom")
        await jobstore.publish(wexchange, events)
    await asyncio.wait_for(reader, 60)
    deltas = watcher.statuses()[1:]
    assert deltas and all(d["delta"] is True for d in deltas)
    assert any(len(d["jobs"]) < 6 for d in deltas)  # only the changed jobs
    for d in deltas:
        assert set(d) == {"id", "status", "updated", "job_counts", "progress", "costs", "usage", "max_costs",
                          "stop_reason", "sequence", "delta", "since", "jobs"}
        for change in d["jobs"]:
            assert set(change) == {"id", "status", "progress", "message"}
            state[change["id"]].update(change)
    assert [d["since"] for d in deltas[1:]] == [d["sequence"] for d in deltas[:-1]]
    final = await task_body(gw, task_id)
    assert deltas[-1]["status"] == final["status"] == "finished"
    assert deltas[-1]["job_counts"] == final["job_counts"] and deltas[-1]["progress"] == final["progress"]
    assert sorted(state.values(), key=lambda j: j["id"]) == final["jobs"]

    base = gw.http.replace("http://", "ws://")
    async with websockets.connect(f"{base}/ws/upscale_tasks/{task_id}?delta=maybe") as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["type"] == "error" and "delta" in error["message"]


async def test_task_level_watch_sends_counts_not_jobs(workers_gateway: Gateway, wdb: Any, wexchange: Any) -> None:
    gw = workers_gateway
    task_id = create(gw, 3)
    jobs = await job_ids(wdb, task_id)
    watcher = GrpcWatcher(gw.grpc, task_id, task_level=True)
    await watcher.started()
    reader = asyncio.ensure_future(watcher.read_all())
    await wait_items(watcher, 1)
    snapshot = watcher.items[0].snapshot
    assert not snapshot.jobs and dict(snapshot.job_counts) == {"created": 3}
    async with wdb.transaction():
        events = await jobstore.update_job(wdb, jobs[0], status="running", backend_job_id="t-1")
    await jobstore.publish(wexchange, events)
    await wait_items(watcher, 2)
    assert dict(watcher.items[1].task_event.job_counts) == {"created": 2, "running": 1}
    assert watcher.items[1].task_event.status == common_pb2.TASK_STATUS_RUNNING
    # a progress change moves no count: nothing is sent for it; the next count change is
    async with wdb.transaction():
        events = await jobstore.update_job(wdb, jobs[0], progress=50.0)
    await jobstore.publish(wexchange, events)
    # (each change is awaited: a watcher behind the feed gets only the latest counts, by design)
    for n, job in enumerate(jobs, start=3):
        async with wdb.transaction():
            events = await jobstore.update_job(wdb, job, status="finished")
        await jobstore.publish(wexchange, events)
        await wait_items(watcher, n)
    await asyncio.wait_for(reader, 60)
    counts = [dict(i.task_event.job_counts) for i in watcher.items[1:]]
    assert counts == [{"created": 2, "running": 1}, {"created": 2, "finished": 1}, {"created": 1, "finished": 2},
                      {"finished": 3}]
    assert watcher.items[-1].task_event.status == common_pb2.TASK_STATUS_FINISHED
    assert watcher.items[-1].sequence == await last_sequence(wdb, task_id)
    # resuming a finished task at level: the final counts once, then the end
    again = GrpcWatcher(gw.grpc, task_id, after=2, task_level=True)
    await again.started()
    await asyncio.wait_for(again.read_all(), 30)
    assert [dict(i.task_event.job_counts) for i in again.items] == [{"finished": 3}]


def test_a_worker_that_dies_is_replaced_and_the_gateway_stops_cleanly(
        stack: Any, service_env: dict[str, str], infra: Any, tmp_path: Any) -> None:
    with gateway_process(stack, service_env, infra, tmp_path, name="restart", GATEWAY_WORKERS="2") as gw:
        assert gw.process.process is not None
        supervisor = psutil.Process(gw.process.process.pid)

        def workers(count: int, limit_s: float = 60) -> list[psutil.Process]:
            deadline = time.monotonic() + limit_s
            while len(children := supervisor.children()) != count:
                assert time.monotonic() < deadline, f"{len(children)} workers, expected {count}"
                time.sleep(0.2)
            return children

        victim = workers(2)[0]
        victim.kill()
        deadline = time.monotonic() + 60
        while victim.pid in {p.pid for p in workers(2)}:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        wait_http_ok(f"{gw.http}/health", gw.process)
        wait_grpc_serving(gw.grpc, gw.process)
        for _ in range(20):  # new connections land on both workers: all answered
            with grpc.insecure_channel(gw.grpc, options=OWN_CONNECTION) as channel:
                stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
                reply = stub.ListTasks(upscaling_pb2.ListTasksRequest(page_size=1), timeout=30)
                assert list(reply.tasks) == []
        assert gw.process.stop() == 0


def test_a_worker_whose_memory_grew_under_watchers_is_replaced_once_they_left(
        stack: Any, service_env: dict[str, str], infra: Any, tmp_path: Any) -> None:
    with gateway_process(stack, service_env, infra, tmp_path, name="recycle", GATEWAY_WORKERS="2",
                         GATEWAY_RECYCLE_MB="0.5", MAX_WATCHES_PER_USER="0") as gw:
        assert gw.process.process is not None
        supervisor = psutil.Process(gw.process.process.pid)
        task = create(gw, 20)

        async def watch_and_leave(sockets: int, streams: int) -> set[str]:
            ws = [WsWatcher(gw.http, task, "interval=1") for _ in range(sockets)]
            grpc_ = [GrpcWatcher(gw.grpc, task, batched=True) for _ in range(streams)]
            await asyncio.gather(*(w.started() for w in ws), *(g.started() for g in grpc_))
            for w in ws:
                await w.ws.close()
            for g in grpc_:
                g.call.cancel()
                await g.channel.close()
            return {w.worker for w in [*ws, *grpc_]}

        original = {p.pid for p in supervisor.children()}
        assert len(original) == 2
        assert len(asyncio.run(watch_and_leave(20, 4))) == 2  # both workers served watchers ...
        time.sleep(events_hub.LINGER_S + 3)  # ... and, once their feeds expired, measured their memory
        asyncio.run(watch_and_leave(300, 60))  # more memory than the 0.5 MB allowed: replaced once idle again
        deadline = time.monotonic() + 90
        while not (original - {p.pid for p in supervisor.children()}) or len(supervisor.children()) != 2:
            assert time.monotonic() < deadline, f"workers {[p.pid for p in supervisor.children()]}"
            time.sleep(0.2)
        wait_http_ok(f"{gw.http}/health", gw.process)
        wait_grpc_serving(gw.grpc, gw.process)

        async def new_watcher() -> dict[str, Any]:
            watcher = WsWatcher(gw.http, task, "interval=1")
            await watcher.started()
            await watcher.ws.close()
            return watcher.statuses()[0]

        for _ in range(6):  # new connections land on the fresh worker too: all served
            assert asyncio.run(new_watcher())["status"] == "created"
        assert gw.process.stop() == 0
