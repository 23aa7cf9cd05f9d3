"""openEO error bodies (``{"id", "code", "message", "links"}``) and the exception that carries them."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping

from aiohttp import web

_ids = itertools.count(1)
_prefix = os.urandom(4).hex()


class ApiError(Exception):
    """An openEO API error; raised anywhere in a handler, answered by the error middleware."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.headers)


def error_body(code: str, message: str) -> dict:
    return {"id": f"r-{_prefix}-{next(_ids)}", "code": code, "message": message, "links": []}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(error_body(code, message)).encode(),
        content_type="application/json",
        headers=headers,
    )


def job_not_found(job_id: str) -> ApiError:
    return ApiError(404, "JobNotFound", f"The batch job '{job_id}' does not exist.")


def job_not_finished(job_id: str, status: str) -> ApiError:
    return ApiError(
        400,
        "JobNotFinished",
        f"Batch job '{job_id}' has not finished computing the results yet (status '{status}').",
    )


def job_locked(job_id: str, status: str) -> ApiError:
    return ApiError(400, "JobLocked", f"Batch job '{job_id}' is {status} and can't be modified now.")


def body_invalid(message: str) -> ApiError:
    return ApiError(400, "BodyInvalid", message)


def graph_invalid(message: str) -> ApiError:
    return ApiError(400, "ProcessGraphInvalid", message)
