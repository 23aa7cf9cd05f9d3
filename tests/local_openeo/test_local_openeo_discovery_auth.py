"""Discovery documents and basic authentication, as the openeo client sees them."""

from __future__ import annotations

import openeo
import pytest
import requests
from local_openeo_support import LocalBackend
from openeo.rest import OpenEoApiError

REQUIRED_ENDPOINTS = {
    ("/credentials/basic", "GET"),
    ("/credentials/oidc", "GET"),
    ("/file_formats", "GET"),
    ("/processes", "GET"),
    ("/validation", "POST"),
    ("/jobs", "GET"),
    ("/jobs", "POST"),
    ("/jobs/{job_id}", "GET"),
    ("/jobs/{job_id}", "PATCH"),
    ("/jobs/{job_id}", "DELETE"),
    ("/jobs/{job_id}/results", "GET"),
    ("/jobs/{job_id}/results", "POST"),
    ("/jobs/{job_id}/results", "DELETE"),
    ("/jobs/{job_id}/logs", "GET"),
}


def test_well_known_and_capabilities(backend: LocalBackend) -> None:
    versions = requests.get(f"{backend.url}/.well-known/openeo", timeout=5).json()["versions"]
    assert versions == [{"url": f"{backend.api}/", "api_version": "1.2.0", "production": False}]
    con = openeo.connect(backend.url)
    assert con.root_url == f"{backend.api}/"
    capabilities = con.capabilities()
    assert capabilities.api_version() == "1.2.0"
    listed = {(e["path"], m) for e in capabilities.capabilities["endpoints"] for m in e["methods"]}
    assert REQUIRED_ENDPOINTS <= listed
    for path, method in REQUIRED_ENDPOINTS:
        assert capabilities.supports_endpoint(path, method)


def test_formats_processes_collections(backend: LocalBackend) -> None:
    con = openeo.connect(backend.url)
    assert {"GTiff", "GeoJSON", "netCDF", "JSON"} <= set(con.list_output_formats())
    process_ids = {p["id"] for p in con.list_processes()}
    assert {"load_collection", "save_result"} <= process_ids
    assert con.describe_process("save_result")["parameters"][1]["name"] == "format"
    assert "SENTINEL2_L2A" in con.list_collection_ids()
    assert con.get("/credentials/oidc").json() == {"providers": []}


def test_basic_auth_issues_a_bearer_token(backend: LocalBackend) -> None:
    con = backend.connect("alice")
    assert con.describe_account()["user_id"] == "alice"
    assert con.auth.bearer.startswith("basic//")


def test_bad_credentials_are_rejected(backend: LocalBackend) -> None:
    with pytest.raises(OpenEoApiError) as error:
        openeo.connect(backend.url).authenticate_basic("demo", "wrong")
    assert (error.value.http_status_code, error.value.code) == (403, "CredentialsInvalid")
    with pytest.raises(OpenEoApiError) as error:
        openeo.connect(backend.url).authenticate_basic("nobody", "demo")
    assert error.value.code == "CredentialsInvalid"


def test_missing_and_invalid_tokens(backend: LocalBackend) -> None:
    with pytest.raises(OpenEoApiError) as error:
        openeo.connect(backend.url).list_jobs()
    assert (error.value.http_status_code, error.value.code) == (401, "AuthenticationRequired")
    response = requests.get(f"{backend.api}/jobs", headers={"Authorization": "Bearer basic//forged"}, timeout=5)
    assert response.status_code == 403
    assert response.json()["code"] == "TokenInvalid"
    assert set(response.json()) == {"id", "code", "message", "links"}


def test_removed_user_loses_access(backend: LocalBackend) -> None:
    con = backend.connect("alice")
    backend.configure(users={"demo": "demo"})
    with pytest.raises(OpenEoApiError) as error:
        con.list_jobs()
    assert (error.value.http_status_code, error.value.code) == (403, "TokenInvalid")


def test_unknown_route_is_an_openeo_error(backend: LocalBackend) -> None:
    response = requests.get(f"{backend.api}/nothing/here", timeout=5)
    assert response.status_code == 404
    assert response.json()["code"] == "NotFound"
