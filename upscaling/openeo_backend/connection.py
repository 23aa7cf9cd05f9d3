"""Connections to openEO backends and the auth policy: one authenticated `Connection` per backend per
thread (requests sessions are not shared across threads), and `call`, which runs one operation on it.

Requests made while a correlation id is set (`upscaling.logs.correlation_id`, copied into the worker thread by
the caller) carry it as the `X-Correlation-ID` header.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from openeo.rest.connection import Connection

from upscaling import metrics
from upscaling.backends import BackendConfig
from upscaling.logs import correlation_id
from upscaling.openeo_backend.errors import BackendAuthError, from_exception

CORRELATION_HEADER = "X-Correlation-ID"

log = logging.getLogger(__name__)
T = TypeVar("T")

_local = threading.local()
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _cache() -> dict[str, Connection]:
    cache: dict[str, Connection] | None = getattr(_local, "connections", None)
    if cache is None:
        cache = _local.connections = {}
    return cache


def _open(backend: BackendConfig, timeout_s: float) -> Connection:
    # The client annotates the timeout as int seconds; requests takes any float.
    conn = Connection(backend.url, default_timeout=timeout_s, auto_validate=False)  # type: ignore[arg-type]
    if not any(os.environ.get(name) for name in _PROXY_VARIABLES):
        # No proxy configured: skip requests' per-request environment lookups (proxies, .netrc).
        conn.session.trust_env = False
    auth = backend.auth
    if auth.method == "basic":
        conn.authenticate_basic(auth.username, auth.password)
    elif auth.method == "oidc_client_credentials":
        conn.authenticate_oidc_client_credentials(client_id=auth.client_id, client_secret=auth.client_secret,
                                                  provider_id=auth.provider_id)
    return conn


def connect(backend: BackendConfig, timeout_s: float) -> Connection:
    """This thread's authenticated connection to `backend` (opened on first use), with the current correlation
    id as header. Blocking; raises the openeo client's exceptions (use `call` for typed errors)."""
    cache = _cache()
    conn = cache.get(backend.endpoint)
    if conn is None:
        conn = cache[backend.endpoint] = _open(backend, timeout_s)
    cid = correlation_id.get()
    if cid:
        conn.session.headers[CORRELATION_HEADER] = cid
    else:
        conn.session.headers.pop(CORRELATION_HEADER, None)
    return conn


def forget(backend: BackendConfig) -> None:
    """Drop this thread's connection to `backend` (the next `connect` authenticates again)."""
    _cache().pop(backend.endpoint, None)


def call(backend: BackendConfig, timeout_s: float, operation: Callable[[Connection], T]) -> T:
    """Run `operation` on this thread's connection to `backend`. Every failure is raised as a typed
    `BackendError`. An authentication error (an expired token, a dropped session) authenticates again and runs the
    operation once more (such a request was refused, so repeating it cannot do anything twice); it is counted as
    a backend error and an `auth` retry."""
    try:
        return operation(connect(backend, timeout_s))
    except Exception as exc:
        error = from_exception(exc)
        if not isinstance(error, BackendAuthError):
            raise error from exc
    forget(backend)
    metrics.backend_error(backend.endpoint, error)
    metrics.RETRIES.labels(backend.endpoint, "auth").inc()
    log.warning("backend refused the credentials; authenticating again",
                extra={"backend": backend.endpoint, "error": str(error)})
    try:
        return operation(connect(backend, timeout_s))
    except Exception as exc:
        raise from_exception(exc) from exc
