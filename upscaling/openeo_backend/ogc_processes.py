"""The client of OGC API - Processes servers (backends with `platform: ogc_api_process`), with `requests` in the
caller's worker thread like the rest of this package, and the same typed errors (`errors.from_answer`).

- execute: `POST {url}/processes/{id}/execution` with `Prefer: respond-async`; the job id comes from the
  `Location` header (`.../jobs/{id}`) or the answer's `jobID`. The job runs at once: there is no separate start.
- job list: `GET /jobs?limit=n`, then each page's `rel=next` link (`paging.next_href`); one job: `GET /jobs/{id}`;
  dismiss: `DELETE /jobs/{id}`; results: `GET /jobs/{id}/results`.
- A job's OGC status info becomes the openEO-shaped report the monitor reads (`job_report`): `accepted` →
  `queued`, `running` → `running`, `successful` → `finished`, `failed` → `error`, `dismissed` → `canceled`.
- The results document becomes STAC-like results (`stac_results`): each output given by reference (`href`) is an
  asset of its own; outputs given by value are served by the job's results URL, the asset `results.json`, and
  kept inline under `upscaling:outputs` when small.
- OGC jobs have no description to carry a job's tag. When the backend entry names a `tag_input`, the execution
  request carries the tag marker as that input, and `find_job_by_tag` looks for it in the listing's `parameters`
  (the job's inputs, which pygeoapi-based servers such as `local_ogc` list). Without it a job whose execution
  request lost its answer cannot be found again: `find_job_by_tag` raises a permanent error (the unit job fails
  with that reason) rather than executing the process a second time.

Authentication: `none` or `basic` (HTTP Basic with the configured user); the `X-Correlation-ID` header as in
`connection`.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import requests

from upscaling.backends import BackendConfig
from upscaling.logs import correlation_id
from upscaling.openeo_backend.errors import BackendError, BackendPermanentError, from_answer, from_exception
from upscaling.openeo_backend.paging import MAX_PAGES, next_href

CORRELATION_HEADER = "X-Correlation-ID"
# OGC API - Processes job status -> openEO job status (what `upscaling.statuses.from_openeo` reads).
OGC_TO_OPENEO = {"accepted": "queued", "running": "running", "successful": "finished", "failed": "error",
                 "dismissed": "canceled"}
# Outputs given by value are kept inline in the stored results up to this size (JSON characters).
MAX_INLINE_OUTPUTS = 64 * 1024
STAC_VERSION = "1.1.0"

_local = threading.local()


def _session(backend: BackendConfig) -> requests.Session:
    """This thread's session to `backend` (requests sessions are not shared across threads)."""
    sessions: dict[str, requests.Session] | None = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get(backend.endpoint)
    if session is None:
        auth = backend.auth
        if auth.method not in ("none", "basic"):
            raise BackendPermanentError(f"auth method {auth.method!r} is not supported for an OGC API - Processes "
                                        "backend (use none or basic)")
        session = requests.Session()
        session.headers["Accept"] = "application/json"
        if auth.method == "basic":
            session.auth = (auth.username or "", auth.password or "")
        sessions[backend.endpoint] = session
    return session


def _url(backend: BackendConfig, path: str) -> str:
    """An absolute URL: `path` under the backend's URL, or `path` itself when it is one (a `next` link)."""
    if path.startswith(("http://", "https://")):
        return path
    return f"{backend.url.rstrip('/')}/{path.lstrip('/')}"


def _error(response: requests.Response) -> BackendError:
    """The typed error of an error answer (an OGC exception `{type, title, detail}`, or pygeoapi's
    `{code, description}`)."""
    code, message = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw_code = body.get("code") or body.get("type") or ""
        code = str(raw_code).rsplit("/", 1)[-1]
        message = str(body.get("detail") or body.get("description") or body.get("title") or "")
    if not message:
        message = f"HTTP {response.status_code} {response.reason or ''}".strip()
    return from_answer(response.status_code, code, f"{response.request.method} {response.url}: {message}")


