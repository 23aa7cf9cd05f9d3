"""Tasks on an OGC API - Processes backend (`label: ogc_api_process`) end to end against a real server: pygeoapi
(`python -m local_ogc`) with its `geometry-statistics` process, behind a real gateway, dispatcher and monitor."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from shapely.geometry import shape
from websockets.sync.client import connect

from tests.full_stack import AOI
from tests.ogc_support import PROCESS, TAG_INPUT, AnswerDroppingProxy, LocalOGC, OgcStack, ogc_stack
from upscaling.backends import parse_backend
from upscaling.openeo_backend import jobs as backend_jobs
from upscaling.openeo_backend.errors import BackendPermanentError
from upscaling.openeo_backend.jobs import tag_marker
from upscaling.v1 import common_pb2, upscaling_pb2, upscaling_pb2_grpc

TERMINAL = {"finished", "failed", "canceled"}
# A configured openEO backend nobody calls (it has no jobs): the label check needs one of each platform.
OPENEO_ENDPOINT = "http://127.0.0.1:9/openeo/1.2"


@pytest.fixture(scope="module")
def ogc() -> Iterator[LocalOGC]:
    server = LocalOGC(run_seconds=3.0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy(ogc: LocalOGC) -> Iterator[AnswerDroppingProxy]:
    running = AnswerDroppingProxy(ogc.url)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def ogc_env(infra: Any, service_env: dict[str, str], stack: Any, ogc: LocalOGC, proxy: AnswerDroppingProxy,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[OgcStack]:
    """The stack, whose services reach the OGC server through `proxy` (clients download from the server)."""
    logs: Path = tmp_path_factory.mktemp("ogc-logs")
    with ogc_stack(infra, service_env, stack.tiler_address, logs, ogc,
                   extra_backends=[{"endpoint": OPENEO_ENDPOINT}], via=proxy.url) as running:
        yield running


def poll(check: Callable[[], Any], what: str, limit_s: float = 60.0, stack: OgcStack | None = None) -> Any:
    """Wait until `check()` returns something truthy; fail with `what` (and the stack's logs) after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{stack.logs()}" if stack else ""))


def service(s: OgcStack, application: str | None = None) -> dict[str, str]:
    return {"endpoint": s.ogc.url, "application": application or s.ogc.process_url}


def tiles(s: OgcStack, n: int) -> list[dict[str, Any]]:
    reply = requests.post(f"{s.http}/tiles", json={"aoi": AOI, "grid": "5x5km"}, timeout=60)
    assert reply.status_code == 201, reply.text
    return list(reply.json()["geometries"][:n])


def unit_job(s: OgcStack, parameters: dict[str, Any]) -> int:
    reply = requests.post(f"{s.http}/unit_jobs", json={"title": "ogc job", "label": "ogc_api_process",
                                                       "service": service(s), "parameters": parameters}, timeout=30)
    assert reply.status_code == 201, reply.text
    return int(reply.json()["id"])


def job_of(s: OgcStack, job_id: int) -> dict[str, Any]:
    reply = requests.get(f"{s.http}/unit_jobs/{job_id}", timeout=30)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _watch_ws(s: OgcStack, task_id: int, seen: list[tuple[str, str]]) -> None:
    """Record (job status, task status) from every WebSocket snapshot until the task is terminal."""
    with connect(f"{s.http.replace('http', 'ws', 1)}/ws/upscale_tasks/{task_id}?interval=0.2",
                 open_timeout=30) as ws:
        while True:
            message = json.loads(ws.recv(timeout=90))
            if message["type"] != "status":
                continue
            data = message["data"]
            seen.extend((job["status"], data["status"]) for job in data["jobs"])
            if data["status"] in TERMINAL:
                return


def _watch_grpc(s: OgcStack, task_id: int, seen: list[int]) -> None:
    """Record every job event's status of WatchTask until the stream ends (after the terminal task event)."""
    with grpc.insecure_channel(s.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        for item in stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=task_id), timeout=90):
            if item.WhichOneof("update") == "job_event":
                seen.append(item.job_event.status)


