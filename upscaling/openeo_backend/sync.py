"""Synchronous processing on a backend (openEO `POST /result`): the UDP call in, the result file out. Blocking
and run through `connection.call` (typed errors, one re-authentication) like every backend call: call it from a
worker thread.

The answer is read as a stream and given up as soon as it exceeds the caller's byte limit (`ResultTooLarge`) or
the whole call exceeds its time (`BackendTimeoutError`), so neither a huge result nor a slow trickle holds a
worker for longer than asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from upscaling.backends import BackendConfig
from upscaling.jobs.messages import openeo_format
from upscaling.openeo_backend import connection
from upscaling.openeo_backend.connection import SERVICE, Account
from upscaling.openeo_backend.errors import BackendPermanentError, BackendTimeoutError
from upscaling.openeo_backend.jobs import JobSpec

CHUNK_BYTES = 1 << 16
DEFAULT_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class SyncResult:
    """The result file of a synchronous request and its media type (as the backend sent them)."""

    content: bytes
    media_type: str


class ResultTooLarge(BackendPermanentError):
    """The backend's result is larger than the caller accepts (`size`: its declared size, or None when it was
    cut off while reading). A `BackendError`, so that `connection.call` passes it on unchanged."""

    def __init__(self, limit: int, size: int | None) -> None:
        detail = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(f"the result is {detail}, more than the limit of {limit} bytes")
        self.limit = limit
        self.size = size


def compute_result(backend: BackendConfig, timeout_s: float, spec: JobSpec, max_bytes: int,
                   account: Account = SERVICE) -> SyncResult:
    """Run the UDP call of `spec` synchronously (`POST /result`, its result saved in `spec.format`) as `account`
    and return the result; at most `max_bytes` are read (`ResultTooLarge` beyond) and the call takes at most
    `timeout_s` seconds (`BackendTimeoutError` beyond)."""
    deadline = time.monotonic() + timeout_s

    def compute(conn: Any) -> SyncResult:
        cube = conn.datacube_from_process(spec.process_id, namespace=spec.namespace or None, **spec.arguments)
        if spec.format:
            cube = cube.save_result(format=openeo_format(spec.format))
        body = {"process": {"process_graph": cube.flat_graph()}}
        response = conn.post("/result", json=body, expected_status=200, stream=True, timeout=timeout_s)
        try:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ResultTooLarge(max_bytes, int(declared))
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise ResultTooLarge(max_bytes, None)
                if time.monotonic() > deadline:
                    raise BackendTimeoutError(f"the synchronous result took longer than {timeout_s:g} s")
                chunks.append(chunk)
        finally:
            response.close()
        media_type = response.headers.get("Content-Type") or DEFAULT_MEDIA_TYPE
        return SyncResult(b"".join(chunks), media_type)

    return connection.call(backend, timeout_s, compute, account)
