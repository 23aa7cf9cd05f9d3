"""The `rel=next` pager and the re-authentication policy of `connection.call`, over a scripted connection (the
real client against the local backend is exercised by the dispatcher and monitor tests)."""

from __future__ import annotations

from typing import Any

import pytest
from openeo.rest import OpenEoApiError

from upscaling.backends import BackendConfig
from upscaling.openeo_backend import connection, jobs, paging
from upscaling.openeo_backend.errors import BackendAuthError, BackendPermanentError, BackendTransientError

BACKEND = BackendConfig(endpoint="http://backend.test/openeo/1.2", url="http://backend.test/openeo/1.2")


class Answer:
    def __init__(self, body: Any) -> None:
        self.body = body

    def json(self) -> Any:
        return self.body


class ScriptedConnection:
    """Answers GET requests from a list of pages (or exceptions to raise), recording the requests."""

    def __init__(self, script: list[Any]) -> None:
        self.auth = object()
        self.script = script
        self.requests: list[tuple[str, dict[str, Any] | None]] = []

    def get(self, path: str, params: dict[str, Any] | None = None, expected_status: int = 200) -> Answer:
        self.requests.append((path, params))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return Answer(step)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedConnection]:
    """The connections `connection.connect` hands out, in order: the same one until `forget` is called."""
    conns: list[ScriptedConnection] = []
    used = [0]

    def connect(backend: BackendConfig, timeout_s: float,
                account: connection.Account = connection.SERVICE) -> ScriptedConnection:
        return conns[used[0]]

    def forget(backend: BackendConfig, refused: object = None) -> None:
        assert refused is None or refused is conns[used[0]].auth
        used[0] += 1

    monkeypatch.setattr(connection, "connect", connect)
    monkeypatch.setattr(connection, "forget", forget)
    return conns


def page(ids: list[str], next_href: str | None = None, **extra: Any) -> dict[str, Any]:
    links = [{"rel": "self", "href": "x"}] + ([{"rel": "next", "href": next_href}] if next_href else [])
    return {"jobs": [{"id": i, "status": "queued", **extra} for i in ids], "links": links}


def test_next_href() -> None:
    assert paging.next_href(page(["a"], "http://b/jobs?page=2")) == "http://b/jobs?page=2"
    assert paging.next_href(page(["a"])) is None
    assert paging.next_href({"jobs": []}) is None
    assert paging.next_href({"links": [{"rel": "next"}, "junk", {"rel": "next", "href": ""}]}) is None


def test_list_follows_next_links_until_every_wanted_job_was_seen(opened: list[ScriptedConnection]) -> None:
    conn = ScriptedConnection([page(["a", "b"], "/jobs?p=2"), page(["c", "d"], "/jobs?p=3"), page(["e"])])
    opened.append(conn)
    listing = jobs.list_jobs(BACKEND, 5.0, 2, {"b", "c"})
    assert set(listing.jobs) == {"b", "c"} and listing.pages == 2
    assert conn.requests == [("/jobs", {"limit": 2}), ("/jobs?p=2", None)]


def test_list_reads_every_page_when_a_job_is_missing(opened: list[ScriptedConnection]) -> None:
    opened.append(ScriptedConnection([page(["a"], "/jobs?p=2"), page(["b"])]))
    listing = jobs.list_jobs(BACKEND, 5.0, 1, {"a", "zz"})
    assert set(listing.jobs) == {"a"} and listing.pages == 2


def test_list_of_nothing_sends_nothing(opened: list[ScriptedConnection]) -> None:
    assert jobs.list_jobs(BACKEND, 5.0, 10, set()).pages == 0


def test_find_by_tag_searches_description_and_title_across_pages(opened: list[ScriptedConnection]) -> None:
    second = page(["y"], description="Unit job 7 of task 1 [uj-7]")
    opened.append(ScriptedConnection([page(["x"], "/jobs?p=2", description="other [uj-70]"), second]))
    assert jobs.find_job_by_tag(BACKEND, 5.0, "uj-7") == ("y", "queued")
    opened.append(ScriptedConnection([page(["t"], title="[uj-8]")]))
    connection.forget(BACKEND)
    assert jobs.find_job_by_tag(BACKEND, 5.0, "uj-8") == ("t", "queued")


def test_find_by_tag_none_when_absent(opened: list[ScriptedConnection]) -> None:
    opened.append(ScriptedConnection([page(["x"], "/jobs?p=2"), page([])]))
    assert jobs.find_job_by_tag(BACKEND, 5.0, "uj-1") is None


def test_a_page_that_is_not_an_object_is_a_permanent_error(opened: list[ScriptedConnection]) -> None:
    opened.append(ScriptedConnection([["not", "a", "page"]]))
    with pytest.raises(BackendPermanentError):
        jobs.list_jobs(BACKEND, 5.0, 10, {"a"})


def test_an_expired_token_authenticates_again_once(opened: list[ScriptedConnection]) -> None:
    expired = OpenEoApiError(http_status_code=403, code="TokenInvalid", message="expired")
    first = ScriptedConnection([expired])
    fresh = ScriptedConnection([page(["a"])])
    opened.extend([first, fresh])
    assert set(jobs.list_jobs(BACKEND, 5.0, 10, {"a"}).jobs) == {"a"}
    assert first.requests and fresh.requests  # the page was asked again on a new connection


def test_refused_twice_is_an_auth_error(opened: list[ScriptedConnection]) -> None:
    refused = OpenEoApiError(http_status_code=401, code="CredentialsInvalid", message="no")
    opened.extend([ScriptedConnection([refused]), ScriptedConnection([refused]), ScriptedConnection([page([])])])
    with pytest.raises(BackendAuthError) as err:
        jobs.list_jobs(BACKEND, 5.0, 10, {"a"})
    assert err.value.code == "CredentialsInvalid" and err.value.http_status == 401


def test_other_errors_are_not_retried(opened: list[ScriptedConnection]) -> None:
    unavailable = OpenEoApiError(http_status_code=503, code="ServiceUnavailable", message="busy")
    conn = ScriptedConnection([unavailable, page(["a"])])
    opened.append(conn)
    with pytest.raises(BackendTransientError):
        jobs.list_jobs(BACKEND, 5.0, 10, {"a"})
    assert len(conn.requests) == 1
