"""Remote process definitions: catalogue, resolution (local and over HTTP), argument checks."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import openeo
import pytest
import requests
from local_openeo_support import BBOX, POLYGON, LocalBackend, wind_turbine_cube
from openeo.rest import OpenEoApiError

from local_openeo.config import DEFAULT_UDP_DIR


@pytest.fixture(scope="module")
def udp_server() -> Iterator[str]:
    """A plain HTTP server (not the backend) serving the UDP folder, like a remote catalogue."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(DEFAULT_UDP_DIR)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _create_error(con: openeo.Connection, cube: openeo.DataCube) -> OpenEoApiError:
    with pytest.raises(OpenEoApiError) as error:
        con.create_job(cube)
    return error.value


def test_catalogue_serves_the_udp_files(backend: LocalBackend) -> None:
    listing = requests.get(f"{backend.url}/udp/", timeout=5).json()["processes"]
    assert {p["id"] for p in listing} >= {"wind_turbine_detection", "max_ndvi", "variabilitymap"}
    assert backend.udp_url() in {p["url"] for p in listing}
    served = requests.get(backend.udp_url(), timeout=5).json()
    assert served == json.loads((DEFAULT_UDP_DIR / "wind_turbine_detection.json").read_text())
    assert requests.get(backend.udp_url("missing"), timeout=5).status_code == 404


def test_local_namespace_is_read_without_http(backend: LocalBackend, con: openeo.Connection) -> None:
    for _ in range(3):
        con.create_job(wind_turbine_cube(con, backend))
    report = backend.report()
    assert report["udp_resolution"]["local_reads"] == 1
    assert "remote_fetches" not in report["udp_resolution"]
    assert report["requests"].get("udp_catalogue", 0) == 0


def test_remote_namespace_is_fetched_once(backend: LocalBackend, con: openeo.Connection, udp_server: str) -> None:
    namespace = f"{udp_server}/wind_turbine_detection.json"
    for _ in range(3):
        cube = con.datacube_from_process("wind_turbine_detection", namespace=namespace, spatial_extent=BBOX)
        con.create_job(cube)
    resolution = backend.report()["udp_resolution"]
    assert resolution["remote_fetches"] == 1 and resolution["cache_hits"] >= 2


def test_missing_required_parameter(backend: LocalBackend, con: openeo.Connection) -> None:
    cube = con.datacube_from_process("wind_turbine_detection", namespace=backend.udp_url(), year="2024")
    error = _create_error(con, cube)
    assert (error.http_status_code, error.code) == (400, "ProcessParameterMissing")
    assert "spatial_extent" in error.message
    assert backend.report()["totals"]["created"] == 0


def test_unknown_parameter(backend: LocalBackend, con: openeo.Connection) -> None:
    error = _create_error(con, wind_turbine_cube(con, backend, resolution=10))
    assert (error.http_status_code, error.code) == (400, "ProcessParameterInvalid")
    assert "resolution" in error.message


def test_wrong_shapes_are_rejected_and_lossless_scalars_accepted(backend: LocalBackend, con: openeo.Connection) -> None:
    udp = backend.udp_url()
    polygon_for_bbox = con.datacube_from_process("wind_turbine_detection", namespace=udp, spatial_extent=POLYGON)
    assert _create_error(con, polygon_for_bbox).code == "ProcessParameterInvalid"
    partial_bbox = {"west": 1.0, "south": 2.0, "east": 3.0}
    error = _create_error(
        con, con.datacube_from_process("wind_turbine_detection", namespace=udp, spatial_extent=partial_bbox)
    )
    assert error.code == "ProcessParameterInvalid"
    listed_year = con.datacube_from_process("wind_turbine_detection", namespace=udp, spatial_extent=BBOX, year=[2024])
    assert _create_error(con, listed_year).code == "ProcessParameterInvalid"
    # The seed notebook sends year as an integer where the UDP declares a string: accepted.
    integer_year = con.datacube_from_process("wind_turbine_detection", namespace=udp, spatial_extent=BBOX, year=2024)
    assert con.create_job(integer_year).status() == "created"
    # null is one of the declared schemas of spatial_extent
    assert con.create_job(wind_turbine_cube(con, backend, extent=None)).status() == "created"


def test_enum_and_optional_parameters(backend: LocalBackend, con: openeo.Connection) -> None:
    udp = backend.udp_url("cropsar2d")
    arguments = {"geometry": POLYGON, "startdate": "2024-01-01", "enddate": "2024-02-01"}
    assert con.create_job(con.datacube_from_process("cropsar2d", namespace=udp, **arguments)).status() == "created"
    bad = con.datacube_from_process("cropsar2d", namespace=udp, output="LAI", **arguments)
    assert _create_error(con, bad).code == "ProcessParameterInvalid"


def test_unreachable_or_wrong_namespaces(backend: LocalBackend, con: openeo.Connection, udp_server: str) -> None:
    cases = {
        "http://127.0.0.1:9/wind_turbine_detection.json": "ProcessNamespaceInvalid",  # connection refused
        f"{udp_server}/nope.json": "ProcessNamespaceInvalid",  # 404
        backend.udp_url("nope"): "ProcessNamespaceInvalid",  # not in the local catalogue
        backend.udp_url("max_ndvi"): "ProcessUnsupported",  # defines another process id
    }
    for namespace, code in cases.items():
        cube = con.datacube_from_process("wind_turbine_detection", namespace=namespace, spatial_extent=BBOX)
        error = _create_error(con, cube)
        assert (error.http_status_code, error.code) == (400, code), namespace
        assert namespace in error.message


def test_validation_endpoint_reports_errors(backend: LocalBackend, con: openeo.Connection) -> None:
    good = wind_turbine_cube(con, backend)
    assert list(con.validate_process_graph(good)) == []
    bad = con.datacube_from_process("wind_turbine_detection", namespace=backend.udp_url())
    errors = con.validate_process_graph(bad)
    assert [e["code"] for e in errors] == ["ProcessParameterMissing"]


def test_invalid_bodies(backend: LocalBackend, con: openeo.Connection) -> None:
    for body, code in (
        ({"title": "no process"}, "ProcessGraphMissing"),
        ({"process": {"process_graph": {}}}, "ProcessGraphInvalid"),
        (
            {"process": {"process_graph": {"a": {"process_id": "x", "arguments": {"d": {"from_node": "b"}}}}}},
            "ProcessGraphInvalid",
        ),
    ):
        with pytest.raises(OpenEoApiError) as error:
            con.post("/jobs", json=body, expected_status=201)
        assert (error.value.http_status_code, error.value.code) == (400, code)
    with pytest.raises(OpenEoApiError) as error:
        con.create_job(
            {
                "s": {"process_id": "save_result", "arguments": {"format": "PNG"}, "result": True},
                "l": {"process_id": "load_collection", "arguments": {"spatial_extent": BBOX}},
            }
        )
    assert error.value.code == "FormatUnsupported"
