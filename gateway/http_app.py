"""The HTTP bridge: APEx-compatible paths and JSON (FastAPI), served by uvicorn on port 8000."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from gateway.audit_api import create_audit_router
from gateway.auth_http import OPEN_PATHS, AuthMiddleware, caller
from gateway.deps import Dependencies
from gateway.http_credentials import create_credentials_router
from gateway.http_errors import error_responses, install_error_handlers
from gateway.http_sync import create_sync_router
from gateway.http_tasks import create_router
from gateway.middleware import RequestContextMiddleware
from gateway.web.routes import PageOpenPaths, mount_page
from gateway.ws import create_ws_router
from upscaling import metrics
from upscaling.errors import Unavailable
from upscaling.limits import check_aoi_vertices
from upscaling.tiles import tile_feature, tile_geometry


class TilesRequest(BaseModel):
    """Body of `POST /tiles`."""

    model_config = ConfigDict(extra="forbid")

    aoi: dict[str, Any] = Field(description="GeoJSON Polygon, MultiPolygon, Feature or FeatureCollection "
                                            "in WGS84 longitude/latitude")
    grid: str = Field("20x20km", description='Grid name "NxNkm", e.g. "20x20km" or "250x250km"')
    format: Literal["geometrycollection", "featurecollection"] = Field(
        "geometrycollection",
        description="geometrycollection (APEx: the clipped tiles) or featurecollection "
                    "(tiles with id, zone, EPSG, projected bounds and cell bbox)")
    full_cells: StrictBool = Field(False, description="return whole grid cells instead of AOI-clipped tiles")


class HealthBody(BaseModel):
    """`GET /health`: overall status and one entry per dependency."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "error"]


def create_app(deps: Dependencies) -> FastAPI:
    """Build the FastAPI application over the given dependencies."""
    app = FastAPI(
        title="Upscaling service",
        version="0.1.0",
        description="APEx-compatible HTTP bridge of the upscaling service.",
        responses=error_responses(422, 503),
    )
    install_error_handlers(app)
    # Added last = outermost: correlation id and body size limit first, then authentication.
    app.add_middleware(AuthMiddleware, authenticator=deps.authenticator, rate=deps.rate,
                       ws_messages_per_s=deps.limits.ws_messages_per_s,
                       ws_messages_burst=deps.limits.ws_messages_burst, open_paths=PageOpenPaths(OPEN_PATHS))
    app.add_middleware(RequestContextMiddleware, max_body_bytes=deps.settings.http_max_body_bytes)

    @app.get("/health", summary="Health of the gateway and every dependency",
             responses={200: {"model": HealthBody}, 503: {"model": HealthBody, "description": "A dependency fails"}})
    async def health() -> JSONResponse:
        body = await deps.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics", summary="Prometheus metrics of the gateway (and tasks, jobs, outbox and queue state)",
             response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}})
    async def prometheus_metrics() -> Response:
        return Response(await metrics.render(deps.cluster_state), media_type=CONTENT_TYPE_LATEST)

    @app.post("/tiles", status_code=201, summary="Split an AOI into the tiles of a kilometre grid",
              dependencies=[Depends(caller)], responses=error_responses(400, 413))
    async def tiles(body: TilesRequest) -> JSONResponse:
        if deps.tiler is None:
            raise Unavailable("the tiler is not connected yet")
        check_aoi_vertices(body.aoi, deps.limits.max_aoi_vertices)
        reply = await deps.tiler.tile_geojson(body.aoi, body.grid, body.full_cells)
        headers = {"X-Tile-Count": str(len(reply.tiles))}
        if reply.warnings:
            headers["X-Warnings"] = "; ".join(reply.warnings)[:1000]
        if body.format == "featurecollection":
            content: dict[str, Any] = {
                "type": "FeatureCollection",
                "features": [tile_feature(t, reply.grid.name) for t in reply.tiles],
                "grid": reply.grid.name,
                "warnings": list(reply.warnings),
            }
        else:
            content = {"type": "GeometryCollection", "geometries": [tile_geometry(t) for t in reply.tiles]}
        return JSONResponse(content, status_code=201, headers=headers)

    app.include_router(create_router(deps.task_service))
    app.include_router(create_sync_router(deps.sync_jobs))
    app.include_router(create_audit_router(deps.task_service))
    app.include_router(create_credentials_router(deps.backend_credentials))
    app.include_router(create_ws_router(deps.task_service, deps.events_hub, deps.watches))
    mount_page(app, deps.task_service)
    if deps.authenticator.reads_token:
        _declare_bearer_auth(app)
    return app


def _declare_bearer_auth(app: FastAPI) -> None:
    """Describe the configured authentication in the OpenAPI document: a bearer token on every operation but
    the open paths (health, metrics, the description itself)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http", "scheme": "bearer",
            "description": "an API key (AUTH_MODE=token) or an OIDC access token (AUTH_MODE=oidc); WebSockets "
                           "also accept it as the `token` query parameter"}
        schema["security"] = [{"bearerAuth": []}]
        for path, operations in schema.get("paths", {}).items():
            if path in OPEN_PATHS:
                for operation in operations.values():
                    operation["security"] = []
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
