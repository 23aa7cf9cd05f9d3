"""The APEx error envelope and the handlers that turn every error into it."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from upscaling.errors import ServiceError
from upscaling.logs import correlation_id

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "BAD_REQUEST", 401: "AUTHENTICATION_FAILED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
               422: "VALIDATION_ERROR", 429: "TOO_MANY_REQUESTS"}


class ErrorBody(BaseModel):
    """The APEx error envelope every 4xx/5xx answer carries."""

    status: Literal["error"]
    error_code: str = Field(description="e.g. VALIDATION_ERROR, TASK_NOT_FOUND, PAYLOAD_TOO_LARGE")
    message: str
    details: Any = None
    request_id: str | None = Field(None, description="correlation id of the request (X-Correlation-ID)")


_DESCRIPTIONS = {
    400: "Malformed request (the body is not JSON)",
    404: "No such task or job",
    409: "Not possible in the current state (e.g. already terminal, not finished)",
    413: "Request body larger than the configured limit",
    429: "A limit of the caller over time (requests per second, tasks in flight, running synchronous jobs)",
    422: "Invalid request: the message says which field and why (also: limits such as too many tiles)",
    502: "The openEO backend failed (its message is quoted)",
    503: "A dependency (tiler, database, broker) is not available yet",
    504: "The openEO backend did not answer in time",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting the given error statuses with the APEx envelope."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def error_body(error_code: str, message: str, details: Any = None) -> dict[str, Any]:
    """`{"status":"error","error_code","message","details","request_id"}` as APEx answers."""
    return {"status": "error", "error_code": error_code, "message": message, "details": details,
            "request_id": correlation_id.get()}


def error_response(status: int, error_code: str, message: str, details: Any = None) -> JSONResponse:
    """A JSONResponse carrying the APEx error envelope."""
    return JSONResponse(error_body(error_code, message, details), status_code=status)


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so every error leaves as the APEx envelope."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.http_status, exc.error_code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return error_response(422, "VALIDATION_ERROR", _describe_validation(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL_ERROR", "internal error; quote the request_id when reporting it")
