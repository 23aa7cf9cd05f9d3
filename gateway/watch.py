"""Watching a task: a snapshot or a replay from `task_events`, then live events from the hub, each sequence
exactly once and in order (gaps are filled from the database)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from gateway.events_hub import EventsHub
from gateway.task_views import task_proto
from gateway.tasks import TaskService
from upscaling import jobstore
from upscaling.auth import Principal
from upscaling.errors import InvalidArgument
from upscaling.statuses import TERMINAL_TASK_STATUSES, task_status_from_proto
from upscaling.v1 import upscaling_pb2

# Without any live event for this long, the watcher checks the database (a lost publish cannot stall it).
CATCH_UP_S = 30.0


def is_terminal_event(event: upscaling_pb2.WatchTaskResponse) -> bool:
    """Whether an event is a task event with a terminal status (an unknown status value is not)."""
    if event.WhichOneof("update") != "task_event":
        return False
    try:
        return task_status_from_proto(event.task_event.status) in TERMINAL_TASK_STATUSES
    except ValueError:
        return False


async def watch_task(tasks: TaskService, hub: EventsHub, pool: asyncpg.Pool, task_id: int, caller: Principal,
                     after_sequence: int = 0, catch_up_s: float = CATCH_UP_S
                     ) -> AsyncIterator[upscaling_pb2.WatchTaskResponse]:
    """The WatchTask stream of one of the caller's tasks (NotFound for another user's, checked before anything is
    sent); ends after the event that makes the task terminal."""
    if after_sequence < 0:
        raise InvalidArgument("after_sequence must not be negative")
    with hub.subscribe(task_id) as sub:
        if after_sequence == 0:
            view = await tasks.get_task(task_id, caller)
            last = view.task["last_sequence"]
            yield upscaling_pb2.WatchTaskResponse(snapshot=task_proto(view.task, view.jobs), sequence=last)
            if view.task["status"] in TERMINAL_TASK_STATUSES:
                return
        else:
            task = await tasks.task_exists(task_id, caller)
            last = after_sequence
            if task["status"] in TERMINAL_TASK_STATUSES and last >= task["last_sequence"]:
                return
        item: object = None  # nothing live yet: start by reading what is stored after `last`
        while True:
            if not isinstance(item, upscaling_pb2.WatchTaskResponse):
                # start, a gap, dropped events (RESYNC) or a quiet period: read what was missed from the database
                replay = await jobstore.events_after(pool, task_id, last)
                for i, event in enumerate(replay):
                    yield event
                    last = event.sequence
                    if is_terminal_event(event) and i == len(replay) - 1:
                        return
            item = await sub.get(wait_s=catch_up_s)
            if isinstance(item, upscaling_pb2.WatchTaskResponse):
                if item.sequence <= last:
                    continue
                if item.sequence == last + 1:
                    yield item
                    last = item.sequence
                    if is_terminal_event(item):
                        return
                    continue
                item = None  # a gap: replay from the database
