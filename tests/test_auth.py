"""Authentication of the gateway in each mode, on HTTP, gRPC and WebSocket: accepted and rejected requests, the
open paths (health, reflection, API description), OIDC token checks (exp/nbf leeway, aud, iss, algorithms, key
rotation, rate-limited JWKS refetch), and credentials kept out of the logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time

import grpc
import jwt
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.auth import AuthSettings, create_authenticator, load_auth_settings
from gateway.auth.tokens import parse_tokens
from tests import auth_support, tasks_support
from tests.auth_support import AUDIENCE, KEYS, AuthGateway, OidcIssuer, new_key, oidc_tokens, ws_first
from tests.auth_support import ws_messages_until_close as ws_until_close
from tests.infra import free_port
from tests.support import POLYGON, db_connect
from tests.tasks_support import Gateway
from upscaling.errors import Unavailable
from upscaling.logs import JsonFormatter, RedactingFormatter, register_secret
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc, upscaling_pb2, upscaling_pb2_grpc

token_gateway = auth_support.token_gateway
oidc_gateway = auth_support.oidc_gateway
oidc_issuer = auth_support.oidc_issuer
gw = auth_support.gw
tasks_gateway = tasks_support.tasks_gateway


def assert_401(reply: requests.Response, needle: str = "") -> None:
    assert reply.status_code == 401, reply.text
    body = reply.json()
    assert body["status"] == "error" and body["error_code"] == "AUTHENTICATION_FAILED", body
    assert needle.lower() in body["message"].lower(), body["message"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


# ---- HTTP ------------------------------------------------------------------------------------------------------

def test_http_rejects_missing_and_invalid_tokens(gw: AuthGateway) -> None:
    assert_401(gw.call("GET", "/upscale_tasks"), "missing bearer token")
    assert_401(gw.call("GET", "/upscale_tasks", token="not-a-valid-token-at-all"))
    reply = requests.get(f"{gw.http}/upscale_tasks", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}, timeout=10)
    assert_401(reply, "Bearer <token>")
    assert_401(gw.call("POST", "/upscale_tasks", json=gw.task_body(1)))
    assert_401(gw.call("GET", "/jobs_status"))
    assert_401(gw.call("POST", "/tiles", json={"aoi": POLYGON, "grid": "20x20km"}))
    assert_401(gw.call("POST", "/params", json={"label": "openeo", "service": gw.task_body()["service"]}))
    assert_401(gw.call("GET", "/unit_jobs/1"))


def test_http_accepts_valid_tokens_and_keeps_open_paths_open(gw: AuthGateway) -> None:
    assert gw.call("GET", "/upscale_tasks", "alice").status_code == 200
    assert gw.call("GET", "/jobs_status", "bob").status_code == 200
    tiles = gw.call("POST", "/tiles", "alice", json={"aoi": POLYGON, "grid": "20x20km"})
    assert tiles.status_code == 201 and tiles.json()["type"] == "GeometryCollection"
    task_id = gw.create("alice")
    assert gw.call("GET", f"/upscale_tasks/{task_id}", "alice").status_code == 200
    for path in ("/health", "/openapi.json", "/metrics"):
        assert requests.get(f"{gw.http}{path}", timeout=10).status_code == 200, path


def test_openapi_declares_the_bearer_token_where_it_is_required(gw: AuthGateway) -> None:
    spec = requests.get(f"{gw.http}/openapi.json", timeout=10).json()
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/metrics"]["get"]["security"] == []
    assert "security" not in spec["paths"]["/upscale_tasks"]["post"]  # the document-wide requirement applies


# ---- gRPC ------------------------------------------------------------------------------------------------------

def test_grpc_rejects_missing_and_invalid_tokens_and_accepts_valid_ones(gw: AuthGateway) -> None:
    with grpc.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        tiler = tiler_pb2_grpc.TilerServiceStub(channel)
        for metadata in ((), gw.md(token="not-a-valid-token-at-all"), (("authorization", "Basic abc"),)):
            for call in (lambda md: stub.ListTasks(upscaling_pb2.ListTasksRequest(), metadata=md, timeout=10),
                         lambda md: stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=1), metadata=md, timeout=10),
                         lambda md: tiler.ListGrids(tiler_pb2.ListGridsRequest(), metadata=md, timeout=10)):
                with pytest.raises(grpc.RpcError) as err:
                    call(metadata)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value
                assert err.value.details()
        stream = stub.WatchTask(upscaling_pb2.WatchTaskRequest(task_id=1), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            next(iter(stream))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        assert stub.ListTasks(upscaling_pb2.ListTasksRequest(), metadata=gw.md("alice"), timeout=10) is not None
        assert tiler.ListGrids(tiler_pb2.ListGridsRequest(), metadata=gw.md("bob"), timeout=10).grids
        reply = tiler.TileAoi(tiler_pb2.TileAoiRequest(aoi_geojson=json.dumps(POLYGON), grid="20x20km"),
                              metadata=gw.md("alice"), timeout=30)
        assert len(reply.tiles) >= 1

        # health and reflection need no token
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(iter(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                     timeout=5)))
        assert "upscaling.v1.UpscalingService" in {s.name for s in answer.list_services_response.service}


# ---- WebSocket -------------------------------------------------------------------------------------------------

async def test_websocket_closes_1008_without_a_valid_token(gw: AuthGateway) -> None:
    task_id = await asyncio.to_thread(gw.create, "alice")
    for path in (f"/ws/upscale_tasks/{task_id}?interval=1", f"/ws/upscale_tasks/{task_id}?interval=1&token=bogus",
                 "/ws/jobs_status?interval=1", "/ws/jobs_status?token="):
        messages, code, reason = await ws_until_close(gw.ws_url(path))
        assert code == 1008, (path, code, reason)
        assert reason == "AUTHENTICATION_FAILED"
        assert [m["type"] for m in messages] == ["error"] and messages[0]["message"], messages
    messages, code, _ = await ws_until_close(gw.ws_url(f"/ws/upscale_tasks/{task_id}"),
                                             headers={"Authorization": "Bearer bogus-token-123"})
    assert code == 1008


async def test_websocket_accepts_the_header_or_the_token_query_parameter(gw: AuthGateway) -> None:
    task_id = await asyncio.to_thread(gw.create, "alice")
    first = await ws_first(gw.ws_url(f"/ws/upscale_tasks/{task_id}?interval=1"), headers=gw.headers("alice"))
    assert first["type"] == "init" and first["task_id"] == task_id
    first = await ws_first(gw.ws_url(f"/ws/upscale_tasks/{task_id}?interval=1&token={gw.tokens['alice']}"))
    assert first["type"] == "init"
    first = await ws_first(gw.ws_url(f"/ws/jobs_status?interval=1&token={gw.tokens['bob']}"))
    assert first["type"] == "init"


# ---- OIDC token checks -----------------------------------------------------------------------------------------

def test_oidc_checks_exp_nbf_aud_iss_and_algorithm(oidc_gateway: AuthGateway, oidc_issuer: OidcIssuer) -> None:
    gw, issuer = oidc_gateway, oidc_issuer

    def status(token: str) -> tuple[int, str]:
        reply = gw.call("GET", "/upscale_tasks", token=token)
        return reply.status_code, reply.json().get("message", "") if reply.status_code != 200 else ""

    assert status(issuer.token("carol"))[0] == 200
    assert status(issuer.token("carol", expires_in=-5))[0] == 200          # within the 30 s leeway
    assert status(issuer.token("carol", not_before_in=5))[0] == 200        # within the leeway
    code, message = status(issuer.token("carol", expires_in=-120))
    assert code == 401 and "expired" in message
    code, message = status(issuer.token("carol", not_before_in=600))
    assert code == 401 and "not valid yet" in message
    code, message = status(issuer.token("carol", audience="another-api"))
    assert code == 401 and "aud" in message
    code, message = status(issuer.token("carol", issuer="http://127.0.0.1:1/realms/other"))
    assert code == 401 and "iss" in message
    now = int(time.time())
    claims = {"sub": "carol", "aud": AUDIENCE, "iss": issuer.url, "exp": now + 60}
    forged_hs = jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": issuer.keys[0].kid})
    code, message = status(forged_hs)
    assert code == 401 and "algorithm" in message
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert status(unsigned)[0] == 401
    no_sub = jwt.encode({k: v for k, v in claims.items() if k != "sub"}, issuer.keys[0].private, algorithm="RS256",
                        headers={"kid": issuer.keys[0].kid})
    assert status(no_sub)[0] == 401
    tampered = issuer.token("carol").rsplit(".", 1)[0] + ".AAAA"
    assert status(tampered)[0] == 401
    assert status("not.a.jwt")[0] == 401


def test_oidc_unknown_key_refetches_the_jwks_at_most_once_per_interval(oidc_gateway: AuthGateway,
                                                                        oidc_issuer: OidcIssuer) -> None:
    gw, issuer = oidc_gateway, oidc_issuer
    assert gw.call("GET", "/upscale_tasks", token=issuer.token("dave")).status_code == 200
    stranger = issuer.token("mallory", key=new_key())   # signed by a key the issuer never published
    before = issuer.jwks_requests
    started = time.monotonic()
    replies = [gw.call("GET", "/upscale_tasks", token=stranger) for _ in range(20)]
    elapsed = time.monotonic() - started
    assert all(r.status_code == 401 for r in replies)
    assert "unknown key" in replies[0].json()["message"]
    # OIDC_JWKS_MIN_REFRESH_S=2: at most one fetch per 2 s (plus one at the start of the window)
    assert issuer.jwks_requests - before <= 1 + int(elapsed / 2), (issuer.jwks_requests - before, elapsed)


def test_oidc_key_rotation(oidc_gateway: AuthGateway, oidc_issuer: OidcIssuer) -> None:
    gw, issuer = oidc_gateway, oidc_issuer
    old = issuer.token("erin")
    assert gw.call("GET", "/upscale_tasks", token=old).status_code == 200
    issuer.rotate()
    new = issuer.token("erin")
    deadline = time.monotonic() + 15
    while True:   # the refetch may wait for OIDC_JWKS_MIN_REFRESH_S after the previous one
        reply = gw.call("GET", "/upscale_tasks", token=new)
        if reply.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert reply.status_code == 200, reply.text
    # the old key was withdrawn with the refetch: its tokens are no longer accepted
    assert gw.call("GET", "/upscale_tasks", token=old).status_code == 401


def test_oidc_admin_claim_and_subject(oidc_gateway: AuthGateway, oidc_issuer: OidcIssuer) -> None:
    gw, issuer = oidc_gateway, oidc_issuer
    gw.tokens = oidc_tokens(issuer)
    task_id = gw.create("alice")
    assert gw.call("GET", f"/upscale_tasks/{task_id}", "ops").status_code == 200
    viewer = issuer.token("ops2", realm_access={"roles": ["viewer"]})
    assert gw.call("GET", f"/upscale_tasks/{task_id}", token=viewer).status_code == 404


# ---- token mode specifics, configuration -----------------------------------------------------------------------

def test_token_admin_key_sees_every_task(token_gateway: AuthGateway) -> None:
    gw = token_gateway
    task_id = gw.create("alice")
    assert gw.call("GET", f"/upscale_tasks/{task_id}", "bob").status_code == 404
    assert gw.call("GET", f"/upscale_tasks/{task_id}", "ops").status_code == 200
    listed = gw.call("GET", "/upscale_tasks", "ops", params={"page_size": 500}).json()["tasks"]
    assert task_id in {t["id"] for t in listed}


def test_token_list_and_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = parse_tokens({"k" * 16: "alice", "x" * 20: {"user": "ops", "admin": True}})
    assert [p.user_id for _, p in keys] == ["alice", "ops"] and keys[1][1].admin
    for bad in ({}, {"short": "alice"}, {"k" * 16: ""}, {"k" * 16: {"user": "a", "admin": "yes"}}, ["k" * 16]):
        with pytest.raises(ValueError) as err:
            parse_tokens(bad)
        assert "k" * 16 not in str(err.value)   # never echo a key
    monkeypatch.setenv("AUTH_MODE", "kerberos")
    with pytest.raises(ValueError, match="AUTH_MODE must be one of none, token, oidc"):
        load_auth_settings()
    monkeypatch.setenv("AUTH_MODE", "token")
    with pytest.raises(ValueError, match="AUTH_TOKENS"):
        load_auth_settings()
    monkeypatch.setenv("AUTH_MODE", "oidc")
    with pytest.raises(ValueError, match="OIDC_ISSUER"):
        load_auth_settings()
    monkeypatch.setenv("AUTH_MODE", "")
    assert load_auth_settings().mode == "none"


# ---- mode none -------------------------------------------------------------------------------------------------

async def test_mode_none_needs_no_token_and_owns_everything_as_anonymous(tasks_gateway: Gateway) -> None:
    gw = tasks_gateway
    task_id = await asyncio.to_thread(tasks_support.create, gw, 1)
    reply = await asyncio.to_thread(requests.get, f"{gw.http}/upscale_tasks/{task_id}", timeout=10)
    assert reply.status_code == 200
    # credentials are ignored in mode none (one anonymous user)
    for header in ("Bearer whatever-123", "Basic ZGVtbzpkZW1v"):
        reply = await asyncio.to_thread(requests.get, f"{gw.http}/upscale_tasks/{task_id}", timeout=10,
                                        headers={"Authorization": header})
        assert reply.status_code == 200, header
    with grpc.insecure_channel(gw.grpc) as channel:
        stub = upscaling_pb2_grpc.UpscalingServiceStub(channel)
        assert stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=task_id), timeout=10).task.id == task_id
        assert stub.GetTask(upscaling_pb2.GetTaskRequest(task_id=task_id), timeout=10,
                            metadata=(("authorization", "Basic ZGVtbzpkZW1v"),)).task.id == task_id
    first = await ws_first(gw.http.replace("http://", "ws://") + f"/ws/upscale_tasks/{task_id}?interval=1")
    assert first["type"] == "init"
    conn = await db_connect(gw.database_url)
    try:
        assert await conn.fetchval("SELECT owner FROM upscale_tasks WHERE id = $1", task_id) == "anonymous"
        assert await conn.fetchval("SELECT count(*) FROM unit_jobs WHERE task_id = $1 AND owner <> 'anonymous'",
                                   task_id) == 0
    finally:
        await conn.close()
    spec = (await asyncio.to_thread(requests.get, f"{gw.http}/openapi.json", timeout=10)).json()
    assert "security" not in spec and "securitySchemes" not in spec.get("components", {})


# ---- secrets ---------------------------------------------------------------------------------------------------

def test_log_lines_are_redacted() -> None:
    register_secret("backend-password-4711")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(JsonFormatter("test")))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling with Authorization: Bearer abc.def-123 and ?token=s3cr3t-token-9",
                       extra={"authorization": "Bearer zzz-999-yyy", "headers": {"Authorization": "Basic ZGVtbzpk"},
                              "url": "amqp://guest:guest@127.0.0.1:5672/", "note": "pw backend-password-4711",
                              "jwt": jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")})
        try:
            raise RuntimeError("failed with password=hunter2-hunter2")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    for secret in ("abc.def-123", "s3cr3t-token-9", "zzz-999-yyy", "ZGVtbzpk", "guest@", "backend-password-4711",
                   "hunter2", "eyJ"):
        assert secret not in text, (secret, text)
    assert text.count("[REDACTED]") >= 8
    entries = [json.loads(line) for line in text.splitlines()]
    assert entries[0]["url"] == "amqp://guest:[REDACTED]@127.0.0.1:5672/"


def test_gateway_logs_and_answers_carry_no_credentials(token_gateway: AuthGateway) -> None:
    gw = token_gateway
    task_id = gw.create("alice")
    body = gw.call("GET", f"/upscale_tasks/{task_id}", "alice").json()
    assert set(body["service"]) <= {"endpoint", "application", "namespace"}
    assert all(set(j["service"]) <= {"endpoint", "application", "namespace"} for j in body["jobs"])
    assert "password" not in json.dumps(body) and "demo" not in json.dumps(body["service"])
    with grpc.insecure_channel(gw.grpc) as channel:
        task = upscaling_pb2_grpc.UpscalingServiceStub(channel).GetTask(
            upscaling_pb2.GetTaskRequest(task_id=task_id), metadata=gw.md("alice"), timeout=10).task
    assert task.service.endpoint == gw.backend.endpoint and task.service.application == gw.backend.application
    # a WebSocket with ?token= and requests with keys happened in this run; none of the keys is in the log
    asyncio.run(ws_first(gw.ws_url(f"/ws/upscale_tasks/{task_id}?token={KEYS['alice']}")))
    log = gw.process.log()
    for key in KEYS.values():
        assert key not in log
    assert "token=[REDACTED]" in log   # uvicorn logs the WebSocket path: its query token is redacted
    assert "Bearer " + KEYS["alice"][:6] not in log


async def test_oidc_unreachable_issuer_is_unavailable_not_a_crash(oidc_issuer: OidcIssuer) -> None:
    settings = AuthSettings(mode="oidc", oidc_issuer=f"http://127.0.0.1:{free_port()}/realms/gone",
                            oidc_audience=AUDIENCE, oidc_timeout_s=2)
    authenticator = create_authenticator(settings)
    try:
        with pytest.raises(Unavailable, match="signing keys cannot be fetched"):
            await authenticator.authenticate(oidc_issuer.token("zoe"))
    finally:
        await authenticator.close()
