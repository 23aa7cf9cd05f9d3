"""Connections to openEO backends through the `openeo` client (synchronous: call only from worker threads).

One authenticated `openeo.Connection` per backend per thread (requests sessions are not shared across
threads). Requests made while a correlation id is set (`upscaling.logs.correlation_id`, copied into the worker
thread by the caller) carry it as the `X-Correlation-ID` header.
"""

from __future__ import annotations

import os
import threading

import openeo

from upscaling.backends import BackendConfig
from upscaling.logs import correlation_id

CORRELATION_HEADER = "X-Correlation-ID"

_local = threading.local()
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def connect(backend: BackendConfig, timeout_s: float = 30.0) -> openeo.Connection:
    """An authenticated connection to `backend`, cached per thread. Blocking: run in a worker thread."""
    cache: dict[str, openeo.Connection] = getattr(_local, "connections", None) or {}
    _local.connections = cache
    conn = cache.get(backend.endpoint)
    if conn is None:
        conn = openeo.connect(backend.url, default_timeout=timeout_s, auto_validate=False)
        if not any(os.environ.get(name) for name in _PROXY_VARIABLES):
            # No proxy configured: skip requests' per-request environment lookups (proxies, .netrc).
            conn.session.trust_env = False
        auth = backend.auth
        if auth.method == "basic":
            conn.authenticate_basic(auth.username, auth.password)
        elif auth.method == "oidc_client_credentials":
            conn.authenticate_oidc_client_credentials(client_id=auth.client_id, client_secret=auth.client_secret,
                                                      provider_id=auth.provider_id)
        cache[backend.endpoint] = conn
    cid = correlation_id.get()
    if cid:
        conn.session.headers[CORRELATION_HEADER] = cid
    else:
        conn.session.headers.pop(CORRELATION_HEADER, None)
    return conn


def forget(backend: BackendConfig) -> None:
    """Drop this thread's cached connection (e.g. after an authentication error)."""
    cache: dict[str, openeo.Connection] = getattr(_local, "connections", None) or {}
    cache.pop(backend.endpoint, None)
