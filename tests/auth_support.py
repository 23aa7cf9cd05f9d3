"""Support for the authentication, isolation and limit tests: a local OpenID issuer (keys generated here, key
rotation), gateways started with AUTH_MODE=token / oidc and tight limits, and clients that send a token over
HTTP, gRPC and WebSocket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import requests
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.infra import ServiceProcess, free_port, unique_name, wait_grpc_serving, wait_http_ok, with_database
from tests.support import LocalOpenEO, admin_sql, drop_private_resources
from tests.tasks_support import Gateway
from upscaling.v1 import upscaling_pb2_grpc

# API keys of the token-mode gateways (each at least 16 characters).
KEYS = {
    "alice": "alice-key-7f3a9c2e41d8b6",
    "bob": "bob-key-0c1d2e3f4a5b6c7d",
    "ops": "ops-admin-key-9a8b7c6d5e4f",
}
AUDIENCE = "upscaling-api"
ADMIN_ROLE = "upscaling-admin"


# ---- a local OpenID Connect issuer ---------------------------------------------------------------------------

@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    def jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


def new_key() -> SigningKey:
    return SigningKey(uuid.uuid4().hex[:12], rsa.generate_private_key(public_exponent=65537, key_size=2048))


@dataclass
class OidcIssuer:
    """Serves `/.well-known/openid-configuration`, the JWKS of its current keys and a token endpoint with the
    RFC 8693 token-exchange and the refresh_token grants (for its `clients`); signs tokens.

    A token exchange verifies the subject token (signature, issuer, expiry) and issues, for the same `sub`, an
    access token for the requested `audience` (default: the client id) valid `issued_expires_in` seconds, and a
    refresh token. A refresh token is used once: its grant issues a new access token and a new refresh token
    (rotation). `revoke(sub)` withdraws every refresh token of a user."""

    url: str = ""
    keys: list[SigningKey] = field(default_factory=lambda: [new_key()])
    jwks_requests: int = 0
    server: ThreadingHTTPServer | None = None
    clients: dict[str, str | None] = field(default_factory=dict)  # client id -> secret (None: public client)
    issued_expires_in: float = 300
    grants: Counter[str] = field(default_factory=Counter)
    refresh_tokens: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # token -> sub, aud, client
    lock: threading.Lock = field(default_factory=threading.Lock)
    issued: list[str] = field(default_factory=list)  # every access and refresh token of the token endpoint

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/protocol/openid-connect/token"

    def issue_refresh_token(self, sub: str, audience: str, client_id: str) -> str:
        """A refresh token of `sub` for `audience` (as a user's sign-in at the backend's provider would get)."""
        token = f"rt-{uuid.uuid4().hex}{uuid.uuid4().hex}"
        with self.lock:
            self.refresh_tokens[token] = (sub, audience, client_id)
            self.issued.append(token)
        return token

    def issued_tokens(self) -> list[str]:
        with self.lock:
            return list(self.issued)

    def revoke(self, sub: str) -> None:
        with self.lock:
            for token in [t for t, v in self.refresh_tokens.items() if v[0] == sub]:
                del self.refresh_tokens[token]

    def _tokens(self, sub: str, audience: str, client_id: str) -> dict[str, Any]:
        access = self.token(sub, audience=audience, expires_in=self.issued_expires_in, azp=client_id)
        with self.lock:
            self.issued.append(access)
        return {"access_token": access, "token_type": "Bearer", "expires_in": int(self.issued_expires_in),
                "refresh_token": self.issue_refresh_token(sub, audience, client_id),
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}

    def grant(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer (status, JSON) to a form."""
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret"))
        if client_id not in self.clients or (self.clients[client_id] is not None
                                             and secret != self.clients[client_id]):
            return 401, {"error": "invalid_client"}
        grant_type = form.get("grant_type", "")
        self.grants[grant_type] += 1
        if grant_type == "urn:ietf:params:oauth:grant-type:token-exchange":
            if self.clients[client_id] is None:
                return 401, {"error": "invalid_client", "error_description": "a public client cannot exchange"}
            try:
                claims = jwt.decode(form.get("subject_token", ""), key=self.keys[0].private.public_key(),
                                    algorithms=["RS256"], issuer=self.url, options={"verify_aud": False})
            except jwt.PyJWTError as exc:
                return 400, {"error": "invalid_grant", "error_description": f"subject_token: {type(exc).__name__}"}
            return 200, self._tokens(claims["sub"], form.get("audience") or client_id, client_id)
        if grant_type == "refresh_token":
            with self.lock:
                found = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if found is None or found[2] != client_id:
                return 400, {"error": "invalid_grant", "error_description": "refresh token expired or revoked"}
            return 200, self._tokens(found[0], found[1], client_id)
        return 400, {"error": "unsupported_grant_type"}

    def start(self) -> OidcIssuer:
        """Serve on a free port; the issuer URL has a path, as Keycloak's (`/realms/test`)."""
        issuer = self
        prefix = "/realms/test"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path[len(prefix):] if self.path.startswith(prefix) else ""
                if path == "/.well-known/openid-configuration":
                    body: Any = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                                 "token_endpoint": issuer.token_endpoint,
                                 "grant_types_supported": ["refresh_token",
                                                           "urn:ietf:params:oauth:grant-type:token-exchange"],
                                 "id_token_signing_alg_values_supported": ["RS256"]}
                elif path == "/jwks":
                    issuer.jwks_requests += 1
                    body = {"keys": [k.jwk() for k in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                if self.path != prefix + "/protocol/openid-connect/token":
                    self.send_error(404)
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                basic = None
                header = self.headers.get("Authorization") or ""
                if header.lower().startswith("basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    basic = (urllib.parse.unquote(user), urllib.parse.unquote(password))
                status, body = issuer.grant(form, basic)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{prefix}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def rotate(self) -> SigningKey:
        """Publish a new key and withdraw the old ones; returns the new key."""
        key = new_key()
        self.keys = [key]
        return key

    def token(self, sub: str, *, key: SigningKey | None = None, audience: str = AUDIENCE, issuer: str | None = None,
              expires_in: float = 300, not_before_in: float | None = None, algorithm: str = "RS256",
              **claims: Any) -> str:
        """A signed JWT for `sub` (by the current key unless `key` is given)."""
        now = int(time.time())
        payload: dict[str, Any] = {"sub": sub, "aud": audience, "iss": issuer or self.url, "iat": now,
                                   "exp": now + int(expires_in), **claims}
        if not_before_in is not None:
            payload["nbf"] = now + int(not_before_in)
        signer = key or self.keys[0]
        return jwt.encode(payload, signer.private, algorithm=algorithm, headers={"kid": signer.kid})


def oidc_tokens(issuer: OidcIssuer) -> dict[str, str]:
    """Fresh tokens of alice, bob and the admin ops, signed with the issuer's current key."""
    return {"alice": issuer.token("alice", expires_in=3600), "bob": issuer.token("bob", expires_in=3600),
            "ops": issuer.token("ops", expires_in=3600, realm_access={"roles": ["viewer", ADMIN_ROLE]})}


# ---- gateways with authentication ----------------------------------------------------------------------------

@dataclass
class AuthGateway(Gateway):
    """A gateway of these tests; `tiler` is its own tiler process when it has one."""

    tiler: ServiceProcess | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    def md(self, user: str | None = None, token: str | None = None) -> tuple[tuple[str, str], ...]:
        """gRPC metadata with the bearer token of `user` (or `token`)."""
        token = token or (self.tokens[user] if user else None)
        return (("authorization", f"Bearer {token}"),) if token else ()

    def headers(self, user: str | None = None, token: str | None = None) -> dict[str, str]:
        token = token or (self.tokens[user] if user else None)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, user: str | None = None, token: str | None = None,
             **kwargs: Any) -> requests.Response:
        """An HTTP request to the gateway as `user` (its token) or with a raw `token`."""
        return requests.request(method, f"{self.http}{path}", headers=self.headers(user, token), timeout=30,
                                **kwargs)

    def ws_url(self, path: str) -> str:
        return self.http.replace("http://", "ws://") + path

    def stub(self, channel: grpc.Channel) -> upscaling_pb2_grpc.UpscalingServiceStub:
        return upscaling_pb2_grpc.UpscalingServiceStub(channel)

    def create(self, user: str, n: int = 1, **changes: Any) -> int:
        """A task of `user` over HTTP (201 asserted)."""
        reply = self.call("POST", "/upscale_tasks", user, json=self.task_body(n, **changes))
        assert reply.status_code == 201, reply.text
        return reply.json()["id"]


@contextlib.contextmanager
def auth_gateway(stack: Any, service_env: dict[str, str], infra: Any, tmp: Path, env: dict[str, str],
                 tokens: dict[str, str] | None = None, tiler_env: dict[str, str] | None = None
                 ) -> Iterator[AuthGateway]:
    """A gateway (own database, broker prefix and local openEO backend; no dispatcher) with `env` on top; with
    `tiler_env`, also a tiler process of its own started with it."""
    backend = LocalOpenEO()
    prefix = unique_name("auth")
    db_name = unique_name("auth_test")
    asyncio.run(admin_sql(infra.admin_database_url, f'CREATE DATABASE "{db_name}"'))
    database_url = with_database(infra.admin_database_url, db_name)
    tiler: ServiceProcess | None = None
    tiler_address = stack.tiler_address
    proc: ServiceProcess | None = None
    try:
        if tiler_env is not None:
            port = free_port()
            tiler = ServiceProcess("auth-tiler", "services.tiler",
                                   {**service_env, **tiler_env, "TILER_PORT": str(port)}, tmp / "tiler.log")
            tiler.start()
            tiler_address = f"127.0.0.1:{port}"
            wait_grpc_serving(tiler_address, tiler)
        http_port, grpc_port = free_port(), free_port()
        full_env = {**service_env, "BROKER_PREFIX": prefix, "DATABASE_URL": database_url,
                    "TILER_ADDRESS": tiler_address, "GATEWAY_HTTP_PORT": str(http_port),
                    "GATEWAY_GRPC_PORT": str(grpc_port), "OPENEO_BACKENDS": backend.backends_env(),
                    "UDP_ALLOWED_URLS": backend.udp_catalogue,
                    "MAX_DIMENSION_VALUES": "50", "OUTBOX_POLL_S": "0.5", "UDP_FETCH_TIMEOUT_S": "5", **env}
        proc = ServiceProcess("auth-gateway", "gateway", full_env, tmp / "gateway.log")
        proc.start()
        wait_http_ok(f"http://127.0.0.1:{http_port}/health", proc)
        wait_grpc_serving(f"127.0.0.1:{grpc_port}", proc)
        yield AuthGateway(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", backend, prefix,
                          database_url, infra.rabbitmq_url, tiler=tiler, tokens=dict(tokens or {}))
    finally:
        if proc is not None:
            proc.stop()
        if tiler is not None:
            tiler.stop()
        backend.stop()
        asyncio.run(drop_private_resources(infra.admin_database_url, db_name, infra.rabbitmq_url, prefix))


@contextlib.contextmanager
def token_mode_gateway(stack: Any, service_env: dict[str, str], infra: Any, tmp: Path,
                       env: dict[str, str] | None = None) -> Iterator[AuthGateway]:
    """A gateway in AUTH_MODE=token with the keys of KEYS in a file (ops is an admin), `env` on top."""
    keys_file = tmp / "keys.json"
    keys_file.write_text(json.dumps({KEYS["alice"]: "alice", KEYS["bob"]: "bob",
                                     KEYS["ops"]: {"user": "ops", "admin": True}}))
    with auth_gateway(stack, service_env, infra, tmp,
                      {"AUTH_MODE": "token", "AUTH_TOKENS_FILE": str(keys_file), **(env or {})}, tokens=KEYS) as gw:
        yield gw


@pytest.fixture(scope="session")
def token_gateway(stack: Any, service_env: dict[str, str], infra: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthGateway]:
    """AUTH_MODE=token with the keys of KEYS in a file (ops is an admin)."""
    with token_mode_gateway(stack, service_env, infra, Path(tmp_path_factory.mktemp("token-gw"))) as gw:
        yield gw


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[OidcIssuer]:
    issuer = OidcIssuer().start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="session")
def oidc_gateway(stack: Any, service_env: dict[str, str], infra: Any, oidc_issuer: OidcIssuer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthGateway]:
    """AUTH_MODE=oidc against the local issuer; admins have ADMIN_ROLE in `realm_access.roles`."""
    tmp = Path(tmp_path_factory.mktemp("oidc-gw"))
    env = {"AUTH_MODE": "oidc", "OIDC_ISSUER": oidc_issuer.url, "OIDC_AUDIENCE": AUDIENCE,
           "OIDC_LEEWAY_S": "30", "OIDC_JWKS_MIN_REFRESH_S": "2", "OIDC_ADMIN_CLAIM": "realm_access.roles",
           "OIDC_ADMIN_VALUE": ADMIN_ROLE}
    with auth_gateway(stack, service_env, infra, tmp, env) as gw:
        yield gw


# Limits of the limits gateway (and its own tiler).
LIMITS = {
    "HTTP_MAX_BODY_BYTES": 64 * 1024,
    "GRPC_MAX_MESSAGE_BYTES": 64 * 1024,
    "MAX_AOI_VERTICES": 50,
    "MAX_TILES": 20,
    "MAX_DIMENSION_VALUES": 5,
    "MAX_TASKS_IN_FLIGHT_PER_USER": 2,
    "MAX_WATCHES_PER_USER": 2,
    "MAX_REQUESTS_PER_S_PER_USER": 2,
    "MAX_REQUESTS_BURST_PER_USER": 15,
    "WS_MAX_MESSAGES_PER_S": 1,
    "WS_MAX_MESSAGES_BURST": 3,
}
LIMIT_USERS = ("sizes", "inflight", "racer", "watcher", "ratey", "wsrate", "other")


@pytest.fixture(scope="session")
def limits_gateway(stack: Any, service_env: dict[str, str], infra: Any,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthGateway]:
    """AUTH_MODE=token (keys in AUTH_TOKENS) with tight limits and a tiler of its own; one user per limit test,
    so the per-user limits of one test do not touch another."""
    tmp = Path(tmp_path_factory.mktemp("limits-gw"))
    tokens = {user: f"{user}-key-{uuid.uuid4().hex}" for user in LIMIT_USERS}
    env = {"AUTH_MODE": "token", "AUTH_TOKENS": json.dumps({t: u for u, t in tokens.items()}),
           **{k: str(v) for k, v in LIMITS.items()}}
    tiler_env = {"MAX_TILES": str(LIMITS["MAX_TILES"]), "MAX_AOI_VERTICES": str(LIMITS["MAX_AOI_VERTICES"])}
    with auth_gateway(stack, service_env, infra, tmp, env, tokens=tokens, tiler_env=tiler_env) as gw:
        yield gw


# ---- WebSocket helpers ---------------------------------------------------------------------------------------

async def ws_messages_until_close(url: str, headers: dict[str, str] | None = None, limit_s: float = 10.0
                                  ) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every message a WebSocket receives until the server closes it: (messages, close code, reason)."""
    messages: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), limit_s)))
        except websockets.ConnectionClosed as exc:
            rcvd = exc.rcvd
            return messages, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else "")


async def ws_first(url: str, headers: dict[str, str] | None = None, limit_s: float = 10.0) -> dict[str, Any]:
    """The first message of a WebSocket (closed afterwards)."""
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), limit_s))


@pytest.fixture(params=["token", "oidc"])
def gw(request: pytest.FixtureRequest) -> AuthGateway:
    """The gateway of each authenticating mode, with valid tokens of alice, bob and ops (admin)."""
    if request.param == "token":
        return request.getfixturevalue("token_gateway")
    gateway = request.getfixturevalue("oidc_gateway")
    gateway.tokens = oidc_tokens(request.getfixturevalue("oidc_issuer"))
    return gateway
