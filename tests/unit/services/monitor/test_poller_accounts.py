"""The monitor polls a backend once per backend *account*: the service account for a backend with service
credentials, each job owner's account on a backend with per-user credentials (whose jobs fail with the reason
when the owner has no usable credentials). Over stand-ins for the job store, the credential store and the poll."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.monitor import poller, store
from services.monitor.poller import Monitor
from services.monitor.store import JobChange
from upscaling.backends import parse_backend
from upscaling.credentials import CredentialsError, CredentialStore
from upscaling.openeo_backend.connection import SERVICE, Account
from upscaling.openeo_backend.errors import BackendAuthError

PER_USER = parse_backend({"endpoint": "http://per-user/openeo/1.2",
                          "auth": {"method": "user_refresh_token", "client_id": "c", "provider_id": "egi"}})
SERVICE_BACKEND = parse_backend({"endpoint": "http://service/openeo/1.2",
                                 "auth": {"method": "basic", "username": "u", "password": "p"}})


class Credentials:
    """Accounts by owner; `refused` owners have none; `stale` owners' first token is refused by the backend."""

    def __init__(self, refused: frozenset[str] = frozenset(), stale: frozenset[str] = frozenset()) -> None:
        self.refused, self.stale = refused, stale
        self.forced: list[str] = []

    call = CredentialStore.call  # the store's own rule: refresh once when the backend refuses the token

    async def account(self, backend: Any, owner: str, force_refresh: bool = False) -> Account:
        if owner in self.refused:
            raise CredentialsError(f"user {owner!r} has no credentials for backend {backend.endpoint}")
        if force_refresh:
            self.forced.append(owner)
        return Account(owner, f"token-{owner}-{'new' if force_refresh else 'old'}", "egi")


def monitor(monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]], credentials: Credentials
            ) -> tuple[Monitor, list[tuple[Account, list[int]]], list[JobChange]]:
    settings = SimpleNamespace(monitor_interval_min_s=0.1, monitor_interval_max_s=1.0, openeo_timeout_s=5.0,
                               monitor_page_size=100)
    m = Monitor(settings, None, None, None, None, None, credentials=credentials)  # type: ignore[arg-type]
    polls: list[tuple[Account, list[int]]] = []
    recorded: list[JobChange] = []

    async def active_jobs(pool: Any, endpoints: list[str]) -> list[dict[str, Any]]:
        return rows

    async def poll(backend: Any, owned: list[dict[str, Any]], result: Any, account: Account = SERVICE) -> None:
        if account.owner in credentials.stale and account.access_token.endswith("-old"):
            raise BackendAuthError("TokenInvalid: expired", code="TokenInvalid", http_status=403)
        polls.append((account, [r["id"] for r in owned]))

    async def record(changes: list[JobChange]) -> None:
        recorded.extend(changes)

    monkeypatch.setattr(store, "active_jobs", active_jobs)
    monkeypatch.setattr(m, "_poll", poll)
    monkeypatch.setattr(m, "_record", record)
    monkeypatch.setattr(poller.metrics, "monitor_cycle", lambda *a: None)
    return m, polls, recorded


def job(job_id: int, owner: str) -> dict[str, Any]:
    return {"id": job_id, "task_id": 1, "owner": owner, "correlation_id": "cid"}


def test_one_poll_per_owner_on_a_per_user_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    m, polls, recorded = monitor(monkeypatch, [job(1, "alice"), job(2, "bob"), job(3, "alice")], Credentials())
    result = asyncio.run(m.poll_backend(PER_USER))
    assert result.active == 3 and not recorded
    assert sorted((a.owner, a.access_token, ids) for a, ids in polls) == [
        ("alice", "token-alice-old", [1, 3]), ("bob", "token-bob-old", [2])]


def test_one_poll_as_the_service_account_on_a_service_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    m, polls, _ = monitor(monkeypatch, [job(1, "alice"), job(2, "bob")], Credentials())
    asyncio.run(m.poll_backend(SERVICE_BACKEND))
    assert polls == [(SERVICE, [1, 2])]


def test_a_refused_token_is_refreshed_once_and_unusable_credentials_fail_only_that_owners_jobs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = Credentials(refused=frozenset({"dave"}), stale=frozenset({"bob"}))
    m, polls, recorded = monitor(monkeypatch, [job(1, "alice"), job(2, "bob"), job(3, "dave")], credentials)
    asyncio.run(m.poll_backend(PER_USER))
    assert sorted((a.owner, a.access_token) for a, _ in polls) == [("alice", "token-alice-old"),
                                                                  ("bob", "token-bob-new")]
    assert credentials.forced == ["bob"]
    assert [(c.job_id, c.fields["status"]) for c in recorded] == [(3, "failed")]
    assert "dave" in recorded[0].fields["message"]
