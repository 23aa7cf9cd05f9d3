"""One task's live state in a gateway process, shared by all of its watchers (gRPC streams and WebSockets).

A `TaskFeed` is loaded from PostgreSQL once (the task row and its jobs, at a known sequence), then kept current
by applying the task's status events in sequence order: out-of-order or missing events are filled from
`task_events` with one query for the whole process, never one per watcher. It keeps the recent events as the
bytes that came from the broker, and builds each view of the current state once per version:

- the gRPC snapshot (`WatchTaskResponse` bytes) and the task-level summary (a `TaskStatusEvent` with the counts);
- the WebSocket `status` text (the APEx envelope as JSON) and `?delta=true` texts.

Watchers hold only a cursor (the last sequence they sent): a watcher that falls behind the kept events reads
from the database from its cursor (gRPC) or skips to the latest snapshot (WebSocket), so nothing per watcher
grows with the events and a slow watcher costs the others nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway import task_views as views
from upscaling import event_wire
from upscaling.jobs.events import fill_usage
from upscaling.statuses import (
    TERMINAL_TASK_STATUSES,
    job_status_from_proto,
    task_status_from_proto,
    task_status_to_proto,
)
from upscaling.v1 import jobs_pb2, upscaling_pb2

log = logging.getLogger(__name__)

LOG_SIZE = 4096  # recent events kept per task; a watcher further behind reads from the database
LOG_BYTES = 4 * 1024 * 1024  # ... and at most about this many bytes of them
# Without any event for this long while watched, the feed checks the database (a lost publish cannot stall it).
CATCH_UP_S = 30.0
FILL_BATCH = 5000  # events read from the database per query when filling a gap
# A WatchTaskBatches message holds at most about this many bytes of events (gRPC clients accept 4 MB by default).
BATCH_BYTES = 1024 * 1024
# At the task's end a gRPC stream waits at most this long for the WebSockets' terminal snapshots (`after_sockets`).
SOCKETS_FIRST_S = 0.1
# A gRPC stream that sent the task's terminal state as it happened ends this long after that state reached the
# process (`before_end`).
END_AFTER_S = 0.3
Loader = Callable[[int], Awaitable[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]]


def is_terminal_event(event: upscaling_pb2.WatchTaskResponse) -> bool:
    """Whether an event is a task event with a terminal status (an unknown status value is not)."""
    if event.WhichOneof("update") != "task_event":
        return False
    try:
        return task_status_from_proto(event.task_event.status) in TERMINAL_TASK_STATUSES
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Entry:
    """One event as sent to gRPC watchers: its sequence, serialized bytes, and whether it ends the task."""

    sequence: int
    body: bytes
    terminal: bool


def entry_of(body: bytes, event: upscaling_pb2.WatchTaskResponse) -> Entry:
    return Entry(event.sequence, body, is_terminal_event(event))


def frame(body: bytes) -> bytes:
    """A `WatchTaskBatchesResponse` of one serialized event."""
    return event_wire.element_head(len(body)) + body


def join_entries(entries: Sequence[Entry], limit: int = BATCH_BYTES) -> tuple[bytes, Entry]:
    """A `WatchTaskBatchesResponse` of the first of `entries` (at least one, then as many as fit in about `limit`
    bytes), and the last entry it holds."""
    parts: list[bytes] = []
    size = 0
    end = entries[0]
    for entry in entries:
        if parts and size + len(entry.body) > limit:
            break
        parts += (event_wire.element_head(len(entry.body)), entry.body)
        size += len(entry.body) + 6
        end = entry
    return b"".join(parts), end


def _time(stamp: Any) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _usage(usage: Any) -> dict[str, dict[str, Any]] | None:
    """An event's usage map as stored ({"cpu": {"value", "unit"}, ...}; None when empty)."""
    return {name: {"value": m.value, "unit": m.unit} for name, m in usage.items()} or None


