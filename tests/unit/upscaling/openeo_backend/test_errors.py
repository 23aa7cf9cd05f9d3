"""Classification of failed backend calls: every kind, with the backend's code and HTTP status."""

from __future__ import annotations

import pytest
import requests
from openeo.rest import OpenEoApiError, OpenEoApiPlainError
from urllib3.exceptions import MaxRetryError, NewConnectionError

from upscaling.openeo_backend.errors import (
    BackendAuthError,
    BackendError,
    BackendLimitError,
    BackendPermanentError,
    BackendTimeoutError,
    BackendTransientError,
    BackendUnreachableError,
    ErrorKind,
    from_answer,
    from_exception,
    kind_of,
)


def api_error(status: int, code: str, message: str = "msg") -> OpenEoApiError:
    return OpenEoApiError(http_status_code=status, code=code, message=message)


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} error", response=response)


@pytest.mark.parametrize(("status", "code", "kind"), [
    (429, "", ErrorKind.LIMIT),
    (429, "TooManyRequests", ErrorKind.LIMIT),
    (400, "ConcurrentJobLimit", ErrorKind.LIMIT),   # the code decides, whatever the status
    (500, "TooManyRequests", ErrorKind.LIMIT),
    (401, "TokenInvalid", ErrorKind.AUTH),
    (403, "PermissionsInsufficient", ErrorKind.AUTH),
    (500, "Internal", ErrorKind.TRANSIENT),
    (502, "", ErrorKind.TRANSIENT),
    (503, "ServiceUnavailable", ErrorKind.TRANSIENT),
    (504, "", ErrorKind.TRANSIENT),
    (408, "", ErrorKind.TRANSIENT),
    (425, "", ErrorKind.TRANSIENT),
    (None, "", ErrorKind.TRANSIENT),               # an answer without a status
    (400, "ProcessGraphInvalid", ErrorKind.PERMANENT),
    (404, "JobNotFound", ErrorKind.PERMANENT),
    (422, "", ErrorKind.PERMANENT),
])
def test_kind_of_an_answer(status: int | None, code: str, kind: ErrorKind) -> None:
    assert kind_of(status, code) is kind
    error = from_answer(status, code, "text")
    assert error.kind is kind and error.code == code and error.http_status == status


@pytest.mark.parametrize(("exc", "cls", "code", "status", "label"), [
    (api_error(429, "TooManyRequests"), BackendLimitError, "TooManyRequests", 429, "TooManyRequests"),
    (api_error(400, "ConcurrentJobLimit"), BackendLimitError, "ConcurrentJobLimit", 400, "ConcurrentJobLimit"),
    (api_error(401, "AuthenticationRequired"), BackendAuthError, "AuthenticationRequired", 401,
     "AuthenticationRequired"),
    (api_error(403, "TokenInvalid"), BackendAuthError, "TokenInvalid", 403, "TokenInvalid"),
    (api_error(503, "ServiceUnavailable"), BackendTransientError, "ServiceUnavailable", 503, "ServiceUnavailable"),
    (api_error(400, "ProcessUnsupported"), BackendPermanentError, "ProcessUnsupported", 400, "ProcessUnsupported"),
    (OpenEoApiPlainError("Bad Gateway", http_status_code=502), BackendTransientError, "", 502, "502"),
    (OpenEoApiPlainError("Unauthorized", http_status_code=401), BackendAuthError, "", 401, "401"),
    (OpenEoApiPlainError("Not Found", http_status_code=404), BackendPermanentError, "", 404, "404"),
    (http_error(503), BackendTransientError, "", 503, "503"),
    (http_error(429), BackendLimitError, "", 429, "429"),
    (http_error(400), BackendPermanentError, "", 400, "400"),
    (requests.ReadTimeout("read timed out"), BackendTimeoutError, "", None, "ReadTimeout"),
    (requests.ConnectTimeout("connect timed out"), BackendTimeoutError, "", None, "ConnectTimeout"),
    (TimeoutError("timed out"), BackendTimeoutError, "", None, "TimeoutError"),
    (requests.ConnectionError("refused"), BackendTransientError, "", None, "ConnectionError"),
    (requests.ConnectionError(MaxRetryError(None, "/jobs", NewConnectionError(None, "refused"))),  # type: ignore[arg-type]
     BackendUnreachableError, "", None, "ConnectionError"),
    (ConnectionResetError("reset"), BackendTransientError, "", None, "ConnectionResetError"),
    (ValueError("not JSON"), BackendPermanentError, "", None, "ValueError"),
])
def test_from_exception(exc: Exception, cls: type[BackendError], code: str, status: int | None,
                        label: str) -> None:
    error = from_exception(exc)
    assert type(error) is cls
    assert error.code == code and error.http_status == status and error.label == label
    assert error.__cause__ is exc
    assert from_exception(error) is error  # already typed: passed through


def test_timeouts_are_transient() -> None:
    error = from_exception(requests.ReadTimeout("slow"))
    assert isinstance(error, BackendTransientError) and error.kind is ErrorKind.TRANSIENT


def test_message_names_the_backends_code_and_is_bounded() -> None:
    assert str(from_exception(api_error(400, "ProcessGraphInvalid", "no such process"))) == \
        "ProcessGraphInvalid: no such process"
    assert str(from_exception(OpenEoApiPlainError("Bad Gateway", http_status_code=502))) == "[502] Bad Gateway"
    assert str(from_exception(RuntimeError())) == "RuntimeError"
    long = str(from_exception(api_error(400, "X", "y" * 2000)))
    assert len(long) == 500 and long.endswith("...")
