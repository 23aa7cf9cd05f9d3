"""The job message: the one builder of `SubmitJobMessage` (from a unit job row) and the one table of output
formats (the names a unit job may ask for, their aliases, and the openEO `save_result` name of each)."""

from __future__ import annotations

import json

from upscaling.db import Row
from upscaling.v1 import common_pb2, jobs_pb2

# Output format of a unit job -> its openEO `save_result` format name. The keys are the formats a request may name.
OUTPUT_FORMATS: dict[str, str] = {"gtiff": "GTiff", "geojson": "GeoJSON", "netcdf": "netCDF", "json": "JSON"}
FORMATS = tuple(OUTPUT_FORMATS)
DEFAULT_FORMAT = "gtiff"
_ALIASES = {"": DEFAULT_FORMAT, "geotiff": "gtiff"}
MESSAGE_TYPE = "upscaling.v1.SubmitJobMessage"


def normalise_format(fmt: str | None) -> str:
    """The canonical name of an output format (lower case, aliases resolved; unknown names pass through)."""
    name = (fmt or "").lower()
    return _ALIASES.get(name, name)


def openeo_format(fmt: str | None) -> str:
    """The openEO `save_result` format name of a unit job format (unknown names are passed through)."""
    return OUTPUT_FORMATS.get(normalise_format(fmt), fmt or "")


def submit_message(job: Row, correlation_id: str | None) -> jobs_pb2.SubmitJobMessage:
    """The job message of a unit job row (id, task_id, service, submit_arguments, format, title, tag, attempts,
    process_id) for its next submission."""
    service = job["service"] or {}
    endpoint = service.get("endpoint", "")
    several = endpoint if isinstance(endpoint, list) else []  # several backends or groups: the dispatcher chooses
    return jobs_pb2.SubmitJobMessage(
        job_id=job["id"], task_id=job["task_id"] or 0,
        service=common_pb2.ServiceRef(endpoint="" if several else endpoint, endpoints=several,
                                      application=service.get("application", ""),
                                      namespace=service.get("namespace") or ""),
        parameters_json=json.dumps(job["submit_arguments"] or {}, separators=(",", ":")),
        format=normalise_format(job["format"]), title=job["title"], tag=job["tag"],
        correlation_id=correlation_id or "", attempt=job["attempts"] + 1, process_id=job["process_id"] or "")
