"""Errors a service raises on purpose, each with its gRPC status code, HTTP status and APEx error code."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """Base of the errors that reach a client with a clear message instead of INTERNAL."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500
    error_code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        # Messages quote client input, which may hold lone surrogates (from JSON escapes such as "\udfff") that
        # neither gRPC status details nor a UTF-8 JSON body can carry: escape them.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.message = message
        if error_code:
            self.error_code = error_code


class InvalidArgument(ServiceError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422
    error_code = "VALIDATION_ERROR"


class NotFound(ServiceError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    error_code = "NOT_FOUND"


class ResourceExhausted(ServiceError):
    """A size limit of one request (body, AOI vertices, tiles, dimension values): HTTP 413."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413
    error_code = "LIMIT_EXCEEDED"


class TooManyRequests(ResourceExhausted):
    """A limit of a caller over time (tasks in flight, subscriptions, request rate): HTTP 429."""

    http_status = 429
    error_code = "TOO_MANY_REQUESTS"


class Unauthenticated(ServiceError):
    """Missing or invalid credentials (gRPC UNAUTHENTICATED, HTTP 401, WebSocket close 1008)."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    error_code = "AUTHENTICATION_FAILED"


class PermissionDenied(ServiceError):
    """An authenticated caller without the right to do this (e.g. not an administrator)."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    error_code = "FORBIDDEN"


class FailedPrecondition(ServiceError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    error_code = "CONFLICT"


class Unavailable(ServiceError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    error_code = "SERVICE_UNAVAILABLE"


# How a gRPC status received from another service is passed on over HTTP.
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (422, "VALIDATION_ERROR"),
    grpc.StatusCode.NOT_FOUND: (404, "NOT_FOUND"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (413, "LIMIT_EXCEEDED"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "CONFLICT"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "AUTHENTICATION_FAILED"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "FORBIDDEN"),
    grpc.StatusCode.UNAVAILABLE: (503, "SERVICE_UNAVAILABLE"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "TIMEOUT"),
}
