"""The job message builder and the one table of output formats."""

from __future__ import annotations

import json

from upscaling.jobs.messages import FORMATS, normalise_format, openeo_format, submit_message


def test_formats_are_normalised_once() -> None:
    assert FORMATS == ("gtiff", "geojson", "netcdf", "json")
    assert [normalise_format(f) for f in ("GTiff", "geotiff", "", None, "NetCDF")] == \
        ["gtiff", "gtiff", "gtiff", "gtiff", "netcdf"]
    assert [openeo_format(f) for f in ("gtiff", "GeoTIFF", "", "geojson", "netcdf", "json")] == \
        ["GTiff", "GTiff", "GTiff", "GeoJSON", "netCDF", "JSON"]
    assert openeo_format("COG") == "COG"  # unknown names pass through to the backend


def test_submit_message_of_a_row() -> None:
    row = {"id": 7, "task_id": None, "service": {"endpoint": "http://b", "application": "http://b/udp.json"},
           "submit_arguments": {"year": 2024, "spatial_extent": {"west": 1}}, "format": "GeoTIFF", "title": "t",
           "tag": "uj-1", "attempts": 1, "process_id": "wind_turbine_detection"}
    message = submit_message(row, "cid-1")
    assert (message.job_id, message.task_id, message.format, message.attempt) == (7, 0, "gtiff", 2)
    assert message.service.endpoint == "http://b" and message.service.namespace == ""
    assert json.loads(message.parameters_json) == row["submit_arguments"]
    assert (message.tag, message.correlation_id, message.process_id) == ("uj-1", "cid-1", "wind_turbine_detection")
