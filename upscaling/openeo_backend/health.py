"""The health check of a backend: `GET /` (its capabilities document), never cached and never retried (the
openeo client's session retries 5xx answers with backoff, which would hide an outage for many seconds)."""

from __future__ import annotations

from upscaling.backends import BackendConfig
from upscaling.openeo_backend.errors import from_answer, from_exception


def check(backend: BackendConfig, timeout_s: float) -> None:
    """Ask the backend for its capabilities once; raises a typed `BackendError` unless it answers 200."""
    import requests

    try:
        response = requests.get(f"{backend.url.rstrip('/')}/", timeout=timeout_s)
    except Exception as exc:
        raise from_exception(exc) from exc
    if response.status_code != 200:
        raise from_answer(response.status_code, "", f"health check: HTTP {response.status_code}")