def request(backend: BackendConfig, timeout_s: float, method: str, path: str, *, body: Any = None,
            headers: dict[str, str] | None = None, params: dict[str, Any] | None = None) -> requests.Response:
    """One request to the server; any failure raised as a typed BackendError (non-2xx answers included)."""
    extra = dict(headers or {})
    cid = correlation_id.get()
    if cid:
        extra[CORRELATION_HEADER] = cid
    try:
        response = _session(backend).request(method, _url(backend, path), json=body, headers=extra, params=params,
                                             timeout=timeout_s)
    except BackendError:
        raise
    except Exception as exc:
        raise from_exception(exc) from exc
    if response.status_code >= 400:
        raise _error(response)
    return response


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise BackendPermanentError(f"{response.request.method} {response.url}: the answer is not JSON") from exc


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def openeo_status(status: Any) -> str:
    """The openEO job status of an OGC job status (unknown ones pass through in lower case)."""
    text = str(status or "").lower()
    return OGC_TO_OPENEO.get(text, text or "queued")


def job_report(info: dict[str, Any]) -> dict[str, Any]:
    """An OGC status info as the openEO-shaped job report the monitor reads (`id`, `status`, `progress`, ...)."""
    report: dict[str, Any] = {"id": str(info.get("jobID") or info.get("id") or ""),
                              "status": openeo_status(info.get("status")),
                              "ogc_status": info.get("status"), "message": info.get("message"),
                              "process_id": info.get("processID"), "created": info.get("created"),
                              "updated": info.get("updated")}
    progress = info.get("progress")
    if isinstance(progress, int | float) and not isinstance(progress, bool):
        report["progress"] = float(progress)
    if isinstance(info.get("parameters"), dict):
        report["parameters"] = info["parameters"]
    return report


def job_id_of(response: requests.Response) -> str | None:
    """The job id of an execution answer: the last segment of a `Location: .../jobs/{id}`, else `jobID`."""
    location = response.headers.get("Location") or ""
    path = urllib.parse.urlsplit(location).path.rstrip("/")
    _head, sep, tail = path.rpartition("/jobs/")
    if sep and tail and "/" not in tail:
        return urllib.parse.unquote(tail)
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("jobID"):
        return str(body["jobID"])
    return None


def execute(backend: BackendConfig, timeout_s: float, process_id: str, inputs: dict[str, Any],
            marker: str) -> str:
    """Execute a process asynchronously; returns the job id. `marker` goes into the backend's `tag_input`."""
    body_inputs = dict(inputs)
    if backend.tag_input:
        body_inputs[backend.tag_input] = marker
    response = request(backend, timeout_s, "POST", f"processes/{_quote(process_id)}/execution",
                       body={"inputs": body_inputs}, headers={"Prefer": "respond-async"})
    job_id = job_id_of(response)
    if job_id is None:
        raise BackendPermanentError(f"{backend.endpoint}: the process {process_id} was not executed asynchronously "
                                    f"(HTTP {response.status_code}, no job location): it must offer async-execute")
    return job_id


def job_pages(backend: BackendConfig, timeout_s: float, page_size: int) -> Iterator[list[dict[str, Any]]]:
    """The pages of `GET /jobs` as job reports (stop iterating to stop paging)."""
    path, params = "jobs", {"limit": page_size, "f": "json"}
    for _ in range(MAX_PAGES):
        page = _json(request(backend, timeout_s, "GET", path, params=params))
        if not isinstance(page, dict):
            raise BackendPermanentError(f"GET {path}: the answer is not a JSON object")
        yield [job_report(j) for j in page.get("jobs") or () if isinstance(j, dict)]
        href = next_href(page)
        if href is None:
            return
        path, params = href, {}
    raise BackendPermanentError(f"GET /jobs: more than {MAX_PAGES} pages")


