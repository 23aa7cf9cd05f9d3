"""The OGC API - Processes client's pure parts: status mapping, job reports, job ids of execution answers, error
kinds, STAC-like results, the tag rule, and the platform of a backend entry."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from upscaling.backends import parse_backend
from upscaling.openeo_backend import jobs, ogc_processes
from upscaling.openeo_backend.errors import ErrorKind
from upscaling.statuses import from_openeo

BACKEND = parse_backend({"endpoint": "https://ogc.example.org/api", "platform": "ogc_api_process",
                         "tag_input": "upscaling_tag"})


def response(status: int, body: Any = None, headers: dict[str, str] | None = None,
             method: str = "POST", url: str = "https://ogc.example.org/api/x") -> requests.Response:
    reply = requests.Response()
    reply.status_code = status
    reply._content = b"" if body is None else json.dumps(body).encode()
    reply.headers.update(headers or {})
    reply.url = url
    reply.request = requests.Request(method, url).prepare()
    return reply


@pytest.mark.parametrize(("ogc", "ours"), [("accepted", "queued"), ("running", "running"),
                                           ("successful", "finished"), ("failed", "failed"),
                                           ("dismissed", "canceled"), ("Successful", "finished")])
def test_ogc_statuses_become_ours(ogc: str, ours: str) -> None:
    assert from_openeo(ogc_processes.openeo_status(ogc)) == ours


def test_an_unknown_status_stays_unknown() -> None:
    assert from_openeo(ogc_processes.openeo_status("paused")) == "unknown"


def test_job_report_of_a_pygeoapi_status_info() -> None:
    info = {"type": "process", "processID": "p", "jobID": "j-1", "status": "running", "message": "Job running",
            "progress": 10, "parameters": {"upscaling_tag": "[uj-1]"}, "created": "c", "updated": "u"}
    report = ogc_processes.job_report(info)
    assert report["id"] == "j-1" and report["status"] == "running" and report["progress"] == 10.0
    assert ogc_processes.carries(report, "[uj-1]") and not ogc_processes.carries(report, "[uj-2]")
    assert "progress" not in ogc_processes.job_report({"jobID": "j", "status": "accepted", "progress": None})


def test_job_id_from_the_location_header_or_the_body() -> None:
    located = response(201, None, {"Location": "https://ogc.example.org/api/jobs/abc-1"})
    assert ogc_processes.job_id_of(located) == "abc-1"
    assert ogc_processes.job_id_of(response(201, {"jobID": "b-2", "status": "accepted"})) == "b-2"
    assert ogc_processes.job_id_of(response(200, {"statistics": {}})) is None


@pytest.mark.parametrize(("status", "body", "kind", "code"), [
    (404, {"code": "NoSuchProcess", "description": "identifier not found"}, ErrorKind.PERMANENT, "NoSuchProcess"),
    (400, {"type": "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/no-such-job", "title": "t",
           "detail": "no job 7"}, ErrorKind.PERMANENT, "no-such-job"),
    (503, None, ErrorKind.TRANSIENT, ""),
    (429, None, ErrorKind.LIMIT, ""),
    (401, {"description": "who are you"}, ErrorKind.AUTH, ""),
])
def test_error_answers_are_typed(status: int, body: Any, kind: ErrorKind, code: str) -> None:
    error = ogc_processes._error(response(status, body))
    assert error.kind is kind and error.code == code and error.http_status == status
    if body:
        assert (body.get("description") or body.get("detail")) in str(error)


def test_results_by_value_are_one_json_asset_and_kept_inline() -> None:
    stac = ogc_processes.stac_results(BACKEND, "j 1", {"statistics": {"area_km2": 1.5}})
    assert stac["type"] == "Collection" and stac["id"] == "j 1"
    assert stac["assets"] == {"results.json": {
        "href": "https://ogc.example.org/api/jobs/j%201/results?f=json", "type": "application/json",
        "title": "outputs statistics of the job", "roles": ["data"]}}
    assert stac["upscaling:outputs"] == {"statistics": {"area_km2": 1.5}}


def test_results_by_reference_are_assets_of_their_own() -> None:
    document = {"outputs": {"map": {"href": "https://files/map.tif", "type": "image/tiff"}, "n": 3}}
    stac = ogc_processes.stac_results(BACKEND, "j", document)
    assert stac["assets"]["map"] == {"href": "https://files/map.tif", "type": "image/tiff", "title": "map",
                                     "roles": ["data"]}
    assert set(stac["assets"]) == {"map", "results.json"} and stac["upscaling:outputs"] == {"n": 3}
    big = ogc_processes.stac_results(BACKEND, "j", {"v": "x" * (ogc_processes.MAX_INLINE_OUTPUTS + 1)})
    assert "upscaling:outputs" not in big and "results.json" in big["assets"]
    assert ogc_processes.stac_results(BACKEND, "j", [1, 2])["upscaling:outputs"] == {"result": [1, 2]}


def test_without_a_tag_input_a_lost_job_is_not_searched_but_refused() -> None:
    untagged = parse_backend({"endpoint": "https://ogc.example.org/api", "platform": "ogc_api_process"})
    with pytest.raises(Exception, match="without a tag_input") as caught:
        jobs.find_job_by_tag(untagged, 1, "uj-1")
    assert getattr(caught.value, "kind", None) is ErrorKind.PERMANENT


def test_backend_platform_is_checked() -> None:
    assert parse_backend({"endpoint": "https://o.example.org"}).platform == "openeo"
    assert BACKEND.platform == "ogc_api_process" and BACKEND.tag_input == "upscaling_tag"
    with pytest.raises(ValueError, match="unknown platform 'wps'"):
        parse_backend({"endpoint": "https://o.example.org", "platform": "wps"})
    with pytest.raises(ValueError, match="tag_input"):
        parse_backend({"endpoint": "https://o.example.org", "tag_input": "t"})


def test_unsupported_auth_is_a_clear_permanent_error() -> None:
    backend = parse_backend({"endpoint": "https://ogc2.example.org", "platform": "ogc_api_process",
                             "auth": {"method": "oidc_client_credentials", "client_id": "c", "client_secret": "s"}})
    for _ in range(2):  # refused every time, never sent without credentials
        with pytest.raises(Exception, match="not supported for an OGC API - Processes backend") as caught:
            ogc_processes.describe(backend, 1, "j")
        assert getattr(caught.value, "kind", None) is ErrorKind.PERMANENT


def test_basic_auth_and_json_are_asked_for_on_every_request() -> None:
    backend = parse_backend({"endpoint": "https://ogc3.example.org", "platform": "ogc_api_process",
                             "auth": {"method": "basic", "username": "u", "password": "p"}})
    session = ogc_processes._session(backend)
    assert session.auth == ("u", "p") and session.headers["Accept"] == "application/json"
    assert ogc_processes._session(backend) is session
