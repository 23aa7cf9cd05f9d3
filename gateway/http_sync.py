"""HTTP route of synchronous jobs: `POST /sync_jobs` (APEx) answers with the result file itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from gateway.http_errors import error_responses
from gateway.http_tasks import Caller, JobRequest, service_dict
from gateway.sync_jobs import SyncJobs
from gateway.tasks import JobSpec

_RESULT_TYPES = ("image/tiff; application=geotiff", "application/geo+json", "application/x-netcdf",
                 "application/json")
SYNC_OK: dict[int | str, dict[str, Any]] = {
    200: {"description": "The result file, with the backend's media type (a GeoTIFF for gtiff, GeoJSON, netCDF, JSON)",
          "content": {media_type: {} for media_type in _RESULT_TYPES}}}


def create_sync_router(get_sync: Callable[[], SyncJobs]) -> APIRouter:
    """The `/sync_jobs` route over the synchronous jobs returned by `get_sync` (available once dependencies started)."""
    router = APIRouter()

    @router.post("/sync_jobs", summary="Run one processing job synchronously and answer with its result "
                 "(small AOIs: SYNC_MAX_AREA_KM2, SYNC_MAX_BYTES)", response_class=Response,
                 responses={**SYNC_OK, **error_responses(400, 413, 429, 502, 504)})
    async def run_sync_job(body: JobRequest, who: Caller) -> Response:
        result = await get_sync().run(JobSpec(title=body.title, label=body.label, service=service_dict(body.service),
                                              parameters=body.parameters, format=body.format), who)
        return Response(result.content, media_type=result.media_type)

    return router
