"""Each bug the fuzzers found, kept as a plain example at the function that was fixed (the fuzz tests also
carry them as @example inputs through the real interfaces)."""

from __future__ import annotations

import base64
import json
import math
import time

import pytest

from gateway.events_hub import EventsHub
from gateway.task_feed import is_terminal_event
from gateway.tasks import check_storable, decode_page_token
from gateway.ws import _interval
from services.dispatcher.consumer import parse
from upscaling import grids
from upscaling.errors import InvalidArgument
from upscaling.v1 import jobs_pb2, upscaling_pb2


def scribble(n: int) -> dict:
    """A closed ring whose every edge crosses most others (vertices visited in a scrambled order)."""
    angles = [2 * math.pi * (i * 7919 % n) / n for i in range(n)]
    pts = [[10 + 0.01 * math.cos(a), 45 + 0.01 * math.sin(a)] for a in angles]
    return {"type": "Polygon", "coordinates": [[*pts, pts[0]]]}


@pytest.mark.parametrize("aoi", [
    {"type": "Polygon", "coordinates": [[[10**400, 0], [1, 0], [1, 1], [10**400, 0]]]},  # was OverflowError
    '{"type": "Polygon", "coordinates": ' + "[" * 100_000 + "]" * 100_000 + "}",  # was RecursionError
])
def test_aoi_overflow_and_deep_nesting_are_aoi_errors(aoi: object) -> None:
    with pytest.raises(grids.AoiError):
        grids.parse_aoi(aoi)


def test_self_intersection_scribble_is_refused_quickly_instead_of_exhausting_memory() -> None:
    started = time.monotonic()
    with pytest.raises(grids.AoiError, match="self-intersections"):
        grids.parse_aoi(scribble(20_000))  # make_valid once took 23 GB here and the tiler was OOM-killed
    assert time.monotonic() - started < 10
    bow_tie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    assert "repaired with make_valid" in grids.parse_aoi(bow_tie).warnings[0]  # a few crossings still repaired


@pytest.mark.parametrize("value", ["nul\x00", "\ud800", {"k\x00": 1}, [1, float("nan")], {"a": [float("inf")]}])
def test_values_postgresql_cannot_store_are_invalid_arguments(value: object) -> None:
    with pytest.raises(InvalidArgument):
        check_storable(value, "request")
    check_storable({"title": "Ω≈ç√ 😀", "n": 10**30, "x": [1.5, None, True]}, "request")


@pytest.mark.parametrize("text", ["t:99999999999999999999999", "t:0", "t:-1", "t:\u0661"])
def test_out_of_range_page_tokens_are_invalid_arguments(text: str) -> None:
    token = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    with pytest.raises(InvalidArgument):
        decode_page_token(token)


@pytest.mark.parametrize("raw", ["1e300", "86401", "nan", "-1", "0"])
def test_websocket_intervals_out_of_range_are_invalid(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        _interval(raw)
    assert _interval("86400") == 86400


def test_error_messages_quoting_lone_surrogates_can_be_sent() -> None:
    error = InvalidArgument(f"bad key {json.loads(chr(34) + chr(92) + 'udfff' + chr(34))!r}")
    assert error.message.encode("utf-8") and "udfff" in error.message


def test_job_messages_of_another_content_type_are_poison() -> None:
    body = jobs_pb2.SubmitJobMessage(job_id=7).SerializeToString()
    assert parse(body, "application/x-protobuf").job_id == 7 and parse(body, None).job_id == 7
    with pytest.raises(ValueError, match="content type"):
        parse(body, "application/json")
    with pytest.raises(ValueError):
        parse(json.dumps({"job_id": 7}).encode())


def test_events_with_unknown_status_values_are_not_terminal() -> None:
    event = upscaling_pb2.WatchTaskResponse(task_event=jobs_pb2.TaskStatusEvent(task_id=1, status=99))
    assert is_terminal_event(event) is False  # was ValueError, ending the watch stream with INTERNAL


async def test_events_not_matching_their_routing_key_are_dropped() -> None:
    class Message:
        def __init__(self, body: bytes, routing_key: str) -> None:
            self.body, self.routing_key, self.type = body, routing_key, None

    task = {"id": 12, "last_sequence": 0, "status": "created"}

    async def load(task_id: int) -> tuple[dict[str, object], list[dict[str, object]]]:
        return task, []

    hub = EventsHub(None, None, load=load)  # only the dispatching part is used
    event = upscaling_pb2.WatchTaskResponse(sequence=1, task_event=jobs_pb2.TaskStatusEvent(task_id=12, status=2))
    async with hub.watch(12) as feed:
        for key in ("task.1", "task.123", "task.x", ""):
            await hub._on_message(Message(event.SerializeToString(), key))  # type: ignore[arg-type]
        assert feed.last == 0
        await hub._on_message(Message(event.SerializeToString(), "task.12"))  # type: ignore[arg-type]
        assert feed.last == 1 and feed.state is not None and feed.state.status == "queued"
