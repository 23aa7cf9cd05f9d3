"""Synchronous processing (`POST /result`) through the openeo client: the result file of the process graph, the
same file a batch job with that graph serves, and the same checks, faults and auth."""

from __future__ import annotations

import json
from pathlib import Path

import openeo
import pytest
import rasterio
import requests
from local_openeo_support import BBOX, LocalBackend, wait_for_status, wind_turbine_cube
from openeo.rest import OpenEoApiError

BOUNDS = (BBOX["west"], BBOX["south"], BBOX["east"], BBOX["north"])


def test_result_is_the_batch_jobs_file(backend: LocalBackend, con: openeo.Connection, tmp_path: Path) -> None:
    cube = wind_turbine_cube(con, backend).save_result(format="GTiff")
    response = con.execute(cube, auto_decode=False)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("image/tiff; application=geotiff")
    path = tmp_path / "sync.tif"
    path.write_bytes(response.content)
    with rasterio.open(path) as raster:
        assert raster.count == 3 and raster.crs.to_epsg() == 4326
        assert raster.bounds == pytest.approx(BOUNDS)

    job = wind_turbine_cube(con, backend).create_job(out_format="GTiff")
    job.start()
    assert wait_for_status(job, {"finished"})["status"] == "finished"
    job.get_results().download_file(tmp_path / "batch.tif")
    assert (tmp_path / "batch.tif").read_bytes() == response.content

    report = backend.report()
    assert report["totals"]["sync_results"] == {"ok": 1} and report["users"]["demo"]["sync_results"] == {"ok": 1}
    assert report["requests"]["compute_result"] == 1


def test_vector_result(backend: LocalBackend, con: openeo.Connection) -> None:
    collection = con.execute(wind_turbine_cube(con, backend).save_result(format="GeoJSON"))
    assert collection["type"] == "FeatureCollection" and collection["bbox"] == pytest.approx(list(BOUNDS))


def test_checks_faults_and_auth(backend: LocalBackend, con: openeo.Connection) -> None:
    empty = dict(BBOX, east=BBOX["west"])
    with pytest.raises(OpenEoApiError) as error:
        con.execute(wind_turbine_cube(con, backend, extent=empty).save_result(format="GTiff"), auto_decode=False)
    assert (error.value.http_status_code, error.value.code) == (400, "ProcessGraphInvalid")
    assert "is empty or outside" in error.value.message

    with pytest.raises(OpenEoApiError) as error:
        con.execute({}, auto_decode=False, validate=False)
    assert error.value.code == "ProcessGraphInvalid" and "empty" in error.value.message

    backend.configure(job_error_fraction=1.0)
    with pytest.raises(OpenEoApiError) as error:
        con.execute(wind_turbine_cube(con, backend), auto_decode=False)
    assert (error.value.http_status_code, error.value.code) == (500, "Internal")
    assert "Simulated processing failure" in error.value.message

    backend.configure(job_error_fraction=0.0, faults={"compute_result": {"503": 1.0}})
    with pytest.raises(OpenEoApiError) as error:
        con.execute(wind_turbine_cube(con, backend), auto_decode=False)
    assert error.value.http_status_code == 503
    assert backend.report()["totals"]["sync_results"] == {"error": 1}

    backend.configure(faults={})
    graph = wind_turbine_cube(con, backend).flat_graph()
    anonymous = requests.post(f"{backend.api}/result", data=json.dumps({"process": {"process_graph": graph}}),
                              headers={"Content-Type": "application/json"}, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "AuthenticationRequired"


def test_listed_in_capabilities(con: openeo.Connection) -> None:
    listed = {(e["path"], m) for e in con.capabilities().capabilities["endpoints"] for m in e["methods"]}
    assert ("/result", "POST") in listed
