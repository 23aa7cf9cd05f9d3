"""Status events as broker messages: consecutive events of one task are batched, in order."""

from __future__ import annotations

from upscaling import event_wire
from upscaling.jobs.events import PendingEvent, broker_messages, job_event, now_proto


def event(task_id: int, job_id: int, sequence: int) -> PendingEvent:
    return job_event(task_id, job_id, "queued", {"backend_job_id": f"b-{job_id}"}, sequence, now_proto(), "c")


def test_consecutive_events_of_a_task_go_in_one_batch() -> None:
    messages = broker_messages([event(1, 10, 1), event(1, 11, 2), event(2, 20, 5), event(1, 12, 3)])
    assert [m.routing_key for m in messages] == ["task.1.batch", "task.2.job.20", "task.1.job.12"]
    assert messages[0].message_type == event_wire.BATCH_TYPE
    assert messages[0].headers == {"sequence": 1, "last_sequence": 2, "count": 2}
    assert messages[1].message_type == event_wire.EVENT_TYPE and messages[1].headers == {"sequence": 5}


def test_batches_are_bounded() -> None:
    n = event_wire.MAX_BATCH + 1
    messages = broker_messages([event(3, j, j) for j in range(1, n + 1)])
    assert [m.headers.get("count", 1) for m in messages] == [event_wire.MAX_BATCH, 1]
    assert broker_messages([]) == []
