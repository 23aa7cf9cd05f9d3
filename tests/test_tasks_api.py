"""The public task API (HTTP and gRPC) of a real gateway process: validation, storage, outbox relay,
cancel, retry, standalone jobs, listings, results, parameters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import grpc
import pytest
import requests

from tests import tasks_support
from tests.support import tiles, wait_until
from tests.tasks_support import MAX_VALUES, TILE, Gateway, change_job, create, read_submit_messages
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

# fixtures of the support module
tasks_gateway = tasks_support.tasks_gateway
tdb = tasks_support.tdb
events_exchange = tasks_support.events_exchange


@pytest.fixture(scope="module")
def stub(tasks_gateway: Gateway) -> Any:
    channel = grpc.insecure_channel(tasks_gateway.grpc)
    yield upscaling_pb2_grpc.UpscalingServiceStub(channel)
    channel.close()


def post(gw: Gateway, path: str, body: Any) -> requests.Response:
    return requests.post(f"{gw.http}{path}", json=body, timeout=30)


def get(gw: Gateway, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{gw.http}{path}", params=params, timeout=30)


def delete(gw: Gateway, path: str) -> requests.Response:
    return requests.delete(f"{gw.http}{path}", timeout=30)


def to_proto(body: dict[str, Any]) -> upscaling_pb2.CreateTaskRequest:
    service = body.get("service") or {}
    return upscaling_pb2.CreateTaskRequest(
        title=body.get("title", ""), label=body.get("label", ""),
        service=common_pb2.ServiceRef(endpoint=service.get("endpoint", ""),
                                      application=service.get("application", "")),
        parameters_json=json.dumps(body.get("parameters", {})), format=body.get("format") or "",
        dimension=upscaling_pb2.Dimension(name=body["dimension"]["name"],
                                          values_json=[json.dumps(v) for v in body["dimension"]["values"]]))


# ---- creation -----------------------------------------------------------------------------------------------

async def test_create_task_stores_rows_and_relays_job_messages(tasks_gateway: Gateway, tdb) -> None:
    gw = tasks_gateway
    body = gw.task_body(3)
    reply = post(gw, "/upscale_tasks", body)
    assert reply.status_code == 201, reply.text
    created = reply.json()
    assert set(created) == {"id", "title", "label", "status"}
    assert created["status"] == "created" and created["label"] == "openeo"
    task_id = created["id"]

    task = await tdb.fetchrow("SELECT * FROM upscale_tasks WHERE id = $1", task_id)
    assert task["process_id"] == "wind_turbine_detection" and task["job_count"] == 3
    assert task["format"] == "gtiff" and task["max_attempts"] == 1 and task["parameters"] == {"year": 2024}
    jobs = await tdb.fetch("SELECT * FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)
    assert [j["seq"] for j in jobs] == [1, 2, 3]
    for job, tile in zip(jobs, body["dimension"]["values"], strict=True):
        assert job["title"] == f"Wind Turbine Detection - Processing Job {job['seq']}"
        assert job["parameters"] == {"year": 2024, "spatial_extent": tile}
        extent = job["submit_arguments"]["spatial_extent"]
        assert job["submit_arguments"]["year"] == "2024"
        assert extent == {"west": tile["coordinates"][0][0][0], "south": 47.0,
                          "east": tile["coordinates"][0][1][0], "north": 47.04}
        assert job["tag"].startswith("uj-") and job["backend"] == gw.backend.endpoint and job["status"] == "created"

    async def all_sent() -> bool:
        rows = await tdb.fetch("SELECT sent_at FROM outbox WHERE job_id = ANY($1::bigint[])", [j["id"] for j in jobs])
        return len(rows) == 3 and all(r["sent_at"] for r in rows)

    await wait_until(all_sent, limit_s=15, what="outbox rows sent")
    found = await read_submit_messages(gw, task_id, 3)
    assert len(found) == 3
    by_job = {m.job_id: (m, raw) for m, raw in found}
    for job in jobs:
        message, raw = by_job[job["id"]]
        assert raw.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.task_id == task_id and message.tag == job["tag"] and message.attempt == 1
        assert message.process_id == "wind_turbine_detection" and message.format == "gtiff"
        assert message.title == job["title"]
        assert message.service.endpoint == gw.backend.endpoint
        assert message.service.application == gw.backend.application
        assert json.loads(message.parameters_json) == job["submit_arguments"]
        assert message.correlation_id


def test_get_task_body(tasks_gateway: Gateway) -> None:
    gw = tasks_gateway
    task_id = create(gw, 2)
    body = get(gw, f"/upscale_tasks/{task_id}").json()
    assert body["id"] == task_id and body["status"] == "created"
    assert body["service"] == {"endpoint": gw.backend.endpoint, "application": gw.backend.application}
    assert body["created"] and body["updated"]
    assert body["job_counts"]["created"] == 2 and body["job_counts"]["finished"] == 0
    assert body["progress"] == 0.0
    assert [j["title"] for j in body["jobs"]] == [f"Wind Turbine Detection - Processing Job {n}" for n in (1, 2)]
    for job, tile in zip(body["jobs"], tiles(2), strict=True):
        assert set(job) >= {"id", "title", "label", "status", "service", "parameters"}
        assert job["parameters"]["spatial_extent"] == tile and job["parameters"]["year"] == 2024


def test_grpc_create_and_get(tasks_gateway: Gateway, stub: Any) -> None:
    gw = tasks_gateway
    reply = stub.CreateTask(to_proto(gw.task_body(2, format="geojson")), timeout=30)
    assert reply.task.id and reply.task.status == common_pb2.TASK_STATUS_CREATED
    task = stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=reply.task.id), timeout=30).task
    assert task.format == "geojson" and len(task.jobs) == 2 and task.job_counts["created"] == 2
    assert [json.loads(v) for v in task.dimension.values_json] == tiles(2)
    assert json.loads(task.jobs[0].parameters_json)["spatial_extent"] == tiles(2)[0]


def _bad_cases(gw: Gateway) -> list[tuple[str, dict[str, Any], str]]:
    b = gw.task_body
    service = {"endpoint": gw.backend.endpoint, "application": gw.backend.application}
    return [
        ("ogc label", b(label="ogc_api_process"), "does not match service.endpoint"),
        ("other label", b(label="wps"), "label must be one of openeo, ogc_api_process"),
        ("unknown endpoint", b(service={**service, "endpoint": "https://openeo.example.org"}),
         gw.backend.endpoint),
        ("udp missing", b(service={**service, "application": gw.backend.udp("nope")}), gw.backend.udp("nope")),
        ("unknown parameter", b(parameters={"year": 2024, "colour": "red"}), "unknown parameter 'colour'"),
        ("missing required", b(service={**service, "application": gw.backend.udp("max_ndvi")},
                               dimension={"name": "bbox", "values": [TILE]}, parameters={}),
         "missing required parameter 'temporal_extent'"),
        ("wrong type", b(parameters={"year": [2024]}), "parameter 'year'"),
        ("wrong shape", b(dimension={"name": "spatial_extent", "values": ["Austria"]}), "dimension.values[0]"),
        ("dimension not a parameter", b(dimension={"name": "tile", "values": [TILE]}), "dimension.name 'tile'"),
        ("no values", b(dimension={"name": "spatial_extent", "values": []}), "at least one value"),
        ("bad format", b(format="png"), "format must be one of"),
        ("dimension also in parameters", b(parameters={"spatial_extent": TILE}), "is the dimension"),
    ]


def test_validation_http_and_grpc(tasks_gateway: Gateway, stub: Any) -> None:
    gw = tasks_gateway
    for name, body, expected in _bad_cases(gw):
        reply = post(gw, "/upscale_tasks", body)
        assert reply.status_code == 422, (name, reply.text)
        err = reply.json()
        assert err["error_code"] == "VALIDATION_ERROR" and err["status"] == "error", name
        assert expected in err["message"], (name, err["message"])
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateTask(to_proto(body), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert expected in info.value.details(), (name, info.value.details())


def test_too_many_dimension_values_is_a_limit(tasks_gateway: Gateway, stub: Any) -> None:
    gw = tasks_gateway
    body = gw.task_body(MAX_VALUES + 1)
    reply = post(gw, "/upscale_tasks", body)
    assert reply.status_code == 413, reply.text
    assert reply.json()["error_code"] == "TOO_MANY_DIMENSION_VALUES"
    assert f"limit MAX_DIMENSION_VALUES={MAX_VALUES} exceeded" in reply.json()["message"]
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateTask(to_proto(body), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"limit MAX_DIMENSION_VALUES={MAX_VALUES} exceeded" in info.value.details()


def test_validation_http_only_fields(tasks_gateway: Gateway) -> None:
    gw = tasks_gateway
    for attempts in (0, 6):
        reply = post(gw, "/upscale_tasks", gw.task_body(max_attempts=attempts))
        assert reply.status_code == 422 and "max_attempts" in reply.json()["message"]
    reply = post(gw, "/upscale_tasks", gw.task_body(max_attempts=3))
    assert reply.status_code == 201
    # a bbox object is accepted for a bounding-box parameter, and the string parameter keeps its string
    bbox = {"west": 14.0, "south": 47.0, "east": 14.1, "north": 47.1}
    reply = post(gw, "/upscale_tasks", gw.task_body(parameters={"year": "2023"},
                                                    dimension={"name": "spatial_extent", "values": [bbox]}))
    assert reply.status_code == 201, reply.text


def test_not_found_both_interfaces(tasks_gateway: Gateway, stub: Any) -> None:
    gw = tasks_gateway
    missing = 987654321
    for method, path in (("GET", f"/upscale_tasks/{missing}"), ("POST", f"/upscale_tasks/{missing}/cancel"),
                         ("POST", f"/upscale_tasks/{missing}/retry"), ("GET", f"/upscale_tasks/{missing}/results"),
                         ("GET", f"/unit_jobs/{missing}"), ("GET", f"/unit_jobs/{missing}/results"),
                         ("DELETE", f"/unit_jobs/{missing}")):
        reply = requests.request(method, f"{gw.http}{path}", timeout=30)
        assert reply.status_code == 404, (path, reply.text)
        assert reply.json()["error_code"] in ("TASK_NOT_FOUND", "JOB_NOT_FOUND")
    calls = [(stub.GetTask, upscaling_pb2.GetTaskRequest(task_id=missing)),
             (stub.CancelTask, upscaling_pb2.CancelTaskRequest(task_id=missing)),
             (stub.RetryFailedJobs, upscaling_pb2.RetryFailedJobsRequest(task_id=missing)),
             (stub.GetTaskResults, upscaling_pb2.GetTaskResultsRequest(task_id=missing)),
             (stub.GetJobResults, upscaling_pb2.GetJobResultsRequest(job_id=missing))]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        list(stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=missing), timeout=30))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# ---- cancel / retry -----------------------------------------------------------------------------------------

async def test_cancel_before_submission(tasks_gateway: Gateway, tdb, stub: Any) -> None:
    gw = tasks_gateway
    task_id = create(gw, 3)
    reply = post(gw, f"/upscale_tasks/{task_id}/cancel", None)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "canceled" and body["job_counts"]["canceled"] == 3
    assert {j["status"] for j in body["jobs"]} == {"canceled"}
    task = await tdb.fetchrow("SELECT * FROM upscale_tasks WHERE id = $1", task_id)
    assert task["cancel_requested"] and task["status"] == "canceled"
    jobs = await tdb.fetch("SELECT cancel_requested, status FROM unit_jobs WHERE task_id = $1", task_id)
    assert all(j["cancel_requested"] and j["status"] == "canceled" for j in jobs)
    events = await tdb.fetch("SELECT sequence, job_id FROM task_events WHERE task_id = $1 ORDER BY sequence",
                             task_id)
    assert [e["sequence"] for e in events] == [1, 2, 3, 4] and events[-1]["job_id"] is None
    assert task["last_sequence"] == 4
    assert post(gw, f"/upscale_tasks/{task_id}/cancel", None).status_code == 409
    with pytest.raises(grpc.RpcError) as info:
        stub.CancelTask(upscaling_pb2.CancelTaskRequest(task_id=task_id), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_partly_submitted_via_grpc(tasks_gateway: Gateway, tdb, events_exchange, stub: Any) -> None:
    gw = tasks_gateway
    task_id = create(gw, 2)
    jobs = await tdb.fetch("SELECT id FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)
    await change_job(tdb, events_exchange, jobs[0]["id"], status="queued", backend_job_id="b-1")
    task = stub.CancelTask(upscaling_pb2.CancelTaskRequest(task_id=task_id), timeout=30).task
    statuses = {j.id: j.status for j in task.jobs}
    assert statuses[jobs[0]["id"]] == common_pb2.JOB_STATUS_QUEUED  # the monitor stops it on the backend
    assert statuses[jobs[1]["id"]] == common_pb2.JOB_STATUS_CANCELED
    assert task.status == common_pb2.TASK_STATUS_QUEUED
    row = await tdb.fetchrow("SELECT cancel_requested FROM unit_jobs WHERE id = $1", jobs[0]["id"])
    assert row["cancel_requested"]
    await change_job(tdb, events_exchange, jobs[0]["id"], status="canceled")
    assert get(gw, f"/upscale_tasks/{task_id}").json()["status"] == "canceled"


async def test_retry_failed_jobs(tasks_gateway: Gateway, tdb, events_exchange, stub: Any) -> None:
    gw = tasks_gateway
    task_id = create(gw, 3)
    await read_submit_messages(gw, task_id, 3)
    jobs = await tdb.fetch("SELECT id, tag FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)
    for job, status in zip(jobs, ("failed", "failed", "finished"), strict=True):
        await change_job(tdb, events_exchange, job["id"], status="queued", backend_job_id=f"b-{job['id']}")
        await change_job(tdb, events_exchange, job["id"], status=status, message="boom" if status == "failed" else None)
    assert get(gw, f"/upscale_tasks/{task_id}").json()["status"] == "finished"

    reply = post(gw, f"/upscale_tasks/{task_id}/retry", None)
    assert reply.status_code == 200, reply.text
    assert reply.json()["retried"] == 2 and reply.json()["status"] == "queued"
    rows = await tdb.fetch("SELECT * FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)
    for old, new in zip(jobs[:2], rows[:2], strict=True):
        assert new["status"] == "created" and new["tag"] != old["tag"] and new["backend_job_id"] is None
        assert new["message"] is None and new["submitted_at"] is None
        outbox = await tdb.fetch("SELECT * FROM outbox WHERE job_id = $1 ORDER BY id", new["id"])
        assert len(outbox) == 2
    assert rows[2]["status"] == "finished"
    found = await read_submit_messages(gw, task_id, 2)
    assert {m.job_id for m, _ in found} == {jobs[0]["id"], jobs[1]["id"]}
    assert {m.tag for m, _ in found} == {rows[0]["tag"], rows[1]["tag"]}
    again = stub.RetryFailedJobs(upscaling_pb2.RetryFailedJobsRequest(task_id=task_id), timeout=30)
    assert again.retried == 0


# ---- standalone jobs, results, listings, parameters ---------------------------------------------------------

async def test_standalone_unit_job(tasks_gateway: Gateway, tdb, events_exchange) -> None:
    gw = tasks_gateway
    body = {"title": "One job", "label": "openeo",
            "service": {"endpoint": gw.backend.endpoint, "application": gw.backend.application},
            "parameters": {"spatial_extent": TILE, "year": 2024}}
    reply = post(gw, "/unit_jobs", body)
    assert reply.status_code == 201, reply.text
    job_id = reply.json()["id"]
    assert reply.json()["status"] == "created"
    row = await tdb.fetchrow("SELECT * FROM unit_jobs WHERE id = $1", job_id)
    assert row["task_id"] is None and row["submit_arguments"]["year"] == "2024"
    assert await tdb.fetchval("SELECT count(*) FROM outbox WHERE job_id = $1", job_id) == 1
    job = get(gw, f"/unit_jobs/{job_id}").json()
    assert job["parameters"] == body["parameters"] and job["created"]
    results = get(gw, f"/unit_jobs/{job_id}/results")
    assert results.status_code == 409 and results.json()["error_code"] == "JOB_NOT_FINISHED"
    stac = {"type": "Collection", "assets": {"openEO.tif": {"href": "http://x/openEO.tif"}}}
    await change_job(tdb, events_exchange, job_id, status="finished", results=stac)
    assert get(gw, f"/unit_jobs/{job_id}/results").json() == stac
    assert delete(gw, f"/unit_jobs/{job_id}").status_code == 409

    other = post(gw, "/unit_jobs", body).json()["id"]
    reply = delete(gw, f"/unit_jobs/{other}")
    assert reply.status_code == 200 and reply.json()["status"] == "canceled"
    status = get(gw, "/jobs_status", filter="processing").json()
    assert set(status) == {"processing_jobs"} and other in {j["id"] for j in status["processing_jobs"]}
    assert set(get(gw, "/jobs_status").json()) == {"upscaling_tasks", "processing_jobs"}
    assert get(gw, "/jobs_status", filter="nope").status_code == 422


async def test_task_results(tasks_gateway: Gateway, tdb, events_exchange, stub: Any) -> None:
    gw = tasks_gateway
    task_id = create(gw, 2)
    jobs = await tdb.fetch("SELECT id FROM unit_jobs WHERE task_id = $1 ORDER BY seq", task_id)
    stac = {"type": "Collection", "assets": {"openEO.tif": {"href": "http://x/1.tif", "type": "image/tiff"}}}
    await change_job(tdb, events_exchange, jobs[0]["id"], status="finished", results=stac)
    collection = get(gw, f"/upscale_tasks/{task_id}/results").json()
    assert collection["type"] == "Collection" and collection["upscaling:items"] == 1
    assert [link["href"] for link in collection["links"] if link["rel"] == "item"] == [
        f"{gw.http}/upscale_tasks/{task_id}/results/items/{jobs[0]['id']}"]
    body = get(gw, f"/upscale_tasks/{task_id}/results/items").json()
    assert body["type"] == "FeatureCollection" and len(body["features"]) == 1
    feature = body["features"][0]
    assert feature["properties"]["upscaling:job_id"] == jobs[0]["id"]
    assert feature["properties"]["upscaling:dimension"] == {"name": "spatial_extent", "value": tiles(2)[0]}
    assert feature["assets"] == stac["assets"] and feature["geometry"] == tiles(2)[0]
    assert get(gw, f"/upscale_tasks/{task_id}/results/items/{jobs[0]['id']}").json() == feature
    missing = get(gw, f"/upscale_tasks/{task_id}/results/items/{jobs[1]['id']}")
    assert missing.status_code == 404 and missing.json()["error_code"] == "JOB_NOT_FOUND"
    reply = stub.GetTaskResults(upscaling_pb2.GetTaskResultsRequest(task_id=task_id), timeout=30)
    grpc_items = json.loads(reply.stac_json)["features"]
    assert grpc_items == [{**f, "links": []} for f in body["features"] if f.pop("collection")]
    assert json.loads(reply.collection_json)["extent"] == collection["extent"]
    assert json.loads(stub.GetJobResults(upscaling_pb2.GetJobResultsRequest(job_id=jobs[0]["id"]),
                                         timeout=30).stac_json) == stac
    with pytest.raises(grpc.RpcError) as info:
        stub.GetJobResults(upscaling_pb2.GetJobResultsRequest(job_id=jobs[1]["id"]), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_list_tasks_pagination_and_filter(tasks_gateway: Gateway, stub: Any) -> None:
    gw = tasks_gateway
    ids = [create(gw, 1) for _ in range(5)]
    seen: list[int] = []
    token = ""
    while True:
        page = get(gw, "/upscale_tasks", page_size=2, page_token=token).json()
        assert len(page["tasks"]) <= 2
        seen += [t["id"] for t in page["tasks"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == sorted(seen, reverse=True) and set(ids) <= set(seen) and len(seen) == len(set(seen))
    created = get(gw, "/upscale_tasks", status="created", page_size=500).json()["tasks"]
    assert {t["status"] for t in created} == {"created"} and set(ids) <= {t["id"] for t in created}
    assert created[0]["job_counts"]["created"] >= 1
    assert get(gw, "/upscale_tasks", status="bogus").status_code == 422
    assert get(gw, "/upscale_tasks", page_token="!!").status_code == 422

    grpc_seen: list[int] = []
    token = ""
    while True:
        reply = stub.ListTasks(upscaling_pb2.ListTasksRequest(page_size=3, page_token=token,
                                                              statuses=[common_pb2.TASK_STATUS_CREATED]), timeout=30)
        grpc_seen += [t.id for t in reply.tasks]
        token = reply.next_page_token
        if not token:
            break
    assert set(ids) <= set(grpc_seen) and len(grpc_seen) == len(set(grpc_seen))


def test_params_and_describe_service(tasks_gateway: Gateway, stub: Any) -> None:
    gw = tasks_gateway
    service = {"endpoint": gw.backend.endpoint, "application": gw.backend.application}
    params = post(gw, "/params", {"label": "openeo", "service": service}).json()
    by_name = {p["name"]: p for p in params}
    assert set(by_name) == {"spatial_extent", "year"}
    assert by_name["spatial_extent"]["type"] == "bounding-box" and not by_name["spatial_extent"]["optional"]
    assert by_name["year"] == {**by_name["year"], "type": "string", "optional": True, "default": "2024"}
    assert set(params[0]) == {"name", "type", "optional", "description", "default", "options"}
    reply = stub.DescribeService(upscaling_pb2.DescribeServiceRequest(
        label="openeo", service=common_pb2.ServiceRef(**service)), timeout=30)
    assert [p.name for p in reply.parameters] == [p["name"] for p in params]
    assert post(gw, "/params", {"label": "ogc_api_process", "service": service}).status_code == 422


async def test_large_task_is_stored_quickly(tasks_gateway: Gateway, tdb) -> None:
    gw = tasks_gateway
    start = asyncio.get_running_loop().time()
    task_id = create(gw, MAX_VALUES)
    elapsed = asyncio.get_running_loop().time() - start
    assert elapsed < 5
    assert await tdb.fetchval("SELECT count(*) FROM outbox o JOIN unit_jobs j ON j.id = o.job_id"
                              " WHERE j.task_id = $1", task_id) == MAX_VALUES