def test_ogc_task_runs_end_to_end_and_is_watched(ogc_env: OgcStack) -> None:
    s = ogc_env
    values = tiles(s, 3)
    assert len(values) == 3
    body = {"title": "ogc statistics", "label": "ogc_api_process", "service": service(s),
            "parameters": {"year": 2023}, "dimension": {"name": "geometry", "values": values}}
    reply = requests.post(f"{s.http}/upscale_tasks", json=body, timeout=60)
    assert reply.status_code == 201, reply.text
    task_id = reply.json()["id"]
    ws_seen: list[tuple[str, str]] = []
    grpc_seen: list[int] = []
    watchers = [threading.Thread(target=_watch_ws, args=(s, task_id, ws_seen)),
                threading.Thread(target=_watch_grpc, args=(s, task_id, grpc_seen))]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.join(120)
        assert not watcher.is_alive(), s.logs()

    assert ("running", "running") in ws_seen and ("finished", "finished") in ws_seen, ws_seen
    assert common_pb2.JOB_STATUS_RUNNING in grpc_seen and grpc_seen.count(common_pb2.JOB_STATUS_FINISHED) == 3, \
        grpc_seen
    task = requests.get(f"{s.http}/upscale_tasks/{task_id}", timeout=30).json()
    assert task["status"] == "finished" and task["job_counts"]["finished"] == 3, task

    backend_jobs_by_id = {j["jobID"]: j for j in s.ogc.jobs()}
    markers = set()
    for job, tile in zip(task["jobs"], values, strict=True):
        detail = job_of(s, job["id"])
        backend_job = backend_jobs_by_id[detail["backend_job_id"]]
        assert backend_job["status"] == "successful" and backend_job["processID"] == PROCESS
        markers.add(backend_job["parameters"][TAG_INPUT])
        results = requests.get(f"{s.http}/unit_jobs/{job['id']}/results", timeout=30).json()
        asset = results["assets"]["results.json"]
        assert asset["type"] == "application/json" and asset["href"].startswith(s.ogc.url)
        downloaded = requests.get(asset["href"], timeout=30).json()
        assert downloaded == {"statistics": results["upscaling:outputs"]["statistics"]}
        statistics = downloaded["statistics"]
        assert statistics["bounds"] == pytest.approx(list(shape(tile).bounds))
        assert statistics["year"] == 2023 and 0 < statistics["area_km2"] <= 26
    assert len(markers) == 3 and all(m.startswith("[uj-") for m in markers), markers

    items = requests.get(f"{s.http}/upscale_tasks/{task_id}/results/items", timeout=30).json()
    assert [f["assets"]["results.json"]["type"] for f in items["features"]] == ["application/json"] * 3
    assert [f["geometry"]["type"] for f in items["features"]] == ["Polygon"] * 3


def test_cancel_of_a_running_ogc_job_dismisses_it(ogc_env: OgcStack) -> None:
    s = ogc_env
    job_id = unit_job(s, {"geometry": tiles(s, 1)[0]})
    running = poll(lambda: (j := job_of(s, job_id))["status"] == "running" and j, "the job running", stack=s)
    backend_job_id = running["backend_job_id"]
    assert s.ogc.job(backend_job_id).json()["status"] == "running"
    reply = requests.delete(f"{s.http}/unit_jobs/{job_id}", timeout=30)
    assert reply.status_code == 200, reply.text
    poll(lambda: job_of(s, job_id)["status"] == "canceled", "the job canceled", stack=s)
    assert s.ogc.job(backend_job_id).status_code == 404  # pygeoapi deletes a dismissed job


def test_failed_ogc_job_carries_the_servers_message(ogc_env: OgcStack) -> None:
    s = ogc_env
    job_id = unit_job(s, {"geometry": tiles(s, 1)[0], "fail": True})
    failed = poll(lambda: (j := job_of(s, job_id))["status"] in TERMINAL and j, "the job failed", stack=s)
    assert failed["status"] == "failed" and "failed on request" in failed["message"], failed


