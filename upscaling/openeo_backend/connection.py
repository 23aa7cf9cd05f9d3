"""Connections to openEO backends and the auth policy.

- One `openeo` Connection per backend per thread (requests sessions are not shared across threads), opened on
  first use.
- One login per backend for all threads: the first thread that needs the backend authenticates (basic or OIDC
  client credentials) and every thread's connection uses that token.
- `call` runs one operation: every failure becomes a typed `BackendError`; an authentication error (an expired
  or revoked token) drops the shared token, logs in again once (the first thread to get there does it, the others
  take its new token) and repeats the operation once.

Requests made while a correlation id is set (`upscaling.logs.correlation_id`, copied into the worker thread by
the caller) carry it as the `X-Correlation-ID` header.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from openeo.rest.connection import Connection
from requests.auth import AuthBase

from upscaling import metrics
from upscaling.backends import BackendAuth, BackendConfig
from upscaling.logs import correlation_id
from upscaling.openeo_backend.errors import BackendAuthError, from_exception

CORRELATION_HEADER = "X-Correlation-ID"

log = logging.getLogger(__name__)
T = TypeVar("T")

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass
class _Login:
    """A backend's authentication, shared by the connections of every thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    auth: AuthBase | None = None  # None: nobody logged in yet, or the token was refused


_local = threading.local()
_logins: dict[str, _Login] = {}
_logins_lock = threading.Lock()


def _cache() -> dict[str, Connection]:
    cache: dict[str, Connection] | None = getattr(_local, "connections", None)
    if cache is None:
        cache = _local.connections = {}
    return cache


def _login_of(backend: BackendConfig) -> _Login:
    with _logins_lock:
        return _logins.setdefault(backend.endpoint, _Login())


def _open(backend: BackendConfig, timeout_s: float) -> Connection:
    # The client annotates the timeout as int seconds; requests takes any float.
    conn = Connection(backend.url, default_timeout=timeout_s, auto_validate=False)  # type: ignore[arg-type]
    if not any(os.environ.get(name) for name in _PROXY_VARIABLES):
        # No proxy configured: skip requests' per-request environment lookups (proxies, .netrc).
        conn.session.trust_env = False
    return conn


def _authenticate(conn: Connection, auth: BackendAuth) -> None:
    if auth.method == "basic":
        conn.authenticate_basic(auth.username, auth.password)
    elif auth.method == "oidc_client_credentials":
        conn.authenticate_oidc_client_credentials(client_id=auth.client_id, client_secret=auth.client_secret,
                                                  provider_id=auth.provider_id)


def connect(backend: BackendConfig, timeout_s: float) -> Connection:
    """This thread's connection to `backend` with the backend's shared login (logging in when nobody has) and the
    current correlation id as header. Blocking; raises the openeo client's exceptions (`call` types them)."""
    cache = _cache()
    conn = cache.get(backend.endpoint)
    if conn is None:
        conn = cache[backend.endpoint] = _open(backend, timeout_s)
    login = _login_of(backend)
    auth = login.auth
    if auth is None:
        with login.lock:
            if login.auth is None:
                _authenticate(conn, backend.auth)
                login.auth = conn.auth
            auth = login.auth
    if conn.auth is not auth:
        # Only on a change: setting it clears the client's capabilities and file-formats cache, which would cost
        # two more requests (`GET /`, `GET /file_formats`) for every job created.
        conn.auth = auth
    cid = correlation_id.get()
    if cid:
        conn.session.headers[CORRELATION_HEADER] = cid
    else:
        conn.session.headers.pop(CORRELATION_HEADER, None)
    return conn


def forget(backend: BackendConfig, refused: AuthBase | None = None) -> None:
    """Drop the backend's shared login (only if it still is `refused`, when given): the next `connect` of any
    thread logs in again."""
    login = _login_of(backend)
    with login.lock:
        if refused is None or login.auth is refused:
            login.auth = None


def call(backend: BackendConfig, timeout_s: float, operation: Callable[[Connection], T]) -> T:
    """Run `operation` on this thread's connection to `backend`. Every failure is raised as a typed
    `BackendError`. An authentication error logs in again and runs the operation once more (such a request was
    refused, so repeating it cannot do anything twice); it is counted as a backend error and an `auth` retry."""
    used: AuthBase | None = None
    try:
        conn = connect(backend, timeout_s)
        used = conn.auth
        return operation(conn)
    except Exception as exc:
        error = from_exception(exc)
        if not isinstance(error, BackendAuthError):
            raise error from exc
    forget(backend, used)
    metrics.backend_error(backend.endpoint, error)
    metrics.RETRIES.labels(backend.endpoint, "auth").inc()
    log.warning("backend refused the credentials; authenticating again",
                extra={"backend": backend.endpoint, "error": str(error)})
    try:
        return operation(connect(backend, timeout_s))
    except Exception as exc:
        raise from_exception(exc) from exc
