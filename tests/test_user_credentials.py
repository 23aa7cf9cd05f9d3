"""Users' own backend credentials, end to end with real processes: a gateway in AUTH_MODE=oidc, a dispatcher and a
monitor, the local OpenID issuer (with its token endpoint: token exchange and rotating refresh tokens) and a local
openEO backend that accepts the issuer's tokens per user (`--oidc-issuer`).

The one local backend is configured twice, under two spellings of its URL: `exchange` (127.0.0.1) with
`auth.method: user_token_exchange`, `refresh` (localhost) with `auth.method: user_refresh_token`. Which user a
backend job belongs to is read from the backend's own admin view (`GET /admin/jobs`: `user` is the token's `sub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import requests
from cryptography.fernet import Fernet

from tests.auth_support import AUDIENCE, OidcIssuer
from tests.full_stack import services
from tests.infra import ROOT, ServiceProcess, free_port
from tests.support import LocalOpenEO, tiles
from upscaling.v1 import common_pb2, credentials_pb2, credentials_pb2_grpc, upscaling_pb2, upscaling_pb2_grpc

EXCHANGE_CLIENT, EXCHANGE_SECRET = "upscaling-exchange", "exchange-client-secret-4d1f9a"
PUBLIC_CLIENT = "openeo-public-client"
BACKEND_AUDIENCE = "local-openeo"
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"


@dataclass
class CredsStack:
    http: str
    grpc: str
    backend: LocalOpenEO
    issuer: OidcIssuer
    exchange: str  # endpoint of the user_token_exchange backend
    refresh: str   # endpoint of the user_refresh_token backend
    database_url: str
    processes: list[ServiceProcess]

    def token(self, user: str) -> str:
        if user == "ops":  # an administrator (OIDC_ADMIN_VALUE in the `roles` claim)
            return self.issuer.token(user, expires_in=3600, roles=["ops-admin"])
        return self.issuer.token(user, expires_in=3600)

    def call(self, method: str, path: str, user: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.http}{path}", headers={"Authorization": f"Bearer {self.token(user)}"},
                                timeout=30, **kwargs)

    def task_body(self, title: str, endpoint: str, n: int = 2) -> dict[str, Any]:
        return {"title": title, "label": "openeo",
                "service": {"endpoint": endpoint, "application": self.backend.application},
                "parameters": {"year": 2024}, "dimension": {"name": "spatial_extent", "values": tiles(n)}}

    def create(self, user: str, title: str, endpoint: str, n: int = 2) -> int:
        reply = self.call("POST", "/upscale_tasks", user, json=self.task_body(title, endpoint, n))
        assert reply.status_code == 201, reply.text
        return int(reply.json()["id"])

    def wait_task(self, user: str, task_id: int, limit_s: float = 60) -> dict[str, Any]:
        """The task once it is terminal."""
        deadline = time.monotonic() + limit_s
        while True:
            body = self.call("GET", f"/upscale_tasks/{task_id}", user).json()
            if body["status"] in ("finished", "failed", "canceled"):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} not terminal after {limit_s}s: {body}\n{self.logs()}")
            time.sleep(0.3)

    def backend_users(self, title: str) -> set[str]:
        """The users owning the backend jobs whose title starts with `title`."""
        return {j["user"] for j in self.backend.jobs().values() if (j["title"] or "").startswith(title)}

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.processes)


@contextlib.contextmanager
def creds_stack(infra: Any, service_env: dict[str, str], tiler_address: str, logs: Path) -> Iterator[CredsStack]:
    issuer = OidcIssuer(clients={EXCHANGE_CLIENT: EXCHANGE_SECRET, PUBLIC_CLIENT: None}).start()
    backend = LocalOpenEO("--oidc-issuer", issuer.url, "--oidc-provider-id", "egi",
                          "--oidc-audience", BACKEND_AUDIENCE)
    exchange = backend.endpoint
    refresh = exchange.replace("127.0.0.1", "localhost")
    backends = [
        {"endpoint": exchange, "auth": {"method": "user_token_exchange", "token_endpoint": issuer.token_endpoint,
                                        "client_id": EXCHANGE_CLIENT, "client_secret_env": "EXCHANGE_SECRET",
                                        "audience": BACKEND_AUDIENCE, "provider_id": "egi"}},
        {"endpoint": refresh, "auth": {"method": "user_refresh_token", "client_id": PUBLIC_CLIENT,
                                       "provider_id": "egi"}},
    ]
    env = {"OPENEO_BACKENDS": json.dumps(backends), "EXCHANGE_SECRET": EXCHANGE_SECRET,
           "CREDENTIALS_KEY": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
           "UDP_ALLOWED_URLS": backend.udp_catalogue, "AUTH_MODE": "oidc", "OIDC_ISSUER": issuer.url,
           "OIDC_AUDIENCE": AUDIENCE, "OIDC_ADMIN_VALUE": "ops-admin", "LOG_LEVEL": "DEBUG"}
    try:
        with services(infra, service_env, tiler_address, logs, env, name="creds") as running:
            yield CredsStack(running.http, running.grpc, backend, issuer, exchange, refresh, running.database_url,
                             running.processes)
    finally:
        backend.stop()
        issuer.stop()


@pytest.fixture(scope="module")
def creds(infra: Any, service_env: dict[str, str], stack: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[CredsStack]:
    with creds_stack(infra, service_env, stack.tiler_address, tmp_path_factory.mktemp("creds")) as s:
        yield s


async def _credential_rows(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT * FROM backend_credentials ORDER BY owner, backend")
    finally:
        await conn.close()


def test_token_exchange_runs_each_users_jobs_under_their_backend_account(creds: CredsStack) -> None:
    exchanges = creds.issuer.grants[EXCHANGE_GRANT]
    alice = creds.create("alice", "alice exchange", creds.exchange)
    bob = creds.create("bob", "bob exchange", creds.exchange)
    for user, task_id in (("alice", alice), ("bob", bob)):
        body = creds.wait_task(user, task_id)
        assert body["status"] == "finished", body
    assert creds.issuer.grants[EXCHANGE_GRANT] == exchanges + 2
    # The backend saw each user's own token: A's jobs belong to A's backend account, B's to B's.
    assert creds.backend_users("alice exchange") == {"alice"}
    assert creds.backend_users("bob exchange") == {"bob"}
    assert len([j for j in creds.backend.jobs().values()
                if j["title"].startswith(("alice exchange", "bob exchange"))]) == 4
    # Stored encrypted: the table holds no token in clear.
    rows = asyncio.run(_credential_rows(creds.database_url))
    issued = creds.issuer.issued_tokens()
    dump = repr([dict(r) for r in rows])
    assert {(r["owner"], r["backend"]) for r in rows} >= {("alice", creds.exchange), ("bob", creds.exchange)}
    assert not [t for t in issued if t in dump or t.encode() in b"".join(bytes(r["access_token"] or b"")
                                                                            for r in rows)]


def test_grpc_create_task_exchanges_the_callers_token_too(creds: CredsStack) -> None:
    md = (("authorization", f"Bearer {creds.token('gina')}"),)
    request = upscaling_pb2.CreateTaskRequest(
        title="gina grpc", label="openeo",
        service=common_pb2.ServiceRef(endpoint=creds.exchange, application=creds.backend.application),
        parameters_json=json.dumps({"year": 2024}),
        dimension=upscaling_pb2.Dimension(name="spatial_extent", values_json=[json.dumps(t) for t in tiles(2)]))
    with grpc.insecure_channel(creds.grpc) as channel:
        task = upscaling_pb2_grpc.UpscalingServiceStub(channel).CreateTask(request, metadata=md, timeout=60).task
    assert creds.wait_task("gina", task.id)["status"] == "finished"
    assert creds.backend_users("gina grpc") == {"gina"}


def test_a_refused_exchange_refuses_the_task_and_stores_nothing(creds: CredsStack) -> None:
    secret = creds.issuer.clients.pop(EXCHANGE_CLIENT)  # the provider no longer knows the service's client
    try:
        reply = creds.call("POST", "/upscale_tasks", "hank", json=creds.task_body("hank refused", creds.exchange))
    finally:
        creds.issuer.clients[EXCHANGE_CLIENT] = secret
    assert reply.status_code == 409, reply.text
    assert reply.json()["error_code"] == "BACKEND_CREDENTIALS_REFUSED"
    assert "invalid_client" in reply.json()["message"]
    assert creds.call("GET", "/upscale_tasks", "hank").json()["tasks"] == []
    assert not [r for r in asyncio.run(_credential_rows(creds.database_url)) if r["owner"] == "hank"]


def test_a_token_near_expiry_is_refreshed_and_rotated_tokens_are_kept(creds: CredsStack) -> None:
    # Backend tokens now live 20 s, less than the refresh margin (60 s): every use refreshes first. Refresh tokens
    # are single-use (rotated), so a job only finishes when each rotated refresh token was stored.
    creds.issuer.issued_expires_in = 20
    try:
        refreshes = creds.issuer.grants["refresh_token"]
        task_id = creds.create("erin", "erin refresh", creds.exchange, n=3)
        body = creds.wait_task("erin", task_id)
        assert body["status"] == "finished", body
        assert creds.issuer.grants["refresh_token"] >= refreshes + 2
        assert creds.backend_users("erin refresh") == {"erin"}
        rows = [r for r in asyncio.run(_credential_rows(creds.database_url)) if r["owner"] == "erin"]
        assert rows and rows[0]["refreshed_at"] is not None
    finally:
        creds.issuer.issued_expires_in = 300


def test_registered_refresh_token_runs_jobs_and_is_never_shown(creds: CredsStack) -> None:
    # No registration yet: refused with what to do.
    reply = creds.call("POST", "/upscale_tasks", "carol", json=creds.task_body("carol early", creds.refresh))
    assert reply.status_code == 409, reply.text
    assert reply.json()["error_code"] == "BACKEND_CREDENTIALS_MISSING"
    assert "PUT /backend_credentials" in reply.json()["message"]
    secret = creds.issuer.issue_refresh_token("carol", BACKEND_AUDIENCE, PUBLIC_CLIENT)
    answers: list[str] = []
    reply = creds.call("PUT", "/backend_credentials", "carol",
                       json={"endpoint": creds.refresh, "refresh_token": secret})
    answers.append(reply.text)
    assert reply.status_code == 200, reply.text
    assert reply.json()["endpoint"] == creds.refresh and reply.json()["method"] == "user_refresh_token"
    # A refresh token the provider does not know is refused at registration.
    reply = creds.call("PUT", "/backend_credentials", "carol",
                       json={"endpoint": creds.refresh, "refresh_token": "rt-not-issued-by-the-provider"})
    answers.append(reply.text)
    assert reply.status_code == 422 and "refused" in reply.json()["message"], reply.text
    # ... and the exchange backend takes no registration.
    reply = creds.call("PUT", "/backend_credentials", "carol", json={"endpoint": creds.exchange, "refresh_token": "x"})
    assert reply.status_code == 422, reply.text
    task_id = creds.create("carol", "carol registered", creds.refresh)
    body = creds.wait_task("carol", task_id)
    answers.append(json.dumps(body))
    assert body["status"] == "finished", body
    assert creds.backend_users("carol registered") == {"carol"}
    listing = creds.call("GET", "/backend_credentials", "carol")
    answers.append(listing.text)
    assert [c["endpoint"] for c in listing.json()["backend_credentials"]] == [creds.refresh]
    assert set(listing.json()["backend_credentials"][0]) == {"endpoint", "method", "registered_at", "refreshed_at"}
    # Other users see none of it.
    assert creds.refresh not in [c["endpoint"] for c in
                                 creds.call("GET", "/backend_credentials", "bob").json()["backend_credentials"]]
    for path in (f"/upscale_tasks/{task_id}", "/upscale_tasks", f"/upscale_tasks/{task_id}/results"):
        answers.append(creds.call("GET", path, "carol").text)
    # The registrations are in the audit trail, with their outcome and the endpoint.
    audit = creds.call("GET", "/audit_log", "ops", params={"actor": "carol", "action": "credentials.register"})
    answers.append(audit.text)
    assert audit.status_code == 200, audit.text
    assert sorted(e["outcome"] for e in audit.json()["entries"]) == ["VALIDATION_ERROR", "VALIDATION_ERROR", "ok"]
    assert {e["resource"] for e in audit.json()["entries"]} == {"backend_credentials"}
    # No token the provider issued (the registered one, the rotated ones, the access tokens) appears in any API
    # answer or in any log line of any service.
    issued = [secret, *creds.issuer.issued_tokens()]
    logs = "\n".join(p.log() for p in creds.processes)
    assert "unit jobs submitted" in logs  # the logs were read
    leaked = [t[:12] for t in issued if any(t in text for text in [*answers, logs])]
    assert not leaked, f"tokens found in answers or logs: {leaked}"
    # Delete: gone from the listing, and a second delete is 404.
    assert creds.call("DELETE", "/backend_credentials", "carol", params={"endpoint": creds.refresh}).status_code == 204
    assert creds.call("GET", "/backend_credentials", "carol").json()["backend_credentials"] == []
    assert creds.call("DELETE", "/backend_credentials", "carol", params={"endpoint": creds.refresh}).status_code == 404


def test_credentials_refused_beyond_refresh_fail_the_users_jobs_with_a_clear_message(creds: CredsStack) -> None:
    creds.issuer.issued_expires_in = 20  # the stored access token needs a refresh at its first use
    try:
        secret = creds.issuer.issue_refresh_token("dave", BACKEND_AUDIENCE, PUBLIC_CLIENT)
        reply = creds.call("PUT", "/backend_credentials", "dave", json={"endpoint": creds.refresh,
                                                                         "refresh_token": secret})
        assert reply.status_code == 200, reply.text
    finally:
        creds.issuer.issued_expires_in = 300
    creds.issuer.revoke("dave")  # e.g. the user signed out everywhere
    task_id = creds.create("dave", "dave revoked", creds.refresh)
    body = creds.wait_task("dave", task_id)
    assert body["status"] == "failed", body
    jobs = body["jobs"] if "jobs" in body else []
    messages = {j.get("message") for j in jobs} or {body.get("message")}
    assert all(m and "could not be refreshed" in m and "dave" in m for m in messages), messages
    assert creds.backend_users("dave revoked") == set()  # nothing was created on the backend
    # Registered again, a retry submits the failed jobs with the new credentials.
    secret = creds.issuer.issue_refresh_token("dave", BACKEND_AUDIENCE, PUBLIC_CLIENT)
    assert creds.call("PUT", "/backend_credentials", "dave",
                      json={"endpoint": creds.refresh, "refresh_token": secret}).status_code == 200
    reply = creds.call("POST", f"/upscale_tasks/{task_id}/retry", "dave")
    assert reply.status_code == 200 and reply.json()["retried"] == 2, reply.text
    deadline = time.monotonic() + 60
    while (body := creds.wait_task("dave", task_id))["status"] != "finished":
        assert time.monotonic() < deadline, body
        time.sleep(0.3)
    assert creds.backend_users("dave revoked") == {"dave"}


def test_grpc_registers_lists_and_deletes_without_returning_the_token(creds: CredsStack) -> None:
    secret = creds.issuer.issue_refresh_token("frank", BACKEND_AUDIENCE, PUBLIC_CLIENT)
    md = (("authorization", f"Bearer {creds.token('frank')}"),)
    with grpc.insecure_channel(creds.grpc) as channel:
        stub = credentials_pb2_grpc.BackendCredentialsServiceStub(channel)
        registered = stub.RegisterBackendCredentials(
            credentials_pb2.RegisterBackendCredentialsRequest(endpoint=creds.refresh, refresh_token=secret),
            metadata=md, timeout=30)
        assert registered.credentials.endpoint == creds.refresh
        assert registered.credentials.method == "user_refresh_token"
        assert registered.credentials.HasField("registered_at")
        listed = stub.ListBackendCredentials(credentials_pb2.ListBackendCredentialsRequest(), metadata=md, timeout=30)
        assert [c.endpoint for c in listed.credentials] == [creds.refresh]
        issued = [secret, *creds.issuer.issued_tokens()]
        assert not [t for t in issued if t.encode() in registered.SerializeToString() + listed.SerializeToString()]
        with pytest.raises(grpc.RpcError) as refused:
            stub.RegisterBackendCredentials(
                credentials_pb2.RegisterBackendCredentialsRequest(endpoint=creds.refresh, refresh_token="rt-unknown"),
                metadata=md, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stub.DeleteBackendCredentials(credentials_pb2.DeleteBackendCredentialsRequest(endpoint=creds.refresh),
                                      metadata=md, timeout=30)
        with pytest.raises(grpc.RpcError) as gone:
            stub.DeleteBackendCredentials(credentials_pb2.DeleteBackendCredentialsRequest(endpoint=creds.refresh),
                                          metadata=md, timeout=30)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as unauthenticated:
            stub.ListBackendCredentials(credentials_pb2.ListBackendCredentialsRequest(), timeout=30)
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_gateway_exchanging_tokens_needs_oidc_sign_in(service_env: dict[str, str]) -> None:
    backends = [{"endpoint": "http://127.0.0.1:9/openeo/1.2",
                 "auth": {"method": "user_token_exchange", "token_endpoint": "http://127.0.0.1:9/token",
                          "client_id": "c", "client_secret": "s", "provider_id": "p"}}]
    env = {**service_env, "OPENEO_BACKENDS": json.dumps(backends), "AUTH_MODE": "none",
           "CREDENTIALS_KEY": Fernet.generate_key().decode(), "GATEWAY_HTTP_PORT": str(free_port()),
           "GATEWAY_GRPC_PORT": str(free_port()), "MIGRATE_ON_START": "false"}
    done = subprocess.run([sys.executable, "-m", "gateway"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "user_token_exchange, which exchanges the caller's OIDC access token: it needs AUTH_MODE=oidc" in (
        done.stderr + done.stdout), done.stderr[-2000:]


@pytest.mark.parametrize("module", ["gateway", "services.dispatcher", "services.monitor"])
def test_a_service_with_per_user_backends_and_no_key_refuses_to_start(service_env: dict[str, str],
                                                                      module: str) -> None:
    backends = [{"endpoint": "http://127.0.0.1:9/openeo/1.2",
                 "auth": {"method": "user_refresh_token", "client_id": "c", "provider_id": "p"}}]
    env = {k: v for k, v in service_env.items() if k != "CREDENTIALS_KEY"}
    env.update({"OPENEO_BACKENDS": json.dumps(backends), "AUTH_MODE": "none", "GATEWAY_HTTP_PORT": str(free_port()),
                "GATEWAY_GRPC_PORT": str(free_port()), "MIGRATE_ON_START": "false"})
    done = subprocess.run([sys.executable, "-m", module], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "CREDENTIALS_KEY is not set" in done.stderr + done.stdout, done.stderr[-2000:]
    assert "http://127.0.0.1:9/openeo/1.2 (user_refresh_token)" in done.stderr + done.stdout
