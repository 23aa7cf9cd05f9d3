"""STAC Collection describing a finished job's results (``GET /jobs/{id}/results``)."""

from __future__ import annotations

from local_openeo.jobs import Job, rfc3339
from local_openeo.results import ASSETS, BANDS, raster_shape

STAC_VERSION = "1.0.0"
EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
]


def results_collection(job: Job, *, jobs_url: str, asset_url: str, max_px: int, status: str) -> dict:
    """The STAC Collection of `job`; `asset_url` is the absolute href of its single asset."""
    info = job.info
    extent = info.extent or (0.0, 0.0, 0.0, 0.0)
    name, media_type = ASSETS[info.output]
    asset: dict = {
        "href": asset_url,
        "type": media_type,
        "roles": ["data"],
        "title": name,
        "bbox": list(extent),
        "proj:epsg": 4326,
        "proj:bbox": list(extent),
    }
    if info.output in ("GTiff", "netCDF"):
        height, width = raster_shape(extent, max_px)
        asset["proj:shape"] = [height, width]
        asset["eo:bands"] = [{"name": band, "description": text} for band, text in BANDS]
    start, end = info.temporal or (rfc3339(job.started or job.created), rfc3339(job.end))
    job_url = f"{jobs_url}/{job.id}"
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS,
        "id": job.id,
        "title": job.title or f"Results of batch job {job.id}",
        "description": job.description or f"Results of batch job {job.id} (local openEO backend).",
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [list(extent)]}, "temporal": {"interval": [[start, end]]}},
        "summaries": {"proj:epsg": [4326]},
        "links": [
            {"rel": "self", "href": f"{job_url}/results", "type": "application/json"},
            {"rel": "canonical", "href": f"{job_url}/results", "type": "application/json"},
            {"rel": "job", "href": job_url, "type": "application/json"},
        ],
        "assets": {name: asset},
        "openeo:status": status,
    }
