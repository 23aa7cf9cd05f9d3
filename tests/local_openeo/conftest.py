"""Fixtures: the local openEO backend as a real subprocess, driven through the openeo client and /admin."""

from __future__ import annotations

from collections.abc import Iterator

import openeo
import pytest
from local_openeo_support import ADMIN_TOKEN, USERS, LocalBackend, start_backend, stop_backend


@pytest.fixture(scope="session")
def backend_process() -> Iterator[LocalBackend]:
    process, url = start_backend(
        "--admin-token",
        ADMIN_TOKEN,
        "--users",
        ",".join(f"{user}:{password}" for user, password in USERS.items()),
        "--queue-seconds",
        "0.1",
        "--run-seconds",
        "0.2",
    )
    try:
        yield LocalBackend(url)
    finally:
        stop_backend(process)


@pytest.fixture
def backend(backend_process: LocalBackend) -> LocalBackend:
    """The shared backend, reset to the baseline settings with no jobs and zeroed counters."""
    backend_process.reset()
    return backend_process


@pytest.fixture
def con(backend: LocalBackend) -> openeo.Connection:
    return backend.connect()
