"""Synchronous processing (``POST /result``): the process graph in, the result file out.

The same processing as a batch job's results, without a job: the graph is checked like a job creation
(``analyze_process``), the outcome is decided like a job start (an unusable extent fails, and so does the
seeded ``job_error_fraction``), and the file is the one a finished job with this graph would serve.
"""

from __future__ import annotations

from aiohttp import web

from local_openeo.backend import Backend, endpoint
from local_openeo.errors import ApiError
from local_openeo.graph import analyze_process
from local_openeo.jsonio import read_object
from local_openeo.results import ASSETS


@endpoint("compute_result")
async def compute_result(backend: Backend, request: web.Request) -> web.Response:
    user = backend.user(request)
    body = await read_object(request)
    info = await analyze_process(body.get("process"), backend.resolver, request.host)
    if info.extent is None:
        raise ApiError(400, "ProcessGraphInvalid", info.extent_error or "No usable spatial extent.")
    settings = backend.settings
    if backend.faults.job_fails():
        backend.accounting.sync_results[user]["error"] += 1
        raise ApiError(
            500,
            "Internal",
            f"Simulated processing failure of a synchronous request "
            f"(job_error_fraction={settings.job_error_fraction}, seed={settings.seed}).",
        )
    data = await backend.files.get(info.output, info.extent, settings.result_size)
    backend.accounting.sync_results[user]["ok"] += 1
    name, media_type = ASSETS[info.output]
    headers = {"Content-Type": media_type, "Content-Disposition": f'attachment; filename="{name}"'}
    return web.Response(body=data, headers=headers)
