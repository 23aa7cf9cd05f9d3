"""The aiohttp application: openEO API 1.2 routes, the UDP catalogue and (optionally) the admin endpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from local_openeo import discovery, jobs_api, sync_api
from local_openeo.admin import add_admin_routes
from local_openeo.backend import BACKEND, Backend
from local_openeo.config import API_PREFIX, Settings
from local_openeo.errors import ApiError, error_response
from local_openeo.oidc import oidc_middleware

log = logging.getLogger("local_openeo")


@web.middleware
async def error_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    """openEO error bodies for ApiError, unknown routes and unexpected exceptions."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPNotFound:
        return error_response(404, "NotFound", f"No such resource: {request.method} {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        return error_response(
            405,
            "MethodNotSupported",
            f"Method {request.method} is not supported for {request.path}.",
            {"Allow": ", ".join(sorted(exc.allowed_methods))},
        )
    except web.HTTPException:
        raise
    except ConnectionResetError:
        raise  # the client went away while we read its request
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "Internal", "Internal error of the local openEO backend (see its log).")


def create_app(settings: Settings) -> web.Application:
    """Build the application; the admin endpoints exist only when an admin token is configured."""
    backend = Backend(settings)
    app = web.Application(middlewares=[error_middleware, oidc_middleware(backend.oidc)],
                          client_max_size=64 * 1024 * 1024)
    app[BACKEND] = backend
    api, d, j = API_PREFIX, discovery, jobs_api
    app.add_routes(
        [
            web.get("/", d.root),
            web.get("/.well-known/openeo", d.well_known),
            web.get(api, d.capabilities),
            web.get(f"{api}/", d.capabilities),
            web.get(f"{api}/credentials/basic", d.credentials_basic),
            web.get(f"{api}/credentials/oidc", d.credentials_oidc),
            web.get(f"{api}/me", d.me),
            web.get(f"{api}/file_formats", d.file_formats),
            web.get(f"{api}/processes", d.processes),
            web.get(f"{api}/collections", d.collections),
            web.get(f"{api}/collections/{{collection_id}}", d.collections),
            web.post(f"{api}/validation", d.validation),
            web.post(f"{api}/result", sync_api.compute_result),
            web.get(f"{api}/jobs", j.list_jobs),
            web.post(f"{api}/jobs", j.create_job),
            web.get(f"{api}/jobs/{{job_id}}", j.get_job),
            web.patch(f"{api}/jobs/{{job_id}}", j.update_job),
            web.delete(f"{api}/jobs/{{job_id}}", j.delete_job),
            web.get(f"{api}/jobs/{{job_id}}/results", j.get_results),
            web.post(f"{api}/jobs/{{job_id}}/results", j.start_job),
            web.delete(f"{api}/jobs/{{job_id}}/results", j.cancel_job),
            web.get(f"{api}/jobs/{{job_id}}/results/assets/{{signature}}/{{name}}", j.download_asset),
            web.get(f"{api}/jobs/{{job_id}}/logs", j.get_logs),
            web.get("/udp", d.udp_listing),
            web.get("/udp/", d.udp_listing),
            web.get("/udp/{name}.json", d.udp_document),
        ]
    )
    if settings.admin_token:
        add_admin_routes(app, backend)
    backend.endpoints = _endpoints(app)

    async def close(_: web.Application) -> None:
        await backend.resolver.close()

    app.on_cleanup.append(close)
    return app


def _endpoints(app: web.Application) -> list[dict]:
    """Every route under the versioned base, as capabilities ``endpoints``."""
    methods: dict[str, set[str]] = {}
    for resource in app.router.resources():
        canonical = resource.canonical
        if canonical != API_PREFIX and not canonical.startswith(API_PREFIX + "/"):
            continue
        path = canonical[len(API_PREFIX) :] or "/"
        methods.setdefault(path, set()).update(r.method for r in resource if r.method not in ("HEAD", "*"))
    return [{"path": path, "methods": sorted(found)} for path, found in sorted(methods.items())]
