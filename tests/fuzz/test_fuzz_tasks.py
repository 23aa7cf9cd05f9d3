"""Hostile task requests through `POST /upscale_tasks` and gRPC `CreateTask` of the real gateway: each is
created (task, jobs and outbox rows stored) or rejected with a clean 4xx/INVALID_ARGUMENT with nothing stored
at all; never a 5xx/INTERNAL. Created tasks run to the end (or are canceled by the stack's final check)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import counts
from tests.fuzz.stack import MAX_DIMENSION_VALUES, FuzzStack
from tests.fuzz.strategies import NUMBERS, ODD_TEXT, aois, json_values, urls
from tests.support import tiles
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

ENDPOINT, APPLICATION = "<endpoint>", "<application>"  # replaced by the stack's real URLs

# Regression examples: requests that once answered 500/INTERNAL.
NUL_TITLE = [("title", "nul\x00title")]
SURROGATE_TITLE = [("title", "\ud800")]
NAN_PARAMETER = [("parameters", {"year": 2024, "spatial_extent": None, "x": float("nan")})]
NUL_VALUE = [("dimension.values", [{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]],
                                    "name": "\x00"}])]
INF_VALUE = [("dimension.values", [{"west": 0, "south": 0, "east": float("inf"), "north": 1}])]

FIELDS = ["title", "label", "service", "service.endpoint", "service.application", "service.namespace",
          "parameters", "parameters.year", "format", "dimension", "dimension.name", "dimension.values",
          "max_attempts", "extra"]


def _value_for(field: str) -> st.SearchStrategy[Any]:
    if field == "service.endpoint":
        return urls(ENDPOINT) | json_values(3)
    if field == "service.application":
        return urls(APPLICATION) | json_values(3)
    if field == "dimension.name":
        return st.sampled_from(["spatial_extent", "year", "", "unknown", "SPATIAL_EXTENT"]) | ODD_TEXT
    if field == "dimension.values":
        return st.one_of(
            st.lists(aois(), max_size=3), st.lists(json_values(4), max_size=3), json_values(4),
            st.integers(0, 3).map(lambda n: tiles(n)), st.just(tiles(MAX_DIMENSION_VALUES + 1)),
            st.lists(st.fixed_dictionaries({"west": NUMBERS, "south": NUMBERS, "east": NUMBERS, "north": NUMBERS}),
                     min_size=1, max_size=2))
    if field == "max_attempts":
        return st.sampled_from([0, 1, 5, 6, -1, 2**31, 2**63, 10**30, True, 1.0, "3"]) | json_values(3)
    if field in ("format", "label"):
        return st.sampled_from(["gtiff", "GTiff", "netcdf", "json", "geojson", "openeo", "ogc_api_process", "",
                                None]) | ODD_TEXT
    if field == "parameters.year":
        return st.sampled_from([2024, "2024", 2024.0, 2024.5, "twenty", None, [], {}]) | json_values(3)
    return json_values()


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """1-3 changes to a valid request: (dotted field, new value or the string '<drop>')."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS))
        value = "<drop>" if draw(st.integers(0, 4)) == 0 else draw(_value_for(field))
        out.append((field, value))
    return out


def _replace_urls(value: Any, stack: FuzzStack) -> Any:
    if isinstance(value, str):
        return value.replace(ENDPOINT, stack.backend.endpoint).replace(APPLICATION, stack.backend.application)
    return value


def mutated_body(stack: FuzzStack, changes: list[tuple[str, Any]]) -> dict[str, Any]:
    body = stack.task_body(2)
    for field, value in changes:
        value = _replace_urls(copy.deepcopy(value), stack)
        target: Any = body
        *path, last = field.split(".")
        for key in path:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        if value == "<drop>":
            target.pop(last, None)
        else:
            target[last] = value
    return body


def check_outcome(stack: FuzzStack, before: tuple[int, int, int], created_id: int | None, what: Any) -> None:
    """Rejected: no row of any kind written; created: exactly one task with its jobs and outbox rows."""
    after = stack.task_count()
    if created_id is None:
        counts.outcome("task requests rejected, nothing stored")
        assert after == before, f"a rejected request stored rows {before} -> {after}: {str(what)[:300]}"
        return
    stack.created_tasks.add(created_id)
    counts.outcome("tasks created by fuzzed requests")
    task = stack.db.run(stack.db.conn.fetchrow("SELECT * FROM upscale_tasks WHERE id = $1", created_id))
    assert task is not None and after[0] == before[0] + 1
    assert after[1] - before[1] == task["job_count"] > 0 and after[2] - before[2] == task["job_count"]


@pytest.fixture(scope="module")
def stub(fuzz_stack: FuzzStack) -> Iterator[upscaling_pb2_grpc.UpscalingServiceStub]:
    with grpc.insecure_channel(fuzz_stack.gateway_grpc) as channel:
        yield upscaling_pb2_grpc.UpscalingServiceStub(channel)


def post_task(stack: FuzzStack, body: Any) -> requests.Response:
    counts.record("HTTP POST /upscale_tasks")
    return requests.post(f"{stack.http}/upscale_tasks", data=json.dumps(body),
                         headers={"Content-Type": "application/json"}, timeout=60)