def test_wrong_label_and_bad_ogc_services_are_rejected(ogc_env: OgcStack) -> None:
    s = ogc_env
    tile = tiles(s, 1)[0]

    def create(label: str, svc: dict[str, str], parameters: dict[str, Any]) -> requests.Response:
        return requests.post(f"{s.http}/unit_jobs", json={"title": "t", "label": label, "service": svc,
                                                          "parameters": parameters}, timeout=30)

    cases = [
        ("openeo", service(s), {"geometry": tile}, "label 'openeo' does not match service.endpoint"),
        ("ogc_api_process", {"endpoint": OPENEO_ENDPOINT, "application": s.ogc.process_url}, {"geometry": tile},
         "use label 'openeo'"),
        ("ogc_api_process", service(s, "http://example.org/processes/x"), {"geometry": tile}, "is not a process of"),
        ("ogc_api_process", service(s, "no-such-process"), {"geometry": tile}, "HTTP 404"),
        ("ogc_api_process", service(s), {}, "missing required parameter 'geometry'"),
        ("ogc_api_process", service(s), {"geometry": "here"}, "parameter 'geometry'"),
        ("ogc_api_process", service(s), {"geometry": tile, "year": "soon"}, "parameter 'year'"),
    ]
    for label, svc, parameters, expected in cases:
        reply = create(label, svc, parameters)
        assert reply.status_code == 422 and expected in reply.json()["message"], (label, svc, reply.text)

    by_id = create("ogc_api_process", service(s, PROCESS), {"geometry": tile, "year": "2022"})
    assert by_id.status_code == 201, by_id.text
    stored = poll(lambda: (j := job_of(s, by_id.json()["id"]))["status"] in TERMINAL and j, "the job done", stack=s)
    assert stored["parameters"]["year"] == "2022" and stored["status"] == "finished"

    params = requests.post(f"{s.http}/params", json={"label": "ogc_api_process", "service": service(s)}, timeout=30)
    assert params.status_code == 200, params.text
    by_name = {p["name"]: p for p in params.json()}
    assert list(by_name) == ["geometry", "year", "fail"]
    assert by_name["geometry"]["type"] == "polygon" and not by_name["geometry"]["optional"]
    assert by_name["year"]["type"] == "integer" and by_name["year"]["optional"] and by_name["year"]["default"] == 2024
    with grpc.insecure_channel(s.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        described = stub.DescribeService(upscaling_pb2.DescribeServiceRequest(
            label="ogc_api_process", service=common_pb2.ServiceRef(application=s.ogc.process_url)), timeout=30)
        assert [p.name for p in described.parameters] == ["geometry", "year", "fail"]
        with pytest.raises(grpc.RpcError) as caught:
            stub.DescribeService(upscaling_pb2.DescribeServiceRequest(
                label="ogc_api_process", service=common_pb2.ServiceRef(application=PROCESS)), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_execution_whose_answer_was_lost_is_found_and_not_run_twice(ogc_env: OgcStack,
                                                                       proxy: AnswerDroppingProxy) -> None:
    s = ogc_env
    before = {j["jobID"] for j in s.ogc.jobs()}
    proxy.armed.set()
    job_id = unit_job(s, {"geometry": tiles(s, 1)[0], "year": 2021})
    finished = poll(lambda: (j := job_of(s, job_id))["status"] in TERMINAL and j, "the job done", stack=s)
    assert proxy.dropped == 1 and finished["status"] == "finished", (finished, s.logs())
    # (other tests' jobs may be submitted meanwhile: only this job's input year 2021 counts)
    new = [j for j in s.ogc.jobs() if j["jobID"] not in before and j["parameters"].get("year") == 2021]
    assert [j["jobID"] for j in new] == [finished["backend_job_id"]], new  # one execution, found by its tag
    assert "found the backend job of an earlier try by its tag" in s.processes[1].log()


def test_a_job_whose_answer_was_lost_is_found_by_its_tag(ogc: LocalOGC) -> None:
    """What the dispatcher does after an execution request lost its answer, against pygeoapi itself."""
    backend = parse_backend(LocalOGC.entry(ogc))
    spec = backend_jobs.JobSpec(process_id=PROCESS, namespace=None, arguments={"geometry": AOI}, title="t",
                                description="lost [uj-lost-1]", tag="uj-lost-1")
    other = backend_jobs.create_job(backend, 10, backend_jobs.JobSpec(**{**spec.__dict__, "tag": "uj-other"}))
    job_id, error = backend_jobs.create_and_start(backend, 10, spec)
    assert error is None and job_id != other
    found = backend_jobs.find_job_by_tag(backend, 10, "uj-lost-1", page_size=1)
    assert found is not None and found[0] == job_id and found[1] in ("queued", "running", "finished")
    assert backend_jobs.find_job_by_tag(backend, 10, "uj-never", page_size=1) is None
    listing = backend_jobs.list_jobs(backend, 10, 1, {job_id, other})
    assert set(listing.jobs) == {job_id, other} and listing.pages >= 2
    assert tag_marker("uj-lost-1") == ogc.job(job_id).json()["parameters"][TAG_INPUT]

    untagged = parse_backend({"endpoint": ogc.url, "platform": "ogc_api_process"})
    with pytest.raises(BackendPermanentError, match="cannot be found again without a tag_input"):
        backend_jobs.find_job_by_tag(untagged, 10, "uj-lost-1")


def test_the_python_client_runs_an_ogc_task_and_downloads_its_results(ogc_env: OgcStack, tmp_path: Path) -> None:
    from upscaling_client import Client

    s = ogc_env
    client = Client(s.grpc)
    assert [p["name"] for p in client.describe(s.ogc.process_url, label="ogc_api_process")] == \
        ["geometry", "year", "fail"]
    values = tiles(s, 2)
    task = client.run(s.ogc.process_url, backend=s.ogc.url, label="ogc_api_process", dimension="geometry",
                      tiles=values, parameters={"year": 2020}, progress=False)
    assert task.info.status == "finished", task.info
    files = sorted(task.download(tmp_path / "results"), key=lambda p: p.parent.name)
    assert [p.name for p in files] == ["results.json", "results.json"]
    downloaded = [json.loads(p.read_text())["statistics"] for p in files]
    assert {d["year"] for d in downloaded} == {2020}
    assert sorted(d["bounds"][0] for d in downloaded) == pytest.approx(sorted(shape(v).bounds[0] for v in values))
