"""HTTP routes of tasks and unit jobs: the APEx paths and JSON, plus list/cancel/retry/results of tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from gateway import task_stac as stac
from gateway import task_views as views
from gateway.auth import Principal
from gateway.auth_http import caller
from gateway.http_errors import error_responses
from gateway.tasks import JobSpec, TaskService, TaskSpec
from gateway.udp import describe
from upscaling.errors import InvalidArgument, NotFound

TaskId = Annotated[int, Path(ge=1, le=2**63 - 1, description="upscale task id")]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="unit job id")]
Caller = Annotated[Principal, Depends(caller)]


class ServiceModel(BaseModel):
    """An openEO backend and a UDP."""

    endpoint: str | list[str] = Field(description="backend URL (one of the configured backends: openEO, or OGC API - "
                                      "Processes), a configured group name, or a list of them: the task's jobs are "
                                      "spread over these backends")
    application: str = Field(description="URL of the UDP (process definition JSON); for ogc_api_process the process"
                                         " URL {endpoint}/processes/{id} or its id")
    namespace: str | None = None


class DimensionModel(BaseModel):
    """One job per value of this UDP parameter."""

    name: str
    values: list[Any]


class TaskRequest(BaseModel):
    """Body of `POST /upscale_tasks`."""

    model_config = ConfigDict(extra="forbid")

    title: str
    label: str = Field(description="'openeo' or 'ogc_api_process' (the platform of the service's backend)")
    service: ServiceModel
    parameters: dict[str, Any] = Field(default_factory=dict)
    format: str | None = Field(None, description="gtiff (default), geojson, netcdf or json")
    dimension: DimensionModel
    max_attempts: StrictInt | None = Field(None, description="automatic submissions of a failing job, 1..5")
    max_costs: StrictFloat | StrictInt | None = Field(
        None, description="cost limit (> 0): once the costs the backends reported of the task's jobs reach it, no "
                          "further job is submitted (they end canceled; the task's stop_reason says why)")


class JobRequest(BaseModel):
    """Body of `POST /unit_jobs`."""

    model_config = ConfigDict(extra="forbid")

    title: str
    label: str
    service: ServiceModel
    parameters: dict[str, Any] = Field(default_factory=dict)
    format: str | None = None


class ParamsRequest(BaseModel):
    """Body of `POST /params`."""

    label: str
    service: ServiceModel


class GeoJSONResponse(JSONResponse):
    """JSON answered as `application/geo+json` (documented by GEOJSON_OK)."""

    media_type = "application/geo+json"


GEOJSON_OK: dict[int | str, dict[str, Any]] = {200: {"description": "GeoJSON",
                                                     "content": {"application/geo+json": {}}}}


def service_dict(model: ServiceModel) -> dict[str, Any]:
    """The service of a request as TaskService takes it."""
    return model.model_dump(exclude_none=True)


def create_router(get_tasks: Callable[[], TaskService]) -> APIRouter:
    """The task routes over the task service returned by `get_tasks` (available once dependencies started)."""
    router = APIRouter()

    @router.post("/upscale_tasks", status_code=201, summary="Create an upscaling task (one job per dimension value)",
                 responses=error_responses(400, 413))
    async def create_task(body: TaskRequest, who: Caller) -> JSONResponse:
        task = await get_tasks().create_task(TaskSpec(
            title=body.title, label=body.label, service=service_dict(body.service), parameters=body.parameters,
            format=body.format, dimension_name=body.dimension.name, dimension_values=body.dimension.values,
            max_attempts=body.max_attempts, max_costs=body.max_costs), who)
        return JSONResponse(views.task_summary(task), status_code=201)

    @router.get("/upscale_tasks", summary="List tasks, newest first, with pagination")
    async def list_tasks(status: Annotated[list[str] | None, Query()] = None,
                         page_size: Annotated[int, Query(ge=1, le=500)] = 50,
                         page_token: str = "", *, who: Caller) -> dict[str, Any]:
        rows, counts, token = await get_tasks().list_tasks(status or [], page_size, page_token, who)
        return {"tasks": [views.task_list_item(r, counts[r["id"]]) for r in rows], "next_page_token": token or None}

    @router.get("/upscale_tasks/{task_id}", summary="A task with its jobs, counts per status and progress",
                responses=error_responses(404))
    async def get_task(task_id: TaskId, who: Caller) -> JSONResponse:
        view = await get_tasks().get_task(task_id, who)
        return JSONResponse(views.task_body(view.task, view.jobs))

    @router.post("/upscale_tasks/{task_id}/cancel", summary="Cancel a task (jobs not yet submitted never are)",
                 responses=error_responses(404, 409))
    async def cancel_task(task_id: TaskId, who: Caller) -> JSONResponse:
        tasks = get_tasks()
        await tasks.cancel_task(task_id, who)
        view = await tasks.get_task(task_id, who)
        return JSONResponse(views.task_body(view.task, view.jobs))

    @router.post("/upscale_tasks/{task_id}/retry", summary="Submit the task's failed jobs again",
                 responses=error_responses(404, 409))
    async def retry_task(task_id: TaskId, who: Caller) -> dict[str, Any]:
        tasks = get_tasks()
        retried = await tasks.retry_failed(task_id, who)
        view = await tasks.get_task(task_id, who)
        return {**views.task_summary(view.task), "retried": retried, "job_counts": views.job_counts(view.jobs)}

    @router.get("/upscale_tasks/{task_id}/results", summary="The task's results: a STAC Collection linking one Item "
                "per finished job", responses=error_responses(404))
    async def task_results(task_id: TaskId, request: Request, who: Caller) -> JSONResponse:
        task, jobs = await get_tasks().task_results(task_id, who)
        return JSONResponse(stac.task_collection(task, stac.task_items(task, jobs), str(request.base_url)))

    @router.get("/upscale_tasks/{task_id}/results/items", summary="Every finished job's STAC Item (ItemCollection)",
                responses={**GEOJSON_OK, **error_responses(404)})
    async def task_result_items(task_id: TaskId, request: Request, who: Caller) -> JSONResponse:
        task, jobs = await get_tasks().task_results(task_id, who)
        return GeoJSONResponse(stac.item_collection(task, stac.task_items(task, jobs, str(request.base_url))))

    @router.get("/upscale_tasks/{task_id}/results/items/{job_id}", summary="The STAC Item of one finished job",
                responses={**GEOJSON_OK, **error_responses(404)})
    async def task_result_item(task_id: TaskId, job_id: JobId, request: Request, who: Caller) -> JSONResponse:
        task, jobs = await get_tasks().task_results(task_id, who)
        items = stac.task_items(task, [job for job in jobs if job["id"] == job_id], str(request.base_url))
        if not items:
            raise NotFound(f"task {task_id} has no finished job {job_id} with results", error_code="JOB_NOT_FOUND")
        return GeoJSONResponse(items[0])

    @router.post("/unit_jobs", status_code=201, summary="Create one processing job (no dimension)",
                 responses=error_responses(400, 413))
    async def create_job(body: JobRequest, who: Caller) -> JSONResponse:
        job = await get_tasks().create_job(JobSpec(title=body.title, label=body.label,
                                                   service=service_dict(body.service), parameters=body.parameters,
                                                   format=body.format), who)
        return JSONResponse(views.job_summary(job), status_code=201)

    @router.get("/unit_jobs/{job_id}", summary="A unit job",
                responses=error_responses(404))
    async def get_job(job_id: JobId, who: Caller) -> JSONResponse:
        return JSONResponse(views.job_body(await get_tasks().get_job(job_id, who)))

    @router.get("/unit_jobs/{job_id}/results", summary="The stored STAC metadata of a finished job's results",
                responses=error_responses(404, 409))
    async def job_results(job_id: JobId, who: Caller) -> JSONResponse:
        return JSONResponse(await get_tasks().job_results(job_id, who))

    @router.get("/unit_jobs/{job_id}/logs", summary="The error log entries of the job's failed backend jobs "
                "(fetched once per failure and stored)", responses=error_responses(404))
    async def job_logs(job_id: JobId, who: Caller) -> JSONResponse:
        return JSONResponse(views.job_logs_body(job_id, await get_tasks().job_logs(job_id, who)))

    @router.delete("/unit_jobs/{job_id}", summary="Cancel a unit job",
                   responses=error_responses(404, 409))
    async def cancel_job(job_id: JobId, who: Caller) -> JSONResponse:
        return JSONResponse(views.job_body(await get_tasks().cancel_job(job_id, who)))

    @router.get("/jobs_status", summary="Recent upscaling tasks and processing jobs")
    async def jobs_status(filter: Annotated[list[str] | None, Query()] = None, *, who: Caller) -> dict[str, Any]:
        return await jobs_status_body(get_tasks(), filter or [], who)

    @router.post("/params", summary="The parameters of a service's UDP",
                 responses=error_responses(400, 413))
    async def params(body: ParamsRequest, who: Caller) -> JSONResponse:
        udp = await get_tasks().describe(body.label, service_dict(body.service))
        return JSONResponse(describe(udp))

    return router


def parse_filters(filters: list[str]) -> tuple[bool, bool]:
    """(include tasks, include jobs) of `filter=upscaling&filter=processing` (none: both)."""
    bad = [f for f in filters if f not in ("upscaling", "processing")]
    if bad:
        raise InvalidArgument(f"unknown filter {bad[0]!r}; use 'upscaling' and/or 'processing'")
    if not filters:
        return True, True
    return "upscaling" in filters, "processing" in filters


async def jobs_status_body(tasks: TaskService, filters: list[str], who: Principal) -> dict[str, Any]:
    """The `/jobs_status` body of the caller's tasks and jobs."""
    include_tasks, include_jobs = parse_filters(filters)
    found = await tasks.jobs_status(include_tasks, include_jobs, who)
    body: dict[str, Any] = {}
    if include_tasks:
        body["upscaling_tasks"] = [views.task_summary(t) for t in found["upscaling_tasks"]]
    if include_jobs:
        body["processing_jobs"] = [views.job_summary(j) for j in found["processing_jobs"]]
    return body