@given(changes=mutations())
@example(changes=NUL_TITLE)
@example(changes=SURROGATE_TITLE)
@example(changes=NAN_PARAMETER)
@example(changes=NUL_VALUE)
@example(changes=INF_VALUE)
@example(changes=[("parameters.year", "2024")])
def test_http_create_task_hostile_bodies(fuzz_stack: FuzzStack, changes: list[tuple[str, Any]]) -> None:
    body = mutated_body(fuzz_stack, changes)
    before = fuzz_stack.task_count()
    reply = post_task(fuzz_stack, body)
    assert reply.status_code in (201, 400, 404, 409, 413, 422), f"{reply.status_code} {reply.text[:500]}"
    assert reply.headers["content-type"].startswith("application/json")
    if reply.status_code != 201:
        answer = reply.json()
        assert answer["status"] == "error" and answer["message"], answer
    check_outcome(fuzz_stack, before, reply.json()["id"] if reply.status_code == 201 else None, changes)


def _proto_text(value: Any) -> str:
    """A protobuf-safe string of any value (protobuf strings are valid UTF-8)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "replace").decode("utf-8")


def to_request(body: dict[str, Any], raw_values: list[str] | None) -> upscaling_pb2.CreateTaskRequest:
    def text(key: str, source: Any = body) -> str:
        value = source.get(key, "") if isinstance(source, dict) else ""
        return _proto_text(value) if value is not None else ""

    service = body.get("service")
    dimension = body.get("dimension") if isinstance(body.get("dimension"), dict) else {}
    values = dimension.get("values", [])
    values_json = raw_values if raw_values is not None else [
        _proto_text(json.dumps(v)) for v in (values if isinstance(values, list) else [values])]
    attempts = body.get("max_attempts")
    return upscaling_pb2.CreateTaskRequest(
        title=text("title"), label=text("label"),
        service=common_pb2.ServiceRef(endpoint=text("endpoint", service), application=text("application", service),
                                      namespace=text("namespace", service)),
        parameters_json=_proto_text(json.dumps(body["parameters"])) if "parameters" in body else "",
        format=text("format"), dimension=upscaling_pb2.Dimension(name=text("name", dimension), values_json=values_json),
        max_attempts=attempts if type(attempts) is int and -(2**31) <= attempts < 2**31 else 0)


@given(changes=mutations(),
       raw_values=st.none() | st.lists(st.text(max_size=40) | st.sampled_from(["", "NaN", "[", "\"\\u0000\"",
                                                                                "{\"west\": 1e999}"]), max_size=3))
@example(changes=NUL_TITLE, raw_values=None)
@example(changes=NAN_PARAMETER, raw_values=None)
@example(changes=[], raw_values=['{"type": "Polygon", "\\udfff": 1}'])  # a surrogate key
@example(changes=[("parameters", {"\udfff": "\x00"})], raw_values=None)  # once: the client waited until its deadline
@example(changes=[], raw_values=['{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]], '
                                 '"x": "\\u0000"}'])
def test_grpc_create_task_hostile_requests(fuzz_stack: FuzzStack, stub: Any, changes: list[tuple[str, Any]],
                                           raw_values: list[str] | None) -> None:
    request = to_request(mutated_body(fuzz_stack, changes), raw_values)
    before = fuzz_stack.task_count()
    counts.record("gRPC CreateTask")
    try:
        reply = stub.CreateTask(request, timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              grpc.StatusCode.NOT_FOUND), f"{exc.code()}: {exc.details()}"
        assert exc.details()
        check_outcome(fuzz_stack, before, None, request)
        return
    check_outcome(fuzz_stack, before, reply.task.id, request)


TOKENS = ["dDo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ", "dDotMQ", "dDox", "dDox77yR"]  # t:9999..., t:-1, t:1, t:1 + fullwidth 1


@given(statuses=st.lists(st.integers(-(2**31), 2**31 - 1) | st.sampled_from(list(range(8))), max_size=3),
       page_size=st.integers(-(2**31), 2**31 - 1), page_token=ODD_TEXT | st.sampled_from(TOKENS))
@example(statuses=[99], page_size=0, page_token="")
@example(statuses=[], page_size=0, page_token="dDo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ")  # "t:99999999999999999999999"
def test_grpc_list_tasks_hostile_requests(stub: Any, statuses: list[int], page_size: int, page_token: str) -> None:
    counts.record("gRPC ListTasks")
    try:
        stub.ListTasks(upscaling_pb2.ListTasksRequest(statuses=statuses, page_size=page_size,
                                                      page_token=_proto_text(page_token)), timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code()}: {exc.details()}"


@given(task_id=st.integers(-(2**63), 2**63 - 1), after=st.integers(-(2**63), 2**63 - 1),
       method=st.sampled_from(["GetTask", "CancelTask", "RetryFailedJobs", "GetTaskResults", "GetJobResults",
                               "WatchTask", "WatchTaskBatches"]))
def test_grpc_task_ids_hostile(stub: Any, task_id: int, after: int, method: str) -> None:
    counts.record("gRPC task/job id methods")
    try:
        if method.startswith("WatchTask"):
            request_type = getattr(upscaling_pb2, f"{method}Request")
            for _ in getattr(stub, method)(request_type(task_id=task_id, after_sequence=after), timeout=5):
                break
        elif method == "GetJobResults":
            stub.GetJobResults(upscaling_pb2.GetJobResultsRequest(job_id=task_id), timeout=30)
        else:
            request_type = getattr(upscaling_pb2, f"{method}Request")
            getattr(stub, method)(request_type(task_id=task_id), timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                              grpc.StatusCode.FAILED_PRECONDITION), f"{exc.code()}: {exc.details()}"