def carries(report: dict[str, Any], marker: str) -> bool:
    """Whether a job report's inputs (`parameters`) carry the tag marker."""
    parameters = report.get("parameters")
    return isinstance(parameters, dict) and any(
        isinstance(v, str) and marker in v for v in parameters.values())


def find_job(backend: BackendConfig, timeout_s: float, marker: str, page_size: int) -> tuple[str, str] | None:
    """(job id, openEO status) of the job whose tag input carries `marker`, or None."""
    if not backend.tag_input:
        raise BackendPermanentError(
            f"{backend.endpoint}: an execution request may have started a job whose answer was lost, and OGC jobs "
            "cannot be found again without a tag_input in the backend configuration; not executing it twice")
    for page in job_pages(backend, timeout_s, page_size):
        for report in page:
            if carries(report, marker):
                return report["id"], report["status"]
    return None


def describe(backend: BackendConfig, timeout_s: float, job_id: str) -> dict[str, Any] | None:
    """The job report of `GET /jobs/{id}`; None when the server does not know the job (404)."""
    try:
        info = _json(request(backend, timeout_s, "GET", f"jobs/{_quote(job_id)}", params={"f": "json"}))
    except BackendError as exc:
        if exc.http_status == 404:
            return None
        raise
    if not isinstance(info, dict):
        raise BackendPermanentError(f"GET /jobs/{job_id}: the answer is not a JSON object")
    return job_report(info)


def dismiss(backend: BackendConfig, timeout_s: float, job_id: str) -> None:
    """`DELETE /jobs/{id}` (a job the server no longer knows counts as dismissed)."""
    try:
        request(backend, timeout_s, "DELETE", f"jobs/{_quote(job_id)}")
    except BackendError as exc:
        if exc.http_status != 404:
            raise


def results_document(backend: BackendConfig, timeout_s: float, job_id: str) -> Any:
    """The results document of a successful job (`GET /jobs/{id}/results`)."""
    return _json(request(backend, timeout_s, "GET", f"jobs/{_quote(job_id)}/results", params={"f": "json"}))


def stac_results(backend: BackendConfig, job_id: str, document: Any) -> dict[str, Any]:
    """STAC-like results of an OGC job (see the module docstring): a Collection whose assets are the outputs."""
    results_url = f"{backend.endpoint}/jobs/{_quote(job_id)}/results"
    outputs: dict[str, Any]
    if isinstance(document, dict) and isinstance(document.get("outputs"), dict):  # the "document" response
        outputs = document["outputs"]
    elif isinstance(document, dict):
        outputs = document
    else:
        outputs = {"result": document}
    assets: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name, value in outputs.items():
        if isinstance(value, dict) and isinstance(value.get("href"), str):
            assets[str(name)] = {"href": value["href"], "type": value.get("type") or "application/octet-stream",
                                 "title": str(name), "roles": ["data"]}
        else:
            values[str(name)] = value
    if values:
        assets["results.json"] = {"href": f"{results_url}?f=json", "type": "application/json",
                                  "title": f"outputs {', '.join(values)} of the job", "roles": ["data"]}
    stac: dict[str, Any] = {
        "stac_version": STAC_VERSION, "type": "Collection", "id": job_id,
        "description": f"Results of the OGC API - Processes job {job_id}", "license": "other",
        "extent": {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]}, "temporal": {"interval": [[None, None]]}},
        "links": [{"rel": "self", "href": results_url, "type": "application/json"}],
        "assets": assets,
    }
    if values and len(json.dumps(values, default=str)) <= MAX_INLINE_OUTPUTS:
        stac["upscaling:outputs"] = values
    return stac


def error_message(backend: BackendConfig, timeout_s: float, job_id: str) -> str | None:
    """The message of a failed job's status info (OGC jobs have no logs)."""
    report = describe(backend, timeout_s, job_id)
    if report is None or not report.get("message"):
        return None
    return str(report["message"])

