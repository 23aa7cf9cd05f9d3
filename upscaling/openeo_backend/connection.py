"""Connections to openEO backends and the auth policy, per backend *account*.

- An `Account` is the backend's service account (`SERVICE`, the configured `auth`) or a user's own (`owner` and
  the user's current access token, from `upscaling.credentials`: `Bearer oidc/<provider_id>/<token>`, as the
  openeo client sends it).
- One `openeo` Connection per backend account per thread (requests sessions are not shared across threads),
  opened on first use.
- One login per backend for all threads for the service account: the first thread that needs the backend
  authenticates (basic or OIDC client credentials) and every thread's connection uses that token. A user's
  account needs no login: its token is set on the connection (the dispatcher and monitor refresh it in the store
  before it expires).
- `call` runs one operation: every failure becomes a typed `BackendError`; for the service account an
  authentication error (an expired or revoked token) drops the shared token, logs in again once (the first thread
  to get there does it, the others take its new token) and repeats the operation once; for a user's account it
  is raised (the caller refreshes the user's token).

Requests made while a correlation id is set (`upscaling.logs.correlation_id`, copied into the worker thread by
the caller) carry it as the `X-Correlation-ID` header.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from openeo.rest.auth.auth import OidcBearerAuth
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


@dataclass(frozen=True)
class Account:
    """Whose credentials a backend call uses: the service account (`owner` None) or a user's (`owner`, with the
    user's current backend access token and the backend's OIDC provider id). `repr` hides the token."""

    owner: str | None = None
    access_token: str = field(default="", repr=False)
    provider_id: str = ""

    @property
    def key(self) -> str:
        """The account's name in connection caches and logs (`service` or `user:<owner>`)."""
        return "service" if self.owner is None else f"user:{self.owner}"


SERVICE = Account()


@dataclass
class _Login:
    """A backend's authentication, shared by the connections of every thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    auth: AuthBase | None = None  # None: nobody logged in yet, or the token was refused


_local = threading.local()
_logins: dict[str, _Login] = {}
_logins_lock = threading.Lock()


# Users' connections kept per thread (least recently used dropped first): many users must not mean a requests
# session per user in every worker thread.
MAX_USER_CONNECTIONS_PER_THREAD = 32


def _cache() -> OrderedDict[tuple[str, str], Connection]:
    cache: OrderedDict[tuple[str, str], Connection] | None = getattr(_local, "connections", None)
    if cache is None:
        cache = _local.connections = OrderedDict()
    return cache


def _cached(backend: BackendConfig, timeout_s: float, account: Account) -> Connection:
    """This thread's connection to `backend` for `account`, opened on first use."""
    cache = _cache()
    key = (backend.endpoint, account.key)
    conn = cache.get(key)
    if conn is None:
        conn = cache[key] = _open(backend, timeout_s)
        if account.owner is not None:
            users = [k for k in cache if k[1] != SERVICE.key]
            for old in users[:max(0, len(users) - MAX_USER_CONNECTIONS_PER_THREAD)]:
                cache.pop(old).session.close()
    else:
        cache.move_to_end(key)
    return conn


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


def _user_auth(conn: Connection, account: Account) -> AuthBase:
    """The bearer auth of a user's account (the connection's own while the token is unchanged)."""
    current = conn.auth
    if (isinstance(current, OidcBearerAuth) and current.bearer == f"oidc/{account.provider_id}/{account.access_token}"):
        return current
    return OidcBearerAuth(provider_id=account.provider_id, access_token=account.access_token)


def connect(backend: BackendConfig, timeout_s: float, account: Account = SERVICE) -> Connection:
    """This thread's connection to `backend` as `account`: the backend's shared login for the service account
    (logging in when nobody has), the user's token for a user's; the current correlation id as header. Blocking;
    raises the openeo client's exceptions (`call` types them)."""
    conn = _cached(backend, timeout_s, account)
    if account.owner is not None:
        auth: AuthBase | None = _user_auth(conn, account)
    else:
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


def call_anonymous(backend: BackendConfig, timeout_s: float, operation: Callable[[Connection], T]) -> T:
    """Run `operation` on a fresh connection without credentials (public documents such as
    `/credentials/oidc`); failures typed."""
    try:
        return operation(_open(backend, timeout_s))
    except Exception as exc:
        raise from_exception(exc) from exc


def call(backend: BackendConfig, timeout_s: float, operation: Callable[[Connection], T],
         account: Account = SERVICE) -> T:
    """Run `operation` on this thread's connection to `backend` as `account`. Every failure is raised as a typed
    `BackendError`. For the service account, an authentication error logs in again and runs the operation once
    more (such a request was refused, so repeating it cannot do anything twice); it is counted as a backend
    error and an `auth` retry. A user's account raises it (its token is refreshed by the caller)."""
    used: AuthBase | None = None
    try:
        conn = connect(backend, timeout_s, account)
        used = conn.auth
        return operation(conn)
    except Exception as exc:
        error = from_exception(exc)
        if not isinstance(error, BackendAuthError) or account.owner is not None:
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
