"""The local openEO backend's OIDC bearer tokens (`--oidc-issuer`): the provider listed in `/credentials/oidc`,
tokens of the local OpenID issuer verified (signature, issuer, expiry, audience), each user (`sub`) with jobs of
their own, and the openeo client's own refresh-token flow against the issuer's token endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import openeo
import pytest
import requests

from tests.auth_support import OidcIssuer, new_key
from tests.support import LocalOpenEO

PUBLIC_CLIENT = "openeo-public"
AUDIENCE = "local-backend"


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    issuer = OidcIssuer(clients={PUBLIC_CLIENT: None}).start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def backend(issuer: OidcIssuer) -> Iterator[LocalOpenEO]:
    backend = LocalOpenEO("--oidc-issuer", issuer.url, "--oidc-provider-id", "egi", "--oidc-audience", AUDIENCE)
    yield backend
    backend.stop()


def _me(backend: LocalOpenEO, token: str) -> requests.Response:
    return requests.get(f"{backend.endpoint}/me", headers={"Authorization": f"Bearer oidc/egi/{token}"}, timeout=10)


def test_the_provider_is_listed(backend: LocalOpenEO, issuer: OidcIssuer) -> None:
    providers = requests.get(f"{backend.endpoint}/credentials/oidc", timeout=10).json()["providers"]
    assert [(p["id"], p["issuer"]) for p in providers] == [("egi", issuer.url)]


def test_valid_tokens_name_the_user_and_bad_ones_are_refused(backend: LocalOpenEO, issuer: OidcIssuer) -> None:
    assert _me(backend, issuer.token("zoe", audience=AUDIENCE)).json()["user_id"] == "zoe"
    refused = {
        "expired": issuer.token("zoe", audience=AUDIENCE, expires_in=-120),
        "other audience": issuer.token("zoe", audience="someone-else"),
        "unknown key": issuer.token("zoe", audience=AUDIENCE, key=new_key()),
        "not a JWT": "opaque-token-123456",
    }
    for why, token in refused.items():
        reply = _me(backend, token)
        assert (reply.status_code, reply.json()["code"]) == (403, "TokenInvalid"), why
    other_provider = requests.get(f"{backend.endpoint}/me", timeout=10, headers={
        "Authorization": f"Bearer oidc/google/{issuer.token('zoe', audience=AUDIENCE)}"})
    assert other_provider.status_code == 403
    assert backend.client().describe_account()["user_id"] == "demo"  # basic authentication still works


def test_the_openeo_client_signs_in_with_a_refresh_token_and_jobs_are_the_users(backend: LocalOpenEO,
                                                                                 issuer: OidcIssuer) -> None:
    refresh_token = issuer.issue_refresh_token("yann", AUDIENCE, PUBLIC_CLIENT)
    con = openeo.connect(backend.endpoint, auto_validate=False).authenticate_oidc_refresh_token(
        client_id=PUBLIC_CLIENT, refresh_token=refresh_token, provider_id="egi")
    assert con.describe_account()["user_id"] == "yann"
    cube = con.datacube_from_process("wind_turbine_detection", namespace=backend.application,
                                     spatial_extent={"west": 14.37, "south": 47.26, "east": 14.40, "north": 47.27},
                                     year="2024")
    job = cube.create_job(title="yann's job")
    assert backend.jobs()[job.job_id]["user"] == "yann"
    assert [j["id"] for j in con.list_jobs()] == [job.job_id]
    assert job.job_id not in [j["id"] for j in backend.client().list_jobs()]  # not the demo user's
