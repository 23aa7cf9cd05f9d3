"""Exceptions of the client: every failed call raises an `UpscalingError` carrying the server's message."""

from __future__ import annotations

import grpc


class UpscalingError(Exception):
    """A call the service refused or could not answer.

    `message` is the server's text, `code` the gRPC status name (e.g. ``"NOT_FOUND"``) and `error_code` the
    service's error code when it sent one (e.g. ``"TOO_MANY_TILES"``)."""

    def __init__(self, message: str, code: str = "UNKNOWN", error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.error_code = error_code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class InvalidArgumentError(UpscalingError):
    """The request was rejected as invalid (bad AOI, unknown grid, bad parameters, ...)."""


class NotFoundError(UpscalingError):
    """No such task or job (or not yours)."""


class AuthenticationError(UpscalingError):
    """Missing, wrong or expired token, or not allowed."""


class LimitExceededError(UpscalingError):
    """A size or per-user limit was exceeded; `error_code` names it."""


class ConflictError(UpscalingError):
    """The request does not fit the current state (e.g. the results of a job that has not finished)."""


class UnavailableError(UpscalingError):
    """The service could not be reached or answered too late."""


class DownloadError(UpscalingError):
    """An asset could not be downloaded or did not match its expected size or checksum."""


class MosaicError(UpscalingError):
    """The results cannot be assembled into one product."""


_BY_CODE: dict[grpc.StatusCode, type[UpscalingError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceededError,
    grpc.StatusCode.FAILED_PRECONDITION: ConflictError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}


def from_rpc_error(error: grpc.RpcError) -> UpscalingError:
    """The exception for a failed gRPC call, with the server's message and error code."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    error_code = None
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == "error-code":
            error_code = value if isinstance(value, str) else value.decode()
    return _BY_CODE.get(code, UpscalingError)(message, code.name if code else "UNKNOWN", error_code)
