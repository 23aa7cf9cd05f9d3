"""Batch jobs through the openeo client: create, start, poll, results, cancel, delete, list, ownership."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import openeo
import pytest
import rasterio
import requests
from local_openeo_support import BBOX, POLYGON, LocalBackend, wait_for_status, wind_turbine_cube
from openeo.rest import OpenEoApiError


def _bounds(extent: dict) -> tuple[float, float, float, float]:
    return extent["west"], extent["south"], extent["east"], extent["north"]


def test_wind_turbine_job_runs_to_finished_with_a_cog(
    backend: LocalBackend, con: openeo.Connection, tmp_path: Path
) -> None:
    backend.configure(queue_seconds=0.2, run_seconds=0.4)
    cube = wind_turbine_cube(con, backend)
    job = cube.create_job(out_format="GTiff", title="Wind turbines - Processing Job 1")
    first = job.describe()
    assert first["status"] == "created"
    assert first["title"] == "Wind turbines - Processing Job 1"
    graph = first["process"]["process_graph"]
    assert any(node.get("namespace") == backend.udp_url() for node in graph.values())
    with pytest.raises(OpenEoApiError) as error:
        job.get_results().get_metadata()
    assert (error.value.http_status_code, error.value.code) == (400, "JobNotFinished")

    job.start()
    seen, progress, updated = [], [], []
    while True:
        description = job.describe()
        seen.append(description["status"])
        updated.append(description["updated"])
        if description["status"] == "running":
            progress.append(description["progress"])
        if description["status"] in ("finished", "error"):
            break
        time.sleep(0.03)
    assert description["status"] == "finished"
    assert seen.index("queued") < seen.index("running") < seen.index("finished")
    assert progress == sorted(progress) and progress[0] < progress[-1] < 100
    assert updated == sorted(updated) and description["progress"] == 100
    assert description["usage"]["duration"] == {"value": 0.4, "unit": "seconds"}
    assert {"cpu", "memory", "duration"} <= set(description["usage"])
    assert description["costs"] > 0

    results = job.get_results()
    metadata = results.get_metadata()
    assert metadata["type"] == "Collection"
    assert metadata["extent"]["spatial"]["bbox"] == [list(_bounds(BBOX))]
    assert {link["rel"] for link in metadata["links"]} >= {"self", "job"}
    asset = metadata["assets"]["openEO.tif"]
    assert asset["roles"] == ["data"] and asset["proj:epsg"] == 4326
    assert asset["type"].startswith("image/tiff; application=geotiff")
    assert asset["href"].startswith(backend.api)

    paths = results.download_files(tmp_path)
    assert tmp_path / "openEO.tif" in paths
    with rasterio.open(tmp_path / "openEO.tif") as source:
        assert source.crs.to_epsg() == 4326
        assert source.bounds == pytest.approx(_bounds(BBOX))
        assert source.count == 3 and max(source.width, source.height) <= 256
        assert source.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        band = source.read(1).astype(np.float32)
        assert band.max() > band.min()  # the notebook normalises band 1
    with rasterio.open(asset["href"]) as remote:  # what the notebook does: open the href over HTTP
        assert remote.bounds == pytest.approx(_bounds(BBOX))


def test_vector_outputs_and_raster_default(backend: LocalBackend, con: openeo.Connection, tmp_path: Path) -> None:
    backend.configure(queue_seconds=0, run_seconds=0)
    as_geojson = wind_turbine_cube(con, backend).create_job(out_format="GeoJSON")
    as_is = con.create_job(wind_turbine_cube(con, backend))  # UDP returns a vector cube, nothing saved
    raster_udp = con.datacube_from_process(
        "max_ndvi",
        namespace=backend.udp_url("max_ndvi"),
        bbox=BBOX,
        temporal_extent=["2024-05-01", "2024-06-01"],
    )
    as_raster = con.create_job(raster_udp)
    for job in (as_geojson, as_is):
        job.start()
        assert wait_for_status(job, {"finished"})["status"] == "finished"
        assets = job.get_results().get_metadata()["assets"]
        assert list(assets) == ["vectorcube.geojson"]
        assert assets["vectorcube.geojson"]["type"] == "application/geo+json"
        collection = job.get_results().get_asset("vectorcube.geojson").load_json()
        assert collection["type"] == "FeatureCollection" and collection["features"]
        west, south, east, north = _bounds(BBOX)
        for feature in collection["features"]:
            x, y = feature["geometry"]["coordinates"]
            assert west < x < east and south < y < north
    as_raster.start()
    wait_for_status(as_raster, {"finished"})
    metadata = as_raster.get_results().get_metadata()
    assert list(metadata["assets"]) == ["openEO.tif"]
    assert metadata["extent"]["temporal"]["interval"] == [["2024-05-01", "2024-06-01"]]


def test_geojson_extent_and_plain_graph(backend: LocalBackend, con: openeo.Connection, tmp_path: Path) -> None:
    backend.configure(queue_seconds=0, run_seconds=0)
    variability = con.datacube_from_process(
        "variabilitymap",
        namespace=backend.udp_url("variabilitymap"),
        spatial_extent=POLYGON,
        temporal_extent=["2024-01-01", "2024-12-31"],
    )
    plain = con.load_collection(
        "SENTINEL2_L2A", spatial_extent=BBOX, temporal_extent=["2024-01-01", "2024-02-01"], bands=["B04"]
    )
    expected = {"variability": (14.37, 47.26, 14.41, 47.28), "plain": _bounds(BBOX)}
    for name, cube in (("variability", variability), ("plain", plain)):
        job = cube.create_job(out_format="GTiff")
        job.start()
        wait_for_status(job, {"finished"})
        target = job.get_results().download_file(tmp_path / f"{name}.tif", key="openEO.tif")
        with rasterio.open(target) as source:
            assert source.bounds == pytest.approx(expected[name])


def test_netcdf_and_json_outputs(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(queue_seconds=0, run_seconds=0)
    for out_format, asset_name in (("netCDF", "openEO.nc"), ("JSON", "timeseries.json")):
        job = wind_turbine_cube(con, backend).create_job(out_format=out_format)
        job.start()
        wait_for_status(job, {"finished"})
        asset = job.get_results().get_asset(asset_name)
        data = asset.load_bytes()
        if out_format == "netCDF":
            assert data[:4] in (b"\x89HDF", b"CDF\x01", b"CDF\x02")
        else:
            assert json.loads(data)["timeseries"]


def test_asset_download_supports_head_and_ranges(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(queue_seconds=0, run_seconds=0)
    job = wind_turbine_cube(con, backend).create_job(out_format="GTiff")
    job.start()
    wait_for_status(job, {"finished"})
    href = job.get_results().get_metadata()["assets"]["openEO.tif"]["href"]
    full = requests.get(href, timeout=5)  # signed URL: no token needed
    assert full.status_code == 200 and full.content[:2] in (b"II", b"MM")
    head = requests.head(href, timeout=5)
    assert head.headers["Accept-Ranges"] == "bytes" and int(head.headers["Content-Length"]) == len(full.content)
    part = requests.get(href, headers={"Range": "bytes=10-19"}, timeout=5)
    assert part.status_code == 206 and part.content == full.content[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(full.content)}"
    forged = href.rsplit("/", 2)[0] + "/" + "0" * 32 + "/openEO.tif"
    assert requests.get(forged, timeout=5).status_code == 404


def test_stop_cancels_and_delete_removes(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(queue_seconds=0, run_seconds=30)
    job = wind_turbine_cube(con, backend).create_job(out_format="GTiff")
    job.start()
    assert wait_for_status(job, {"running"})["status"] == "running"
    job.stop()
    assert job.status() == "canceled"
    assert job.logs()[-1]["message"] == "Batch job canceled."
    job.delete()
    with pytest.raises(OpenEoApiError) as error:
        job.describe()
    assert (error.value.http_status_code, error.value.code) == (404, "JobNotFound")
    with pytest.raises(OpenEoApiError):
        job.delete()
    totals = backend.report()["totals"]
    assert (totals["created"], totals["started"], totals["canceled"], totals["deleted"]) == (1, 1, 1, 1)


def test_restart_and_patch(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(queue_seconds=0, run_seconds=0)
    job = wind_turbine_cube(con, backend).create_job(out_format="GTiff", title="before")
    con.patch(f"/jobs/{job.job_id}", json={"title": "after", "description": "[tile-7]"}, expected_status=204)
    assert job.describe()["title"] == "after"
    job.start()
    wait_for_status(job, {"finished"})
    job.start()  # a finished job can be started again
    assert job.status() == "finished"
    assert backend.report()["totals"]["restarted"] == 1
    assert [e["message"] for e in job.logs(level="info")][1] == "Batch job queued (start #2)."


def test_start_of_a_running_job_is_ignored(backend: LocalBackend, con: openeo.Connection) -> None:
    backend.configure(queue_seconds=0, run_seconds=30)
    job = con.create_job(wind_turbine_cube(con, backend))
    job.start()
    job.start()
    assert job.status() == "running"
    assert backend.report()["totals"]["started"] == 1
    with pytest.raises(OpenEoApiError) as error:
        con.patch(f"/jobs/{job.job_id}", json={"title": "x"}, expected_status=204)
    assert error.value.code == "JobLocked"


def test_list_jobs_pages_with_next_links(backend: LocalBackend, con: openeo.Connection) -> None:
    created = [con.create_job(wind_turbine_cube(con, backend), title=f"job {n}").job_id for n in range(7)]
    con.job(created[3]).delete()
    listing = con.list_jobs(limit=3)
    pages = [[job["id"] for job in listing]]
    next_hrefs = [link.href for link in listing.links if link.rel == "next"]
    while next_hrefs:
        assert "cursor=" in next_hrefs[0] and "limit=3" in next_hrefs[0]
        page = con.get(next_hrefs[0], expected_status=200).json()
        pages.append([job["id"] for job in page["jobs"]])
        next_hrefs = [link["href"] for link in page["links"] if link["rel"] == "next"]
    assert [len(page) for page in pages] == [3, 3]
    listed = [job_id for page in pages for job_id in page]
    expected = [job_id for job_id in reversed(created) if job_id != created[3]]
    assert listed == expected  # newest first, no duplicates, deleted job left out
    assert {"status", "created", "title"} <= set(listing[0])
    assert len(con.list_jobs(limit=None)) == 6


def test_jobs_belong_to_their_user(backend: LocalBackend, con: openeo.Connection) -> None:
    job = con.create_job(wind_turbine_cube(con, backend), title="demo's")
    alice = backend.connect("alice")
    assert alice.list_jobs() == []
    other = alice.job(job.job_id)
    for call in (other.describe, other.start, other.stop, other.delete, other.logs, other.get_results().get_metadata):
        with pytest.raises(OpenEoApiError) as error:
            call()
        assert (error.value.http_status_code, error.value.code) == (404, "JobNotFound")
    assert job.status() == "created"
    assert backend.report()["users"]["demo"]["created"] == 1
