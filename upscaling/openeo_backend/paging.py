"""The one pager of openEO listings: `GET /jobs?limit=n`, then each page's `rel=next` link until there is none.
(`openeo.Connection.list_jobs` returns only the first page.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from openeo.rest.connection import Connection

from upscaling.backends import BackendConfig
from upscaling.openeo_backend import connection
from upscaling.openeo_backend.errors import BackendPermanentError

# A listing longer than this many pages is a backend sending `next` links in a circle.
MAX_PAGES = 100_000


def next_href(page: dict[str, Any]) -> str | None:
    """The `rel=next` link of a listing page, or None on the last page."""
    for link in page.get("links") or ():
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return str(link["href"])
    return None


def _getter(path: str, params: dict[str, Any] | None) -> Callable[[Connection], Any]:
    def get(conn: Connection) -> Any:
        return conn.get(path, params=params, expected_status=200).json()

    return get


def job_pages(backend: BackendConfig, timeout_s: float, page_size: int,
              account: connection.Account = connection.SERVICE) -> Iterator[dict[str, Any]]:
    """The pages of `GET /jobs` as `account` (each fetched through `connection.call` when the caller asks for it: stop
    iterating to stop paging). A page that is not a JSON object raises BackendPermanentError."""
    path: str = "/jobs"
    params: dict[str, Any] | None = {"limit": page_size}
    for _ in range(MAX_PAGES):
        page = connection.call(backend, timeout_s, _getter(path, params), account)
        if not isinstance(page, dict):
            raise BackendPermanentError(f"GET {path}: the answer is not a JSON object")
        yield page
        href = next_href(page)
        if href is None:
            return
        path, params = href, None
    raise BackendPermanentError(f"GET /jobs: more than {MAX_PAGES} pages")
