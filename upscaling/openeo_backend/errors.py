"""Typed errors of backend calls and the one rule that classifies a failed call.

A failed call is a `BackendError` of one of four kinds, each answering "what do we do now":

- `BackendLimitError`: the backend is over a limit (HTTP 429, `ConcurrentJobLimit`, `TooManyRequests`): wait
  and retry, never fail the job;
- `BackendTransientError`: connection error, timeout (`BackendTimeoutError`), 5xx, 408, 425: retry with
  backoff, up to a maximum; `BackendUnreachableError` when no connection was made (the request did nothing);
- `BackendAuthError`: 401/403: re-authenticate once (done by `connection.call`), then give up;
- `BackendPermanentError`: any other error (other 4xx, a malformed answer): the job fails with the backend's
  message.

Every error carries the backend's openEO error `code` (or ""), the HTTP status (or None) and the original
exception as `__cause__`. Importing this module does not load the openeo client (0.4 s): `upscaling.metrics`
imports it in every service, and only `from_exception`, which runs where backend calls fail, needs the client's
exception classes.
"""

from __future__ import annotations

import enum
from typing import ClassVar

# openEO error codes meaning "too many jobs or requests right now": wait and retry, never fail.
LIMIT_CODES = frozenset({"ConcurrentJobLimit", "TooManyRequests"})
# HTTP statuses worth retrying besides 5xx.
TRANSIENT_STATUSES = frozenset({408, 425})
AUTH_STATUSES = frozenset({401, 403})
MAX_MESSAGE = 500


class ErrorKind(enum.Enum):
    """How a caller reacts to a failed backend call (also the `kind` label of the error metrics)."""

    LIMIT = "limit"
    TRANSIENT = "transient"
    AUTH = "auth"
    PERMANENT = "permanent"


class BackendError(Exception):
    """A backend call failed. `str()` is a short message for a job's `message`: "<code>: <message>" when the
    backend sent an openEO error."""

    kind: ClassVar[ErrorKind] = ErrorKind.PERMANENT

    def __init__(self, message: str, *, code: str = "", http_status: int | None = None) -> None:
        text = f"{code}: {message}" if code else message
        super().__init__(text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "...")
        self.code = code
        self.http_status = http_status

    @property
    def label(self) -> str:
        """The backend's error code, else the HTTP status, else the class name of the original exception."""
        if self.code:
            return self.code
        if self.http_status is not None:
            return str(self.http_status)
        cause = self.__cause__
        return type(cause if cause is not None else self).__name__


class BackendLimitError(BackendError):
    kind = ErrorKind.LIMIT


class BackendTransientError(BackendError):
    kind = ErrorKind.TRANSIENT


class BackendTimeoutError(BackendTransientError):
    """No answer in time: the backend may still act on the request."""


class BackendUnreachableError(BackendTransientError):
    """No connection to the backend (refused, name not resolved): the request was never sent, so it did nothing.
    (A connect timeout stays a `BackendTimeoutError`.)"""


class BackendAuthError(BackendError):
    kind = ErrorKind.AUTH


class BackendPermanentError(BackendError):
    kind = ErrorKind.PERMANENT


_BY_KIND: dict[ErrorKind, type[BackendError]] = {
    ErrorKind.LIMIT: BackendLimitError,
    ErrorKind.TRANSIENT: BackendTransientError,
    ErrorKind.AUTH: BackendAuthError,
    ErrorKind.PERMANENT: BackendPermanentError,
}


def kind_of(http_status: int | None, code: str = "") -> ErrorKind:
    """The kind of an error answer of the backend (`http_status` None: an answer without a status)."""
    if http_status == 429 or code in LIMIT_CODES:
        return ErrorKind.LIMIT
    if http_status in AUTH_STATUSES:
        return ErrorKind.AUTH
    if http_status is None or http_status >= 500 or http_status in TRANSIENT_STATUSES:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def from_answer(http_status: int | None, code: str, message: str) -> BackendError:
    """The typed error of an error answer of the backend."""
    return _BY_KIND[kind_of(http_status, code)](message, code=code, http_status=http_status)


def from_exception(exc: BaseException) -> BackendError:
    """The typed error of an exception raised by a backend call (itself when it already is one); the original
    exception becomes its `__cause__`."""
    if isinstance(exc, BackendError):
        return exc
    error = _classify(exc)
    error.__cause__ = exc
    return error


def _classify(exc: BaseException) -> BackendError:
    import requests
    from openeo.rest import OpenEoApiError, OpenEoApiPlainError

    if isinstance(exc, OpenEoApiError):
        return from_answer(exc.http_status_code, exc.code or "", exc.message or str(exc))
    if isinstance(exc, OpenEoApiPlainError):
        return from_answer(exc.http_status_code, "", str(exc))  # "[status] message"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return from_answer(exc.response.status_code, "", str(exc))
    text = str(exc) or type(exc).__name__
    if _not_connected(exc):
        return BackendUnreachableError(text)
    if isinstance(exc, requests.Timeout | TimeoutError):
        return BackendTimeoutError(text)
    if isinstance(exc, requests.RequestException | ConnectionError):
        return BackendTransientError(text)
    return BackendPermanentError(text)


def _not_connected(exc: BaseException) -> bool:
    """Whether a requests exception says the connection was refused or the name not resolved (nothing sent)."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if isinstance(exc, requests.Timeout) or not isinstance(exc, requests.ConnectionError) or not exc.args:
        return False
    cause = exc.args[0]
    return isinstance(cause, NewConnectionError) or isinstance(getattr(cause, "reason", None), NewConnectionError)
