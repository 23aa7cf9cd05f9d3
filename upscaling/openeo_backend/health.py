"""The health check of a backend: `GET /` (its capabilities document), never cached."""

from __future__ import annotations

from upscaling.backends import BackendConfig
from upscaling.openeo_backend import connection


def check(backend: BackendConfig, timeout_s: float) -> None:
    """Ask the backend for its capabilities; raises a typed `BackendError` unless it answers 200."""
    connection.call(backend, timeout_s, lambda conn: conn.get("/", expected_status=200))
