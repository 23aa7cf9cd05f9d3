"""The live map page: `GET /` (the caller's tasks), `GET /tasks/{id}` (a task's tiles on a map, live over the
task WebSocket), the page's own scripts and styles under `/ui/`, the front-end libraries installed from npm
(`gateway/web/node_modules`, `npm ci` at build time) under `/ui/vendor/`, and `GET /unit_jobs/{id}/preview.png`
(a finished raster result as a PNG overlay).

The page shells and static files hold no data, so they are open (`PageOpenPaths`); everything the page shows comes
from the authenticated API (in AUTH_MODE token/oidc the page asks for a token and sends it as a bearer token, or
as `?token=` on the WebSocket), so a visitor without a token sees nothing but the empty shell.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway.auth import Principal
from gateway.auth_http import caller
from gateway.http_errors import error_response, error_responses
from gateway.http_tasks import JobId
from gateway.tasks import TaskService
from gateway.web.preview import PreviewCache, raster_href

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
VENDOR_DIRS = {"leaflet": WEB_DIR / "node_modules" / "leaflet" / "dist"}
_PAGE_PATH = re.compile(r"^/(?:tasks/[0-9]{1,18}/?)?$")
_NO_STORE = {"Cache-Control": "no-cache"}


class PageOpenPaths(Collection[str]):
    """The paths served without authentication: the given exact paths, the page shells and `/ui/` files."""

    def __init__(self, exact: Collection[str]) -> None:
        self.exact = exact

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (path in self.exact or path.startswith("/ui/")
                                          or _PAGE_PATH.match(path) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.exact)

    def __len__(self) -> int:
        return len(self.exact)


def mount_page(app: FastAPI, get_tasks: Callable[[], TaskService]) -> None:
    """Add the page routes, its static files and the preview endpoint to `app`. A front-end package that is not
    installed is logged, and its files are answered 503 saying how to install it (the API keeps working)."""
    app.include_router(create_page_router(get_tasks))
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    for name, folder in VENDOR_DIRS.items():
        if folder.is_dir():
            app.mount(f"/ui/vendor/{name}", StaticFiles(directory=folder), name=f"ui-vendor-{name}")
            continue
        message = f"the map page's npm package {name!r} is not installed: run `make web` (npm ci in gateway/web)"
        log.error(message)

        async def missing(path: str, message: str = message) -> JSONResponse:
            return error_response(503, "SERVICE_UNAVAILABLE", message)

        app.add_api_route(f"/ui/vendor/{name}/{{path:path}}", missing, include_in_schema=False)


def create_page_router(get_tasks: Callable[[], TaskService]) -> APIRouter:
    """The page shells and the preview endpoint."""
    router = APIRouter()
    previews = PreviewCache()

    @router.get("/", include_in_schema=False)
    async def task_list_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_NO_STORE)

    @router.get("/tasks/{task_id}", include_in_schema=False)
    async def task_map_page(task_id: str) -> FileResponse:
        return FileResponse(STATIC_DIR / "task.html", headers=_NO_STORE)

    @router.get("/unit_jobs/{job_id}/preview.png",
                summary="A finished job's raster result as a PNG in Web Mercator (map overlay)",
                response_class=Response,
                responses={200: {"content": {"image/png": {}},
                                 "description": "PNG; header X-Bounds = west,south,east,north (WGS84) of its corners"},
                           **error_responses(404, 409, 503)})
    async def job_preview(job_id: JobId, who: Annotated[Principal, Depends(caller)]) -> Response:
        results = await get_tasks().job_results(job_id, who)
        preview = await previews.get(raster_href(results))
        bounds = ",".join(f"{v:.9f}" for v in preview.bounds)
        return Response(preview.png, media_type="image/png",
                        headers={"X-Bounds": bounds, "Cache-Control": "private, max-age=3600"})

    return router