class TaskState:
    """A task row and its job rows (as dicts, the columns `task_views` reads), updated by applying events."""

    def __init__(self, task: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]]) -> None:
        self.task = dict(task)
        self.jobs = [dict(j) for j in jobs]
        self._index = {j["id"]: i for i, j in enumerate(self.jobs)}
        self.changed_at: dict[int, int] = {}  # job id -> sequence of its last change
        self.sequence: int = self.task["last_sequence"]

    @property
    def status(self) -> str:
        return self.task["status"]

    @property
    def terminal(self) -> bool:
        return self.task["status"] in TERMINAL_TASK_STATUSES

    def apply(self, event: upscaling_pb2.WatchTaskResponse) -> None:
        """Apply the event with the next sequence (fields with unknown enum values are left as they were)."""
        kind = event.WhichOneof("update")
        if kind == "job_event":
            ev = event.job_event
            i = self._index.get(ev.job_id)
            if i is not None:
                job = self.jobs[i]
                try:
                    job["status"] = job_status_from_proto(ev.status)
                except ValueError:
                    pass
                job["backend_job_id"] = ev.backend_job_id or None
                if ev.backend:
                    job["backend"] = ev.backend
                # the event carries 0 / "" for a progress or message that is not set
                job["progress"] = ev.progress if ev.progress or job["progress"] is not None else None
                job["message"] = ev.message or None
                job["costs"] = ev.costs if ev.HasField("costs") else None
                job["usage"] = _usage(ev.usage)
                job["updated"] = _time(ev.time)
                self.changed_at[ev.job_id] = event.sequence
            self.task["updated"] = _time(ev.time)
        elif kind == "task_event":
            task_ev = event.task_event
            try:
                self.task["status"] = task_status_from_proto(task_ev.status)
            except ValueError:
                pass
            self.task["costs"] = task_ev.costs
            self.task["usage"] = _usage(task_ev.usage)
            self.task["stop_reason"] = task_ev.stop_reason or None
            self.task["updated"] = _time(task_ev.time)
        self.sequence = event.sequence
        self.task["last_sequence"] = event.sequence


