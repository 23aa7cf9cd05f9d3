"""The auth policy: one login per backend shared by every thread, one re-login when the token is refused, and
the correlation-id header (over a stand-in for the openeo Connection: no network)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from openeo.rest import OpenEoApiError

from upscaling.backends import BackendAuth, BackendConfig
from upscaling.logs import correlation_id
from upscaling.openeo_backend import connection
from upscaling.openeo_backend.errors import BackendAuthError, BackendPermanentError


class Token:
    def __init__(self, n: int) -> None:
        self.n = n


class Logins:
    """Stands in for opening and authenticating connections: counts logins, hands out numbered tokens."""

    def __init__(self) -> None:
        self.count = 0
        self.opened = 0
        self._lock = threading.Lock()

    def open(self, backend: BackendConfig, timeout_s: float) -> Any:
        with self._lock:
            self.opened += 1
        return SimpleNamespace(auth=None, session=SimpleNamespace(headers={}))

    def authenticate(self, conn: Any, auth: BackendAuth) -> None:
        with self._lock:
            self.count += 1
            conn.auth = Token(self.count)


@pytest.fixture
def logins(monkeypatch: pytest.MonkeyPatch) -> Logins:
    fake = Logins()
    monkeypatch.setattr(connection, "_open", fake.open)
    monkeypatch.setattr(connection, "_authenticate", fake.authenticate)
    return fake


def new_backend() -> BackendConfig:
    url = f"http://{uuid.uuid4().hex}.test/openeo/1.2"
    return BackendConfig(endpoint=url, url=url, auth=BackendAuth("basic", "u", "p"))


def test_one_login_for_every_thread(logins: Logins) -> None:
    backend = new_backend()
    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda _: connection.connect(backend, 5.0).auth, range(32)))
    assert logins.count == 1
    assert all(t is tokens[0] for t in tokens)
    assert 1 <= logins.opened <= 8  # one connection per thread


def test_a_refused_token_is_replaced_once_for_all_threads(logins: Logins) -> None:
    backend = new_backend()
    connection.connect(backend, 5.0)
    barrier = threading.Barrier(6)

    def operation(conn: Any) -> int:
        if conn.auth.n == 1:
            barrier.wait(timeout=5)  # every thread is refused with the first token
            raise OpenEoApiError(http_status_code=403, code="TokenInvalid", message="expired")
        return int(conn.auth.n)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: connection.call(backend, 5.0, operation), range(6)))
    assert answers == [2] * 6
    assert logins.count == 2


def test_refused_again_after_the_new_login_is_an_auth_error(logins: Logins) -> None:
    backend = new_backend()

    def refuse(conn: Any) -> None:
        raise OpenEoApiError(http_status_code=401, code="CredentialsInvalid", message="no")

    with pytest.raises(BackendAuthError):
        connection.call(backend, 5.0, refuse)
    assert logins.count == 2


def test_other_failures_keep_the_login(logins: Logins) -> None:
    backend = new_backend()

    def broken(conn: Any) -> None:
        raise ValueError("not JSON")

    with pytest.raises(BackendPermanentError):
        connection.call(backend, 5.0, broken)
    connection.call(backend, 5.0, lambda conn: None)
    assert logins.count == 1


def test_correlation_id_header(logins: Logins) -> None:
    backend = new_backend()
    token = correlation_id.set("cid-1")
    try:
        assert connection.connect(backend, 5.0).session.headers[connection.CORRELATION_HEADER] == "cid-1"
    finally:
        correlation_id.reset(token)
    assert connection.CORRELATION_HEADER not in connection.connect(backend, 5.0).session.headers


class CountingConnection:
    """A stand-in whose `auth` setter counts assignments (the openeo Connection clears its capabilities and
    file-formats cache on each one)."""

    def __init__(self) -> None:
        self._auth: Any = None
        self.auth_sets = 0
        self.session = SimpleNamespace(headers={})

    @property
    def auth(self) -> Any:
        return self._auth

    @auth.setter
    def auth(self, value: Any) -> None:
        self.auth_sets += 1
        self._auth = value


def test_reusing_a_connection_keeps_its_capabilities_cache(logins: Logins, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "_open", lambda backend, timeout_s: CountingConnection())
    backend = new_backend()
    conn = connection.connect(backend, 5.0)
    sets = conn.auth_sets
    for _ in range(5):
        assert connection.connect(backend, 5.0) is conn
    assert conn.auth_sets == sets  # the shared token did not change: nothing assigned, the cache is kept
    connection.forget(backend)
    connection.connect(backend, 5.0)
    assert conn.auth_sets > sets  # a new login is assigned


def test_a_users_account_uses_their_token_without_login_and_apart_from_the_service_account(logins: Logins) -> None:
    backend = new_backend()
    service = connection.connect(backend, 5.0)
    alice = connection.connect(backend, 5.0, connection.Account("alice", "tok-alice-1", "egi"))
    bob = connection.connect(backend, 5.0, connection.Account("bob", "tok-bob-1", "egi"))
    assert logins.count == 1  # only the service account logged in
    assert service is not alice and alice is not bob  # one connection per account
    assert alice.auth.bearer == "oidc/egi/tok-alice-1" and bob.auth.bearer == "oidc/egi/tok-bob-1"
    kept = alice.auth
    assert connection.connect(backend, 5.0, connection.Account("alice", "tok-alice-1", "egi")).auth is kept
    renewed = connection.connect(backend, 5.0, connection.Account("alice", "tok-alice-2", "egi"))
    assert renewed is alice and renewed.auth.bearer == "oidc/egi/tok-alice-2"
    assert "tok-alice" not in repr(connection.Account("alice", "tok-alice-2", "egi"))


def test_a_refused_user_token_is_raised_without_a_login(logins: Logins) -> None:
    backend = new_backend()
    calls = []

    def operation(conn: Any) -> None:
        calls.append(conn.auth.bearer)
        raise OpenEoApiError(http_status_code=403, code="TokenInvalid", message="expired")

    with pytest.raises(BackendAuthError):
        connection.call(backend, 5.0, operation, connection.Account("alice", "tok-a", "egi"))
    assert calls == ["oidc/egi/tok-a"]  # once: the caller refreshes the user's token
    assert logins.count == 0


def test_a_thread_keeps_a_bounded_number_of_user_connections(logins: Logins,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    closed = []
    monkeypatch.setattr(connection, "_open", lambda backend, timeout_s: SimpleNamespace(
        auth=None, session=SimpleNamespace(headers={}, close=lambda: closed.append(1))))
    backend = new_backend()

    def work() -> int:
        connection.connect(backend, 5.0)
        for i in range(connection.MAX_USER_CONNECTIONS_PER_THREAD + 8):
            connection.connect(backend, 5.0, connection.Account(f"user{i}", f"token-{i}", "egi"))
        return len(connection._cache())

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(work).result() == connection.MAX_USER_CONNECTIONS_PER_THREAD + 1  # + the service's
    assert len(closed) == 8