class TaskFeed:
    """The live state and recent events of one task in this process (see the module docstring)."""

    def __init__(self, task_id: int, load: Loader, pool: asyncpg.Pool | None, log_size: int = LOG_SIZE,
                 catch_up_s: float = CATCH_UP_S) -> None:
        self.task_id = task_id
        self._load_rows = load
        self.pool = pool
        self.log_size = log_size
        self.state: TaskState | None = None
        self.watchers = 0
        self._log: list[Entry] = []
        self._log_bytes = 0
        self._pending: dict[int, tuple[bytes, upscaling_pb2.WatchTaskResponse]] = {}
        self._tick = asyncio.Event()
        self._socket_tick = asyncio.Event()  # WebSockets wake first (see `wait`)
        self._ended = asyncio.Event()  # set while the task is terminal (or the feed closed)
        self._lock = asyncio.Lock()
        self._filling: asyncio.Task[None] | None = None
        self.catch_up_s = catch_up_s
        self._event_at = time.monotonic()  # when the last event was applied (or the state loaded)
        self._terminal_at = -math.inf  # when a live event made the task terminal
        self._watchdog: asyncio.Task[None] | None = None
        self._version = -1  # the sequence the cached views below were built for
        self._cache: dict[Any, Any] = {}
        self.closed = False
        self._sockets_due = 0  # watchers whose terminal message goes before the streams' ends (`socket_turn`)
        self._sockets_done = asyncio.Event()
        self._sockets_timer: asyncio.TimerHandle | None = None

    # ---- state ----------------------------------------------------------------------------------------------

    @property
    def last(self) -> int:
        """The last sequence applied (-1 before the state is loaded)."""
        return self.state.sequence if self.state is not None else -1

    @property
    def terminal(self) -> bool:
        return self.state is not None and self.state.terminal

    async def ready(self) -> None:
        """Load the state from the database unless loaded (one load per feed, whatever the number of waiters)."""
        if self.state is not None:
            if self.state.terminal:
                await self._catch_up()
            return
        async with self._lock:
            if self.state is None:
                task, jobs = await self._load_rows(self.task_id)
                self.state = TaskState(task, jobs)
                if self.state.terminal:
                    self._ended.set()
                self._event_at = time.monotonic()
                self._drain_pending()
                self._notify()
                if self.pool is not None and self.catch_up_s > 0:
                    self._watchdog = asyncio.get_running_loop().create_task(self._watch_quiet())

    async def _catch_up(self, timeout_s: float = 5.0) -> None:
        """A terminal feed kept for new watchers may be behind a retry whose events are still on their way (the
        outbox relay publishes them): read the stored events after it before a new watcher is told the task
        ended. Watchers arriving together share one read."""
        self.fill()
        filling = self._filling
        if filling is not None and not filling.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(filling), timeout_s)

    async def _watch_quiet(self) -> None:
        """One timer per feed, not one per watcher: after CATCH_UP_S without events, look in the database."""
        while not self.closed:
            await asyncio.sleep(max(1.0, self._event_at + self.catch_up_s - time.monotonic()))
            if time.monotonic() - self._event_at >= self.catch_up_s and self.watchers and not self.terminal:
                self._event_at = time.monotonic()
                self.fill()

    def close(self) -> None:
        self.closed = True
        for task in (self._filling, self._watchdog):
            if task is not None:
                task.cancel()
        self._log.clear()
        self._log_bytes = 0
        self._pending.clear()
        self._cache.clear()
        self._notify()
        self._ended.set()
        self._open_sockets_gate()

    # ---- events in --------------------------------------------------------------------------------------------

    def push(self, body: bytes, event: upscaling_pb2.WatchTaskResponse) -> None:
        """An event from the broker: applied now when it is the next one, else kept until the gap is filled
        (call `flush` after a message's events)."""
        seq = event.sequence
        if self.state is not None and seq <= self.state.sequence:
            return
        self._pending[seq] = (body, event)

    def flush(self) -> None:
        """Apply what became contiguous, ask the database for what is missing, wake the watchers."""
        if self.state is None:
            return
        self._drain_pending()
        self._notify()

    def _drain_pending(self, fill: bool = True) -> None:
        """Apply the pending events that follow the last applied one; with `fill`, a gap is read from the
        database."""
        assert self.state is not None
        pending = self._pending
        if not pending:
            return
        for seq in [s for s in pending if s <= self.state.sequence]:
            del pending[seq]
        while (nxt := pending.pop(self.state.sequence + 1, None)) is not None:
            self._apply(*nxt)
        if pending and fill:
            self.fill()  # a gap: the missing events are stored, read them

    def _apply(self, body: bytes, event: upscaling_pb2.WatchTaskResponse) -> None:
        assert self.state is not None
        self.state.apply(event)
        if self.state.terminal:
            self._ended.set()
            self._terminal_at = time.monotonic()
        elif self._ended.is_set():  # retried: running again
            self._ended = asyncio.Event()
        self._event_at = time.monotonic()
        self._log.append(entry_of(body, event))
        self._log_bytes += len(body)
        if len(self._log) >= 2 * self.log_size or self._log_bytes > LOG_BYTES:
            self._trim()

    def _trim(self) -> None:
        """Forget the oldest kept events: down to `log_size` events and half of LOG_BYTES (trimming in steps)."""
        keep, size = 0, 0
        for entry in reversed(self._log):
            if keep >= self.log_size or size + len(entry.body) > LOG_BYTES // 2:
                break
            keep += 1
            size += len(entry.body)
        del self._log[:len(self._log) - max(keep, 1)]
        self._log_bytes = sum(len(e.body) for e in self._log)

    def _notify(self) -> None:
        socket_tick, self._socket_tick = self._socket_tick, asyncio.Event()
        tick, self._tick = self._tick, asyncio.Event()
        socket_tick.set()
        tick.set()

    def fill(self) -> None:
        """Read the events after the last applied one from the database (one reader at a time)."""
        if self.pool is None or self.state is None or self.closed:
            return
        if self._filling is None or self._filling.done():
            self._filling = asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        assert self.pool is not None and self.state is not None
        try:
            while True:
                before = set(self._pending)
                rows = await self.pool.fetch(
                    "SELECT payload FROM task_events WHERE task_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
                    self.task_id, self.state.sequence, FILL_BATCH)
                for row in rows:
                    body = bytes(row["payload"])
                    event = upscaling_pb2.WatchTaskResponse.FromString(body)
                    if event.sequence == self.state.sequence + 1:
                        self._apply(body, event)
                if len(rows) < FILL_BATCH:
                    # every event published before this read is stored: pending ones still ahead are not real
                    for seq in before:
                        self._pending.pop(seq, None)
                    self._drain_pending(fill=False)
                    self._notify()
                    return
                self._notify()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("reading missed status events failed; retrying", exc_info=True,
                        extra={"task_id": self.task_id})
            await asyncio.sleep(1.0)
            self._filling = None
            self.fill()

    # ---- watchers ---------------------------------------------------------------------------------------------

    async def wait(self, beyond: int, wait_s: float | None = None, socket: bool = False) -> None:
        """Until a sequence above `beyond` is applied or the feed closes (at most `wait_s` seconds if given).

        `socket`: a WebSocket's wait. Sockets wake before the gRPC streams on the same change (in the same loop
        iteration, nobody waits for anybody): a change sends one text to each socket but a message to each stream,
        and a socket's snapshot is one of the few it gets, so the snapshots are not queued behind the streams."""
        while self.last <= beyond and not self.closed:
            tick = self._socket_tick if socket else self._tick
            if wait_s is None:
                await tick.wait()
                continue
            try:
                await asyncio.wait_for(tick.wait(), wait_s)
            except TimeoutError:
                return

    async def wait_terminal(self, wait_s: float) -> None:
        """Until the task is terminal or the feed closes, at most `wait_s` seconds (one wake-up, not one per
        event: what a throttled WebSocket waits for)."""
        if self._ended.is_set():
            return
        try:
            await asyncio.wait_for(self._ended.wait(), wait_s)
        except TimeoutError:
            pass

    @contextlib.contextmanager
    def socket_turn(self) -> Iterator[Callable[[], None]]:
        """Held by a WebSocket while it watches; yields `sent`, to call once it sent the terminal snapshot.

        At the task's end every watcher of the process wakes at once. A WebSocket's terminal snapshot is one of
        the handful of messages it gets (and what a notebook waits for), a gRPC stream's last events one of
        hundreds, and ending a stream costs the gateway far more than sending a text; so the streams' last
        messages wait (`after_sockets`, at most SOCKETS_FIRST_S) until every WebSocket of the task sent its
        snapshot or left."""
        self._sockets_due += 1
        done = False

        def sent() -> None:
            nonlocal done
            if not done:
                done = True
                self._sockets_due -= 1
                if self._sockets_due == 0:
                    self._open_sockets_gate()

        try:
            yield sent
        finally:
            sent()

    async def after_sockets(self) -> None:
        """Before a gRPC stream sends the task's end: until the WebSockets sent theirs (see `socket_turn`), at
        most SOCKETS_FIRST_S (one timer for all the streams waiting)."""
        if self._sockets_due == 0 or self.closed:
            return
        if self._sockets_timer is None:
            self._sockets_timer = asyncio.get_running_loop().call_later(SOCKETS_FIRST_S, self._open_sockets_gate)
        await self._sockets_done.wait()

    async def before_end(self) -> None:
        """Before a gRPC stream that sent the task's terminal state ends: until END_AFTER_S after that state
        reached the process (at once for a task that ended earlier, or when the feed closes).

        Ending a stream (its trailers, then the client's channel teardown on both sides) costs far more than a
        message, and every stream of the task ends at the same instant: deferred a little, those ends no longer
        compete with the terminal messages and snapshots the other watchers are still receiving and reading."""
        wait = self._terminal_at + END_AFTER_S - time.monotonic()
        if wait > 0 and not self.closed:
            await asyncio.sleep(wait)

    def _open_sockets_gate(self) -> None:
        if self._sockets_timer is not None:
            self._sockets_timer.cancel()
            self._sockets_timer = None
        opened, self._sockets_done = self._sockets_done, asyncio.Event()
        opened.set()

    def entries_after(self, sequence: int) -> list[Entry] | None:
        """The kept events after `sequence`, in order; None when some of them are no longer kept."""
        if sequence >= self.last:
            return []
        first = self._log[0].sequence if self._log else self.last + 1
        if sequence < first - 1:
            return None
        return self._log[sequence - first + 1:]

    async def stored_after(self, sequence: int, limit: int = 1000) -> list[Entry]:
        """Events after `sequence` read from the database (for a watcher behind the kept ones)."""
        assert self.pool is not None
        rows = await self.pool.fetch(
            "SELECT payload FROM task_events WHERE task_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
            self.task_id, sequence, limit)
        out = []
        for row in rows:
            body = bytes(row["payload"])
            out.append(entry_of(body, upscaling_pb2.WatchTaskResponse.FromString(body)))
        return out

    # ---- views, built once per version --------------------------------------------------------------------------

    def _cached(self, key: Any, build: Callable[[], Any]) -> Any:
        if self._version != self.last:
            self._cache.clear()
            self._version = self.last
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = build()
        return value

    def counts(self) -> dict[str, int]:
        """Jobs per status (every status present)."""
        assert self.state is not None
        return self._cached("counts", lambda: views.job_counts(self.state.jobs))  # type: ignore[union-attr]

    def snapshot_bytes(self) -> bytes:
        """The serialized `WatchTaskResponse` snapshot (the task with its jobs) at the current sequence."""
        def build() -> bytes:
            s = self.state
            assert s is not None
            return upscaling_pb2.WatchTaskResponse(snapshot=views.task_proto(s.task, s.jobs),
                                                   sequence=s.sequence).SerializeToString()
        return self._cached("snapshot", build)

    def task_snapshot_bytes(self) -> bytes:
        """The snapshot of a task-level watch: the task with its counts, no jobs."""
        def build() -> bytes:
            s = self.state
            assert s is not None
            return upscaling_pb2.WatchTaskResponse(snapshot=views.task_proto(s.task, counts=self.counts()),
                                                   sequence=s.sequence).SerializeToString()
        return self._cached("task_snapshot", build)

    def framed(self, view: Callable[[], bytes], key: str) -> bytes:
        """A view (`snapshot_bytes`, `task_snapshot_bytes`, `summary_bytes`) as a `WatchTaskBatchesResponse`."""
        return self._cached(("framed", key), lambda: frame(view()))

    def batch_after(self, sequence: int, entries: Sequence[Entry], kept: bool = True) -> tuple[bytes, Entry]:
        """The next `WatchTaskBatchesResponse` of a watcher at `sequence` (`entries`: those after it, at least
        one) and the last entry it holds. Built once per version and position when the entries are the kept ones
        (`kept`), so the watchers at the same position, usually all of them, share the same bytes."""
        if not kept:
            return join_entries(entries)
        return self._cached(("batch", sequence), lambda: join_entries(entries))

    def summary_key(self) -> tuple[Any, ...]:
        """What a task-level watcher sees: the status, the counts, the costs and the stop reason."""
        assert self.state is not None
        return (self.state.status, tuple(self.counts().values()), self.state.task.get("costs"),
                self.state.task.get("stop_reason"))

    def summary_bytes(self) -> bytes:
        """A `TaskStatusEvent` with the current status and counts, numbered with the current sequence."""
        def build() -> bytes:
            s = self.state
            assert s is not None
            event = jobs_pb2.TaskStatusEvent(task_id=self.task_id, status=task_status_to_proto(s.status),
                                             job_counts={k: v for k, v in self.counts().items() if v},
                                             sequence=s.sequence, costs=s.task.get("costs") or 0.0,
                                             stop_reason=s.task.get("stop_reason") or "")
            fill_usage(event.usage, s.task.get("usage"))
            event.time.FromDatetime(s.task["updated"])
            return upscaling_pb2.WatchTaskResponse(task_event=event, sequence=s.sequence).SerializeToString()
        return self._cached("summary", build)

    def _message(self) -> str:
        assert self.state is not None
        return f"upscale task {self.task_id} is {self.state.status}"

    def snapshot_text(self) -> str:
        """The WebSocket `status` message: the APEx envelope with the task body (and its `sequence`)."""
        def build() -> str:
            s = self.state
            assert s is not None
            body = views.task_body(s.task, s.jobs)
            body["sequence"] = s.sequence
            return _dumps({"type": "status", "data": body, "message": self._message(), "task_id": self.task_id})
        return self._cached("text", build)

    def delta_text(self, since: int) -> str:
        """The `?delta=true` message after sequence `since`: task status, counts, progress and the jobs changed
        since then (id, status, progress, message)."""
        def build() -> str:
            s = self.state
            assert s is not None
            changed = [{"id": j["id"], "status": j["status"], "progress": j["progress"], "message": j["message"]}
                       for j in s.jobs if s.changed_at.get(j["id"], -1) > since]
            body = {"id": self.task_id, "status": s.status, "updated": _iso(s.task["updated"]),
                    "job_counts": self.counts(), "progress": views.task_progress(s.jobs), "sequence": s.sequence,
                    **views.task_costs(s.task), "delta": True, "since": since, "jobs": changed}
            return _dumps({"type": "status", "data": body, "message": self._message(), "task_id": self.task_id})
        return self._cached(("delta", since), build)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
