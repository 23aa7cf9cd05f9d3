"""Authentication of the HTTP bridge and its WebSockets (ASGI middleware), the per-user request rate, and the
incoming message rate of each WebSocket.

HTTP: `Authorization: Bearer <token>`; missing or invalid -> 401 with the APEx error envelope.
WebSocket: the same header, or `?token=<token>` as APEx clients send it, checked at the handshake; missing or
invalid -> the socket is accepted, gets an `error` message and is closed with code 1008 (policy violation).
Open paths: `/health`, `/metrics` (aggregate counts only, for Prometheus) and the API description
(`/openapi.json`, `/docs`, `/redoc`). The caller of a request is stored in the ASGI scope; routes read it with
the `caller` dependency.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator, Principal, bearer_token
from gateway.http_errors import error_body
from upscaling.errors import ServiceError, Unauthenticated
from upscaling.limits import RateLimiter, TokenBucket, exceeded

PRINCIPAL_KEY = "upscaling.principal"
OPEN_PATHS = frozenset({"/health", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
WS_POLICY_VIOLATION = 1008


def caller(connection: HTTPConnection) -> Principal:
    """FastAPI dependency: the authenticated caller of this request or WebSocket (fail closed when missing)."""
    principal = connection.scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise Unauthenticated("the request was not authenticated")
    return principal


def _token(scope: Scope) -> str | None:
    """The bearer token of a request: the Authorization header, or (WebSocket only) the `token` query parameter."""
    for key, value in scope.get("headers") or ():
        if key == b"authorization":
            return bearer_token(value.decode("latin-1"))
    if scope["type"] == "websocket":
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if key == "token":
                return value or None
    return None


class AuthMiddleware:
    """Authenticates every HTTP request and WebSocket handshake outside OPEN_PATHS."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, rate: RateLimiter, ws_messages_per_s: float,
                 ws_messages_burst: int, open_paths: Collection[str] = OPEN_PATHS) -> None:
        self.app = app
        self.authenticator = authenticator
        self.rate = rate
        self.ws_messages_per_s = ws_messages_per_s
        self.ws_messages_burst = ws_messages_burst
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.open_paths:
            await self.app(scope, receive, send)
            return
        try:
            token = _token(scope) if self.authenticator.reads_token else None
            principal = await self.authenticator.authenticate(token)
            self.rate.check(principal.user_id)
        except ServiceError as exc:
            if scope["type"] == "websocket":
                await _refuse_websocket(receive, send, exc)
            else:
                await _refuse_http(send, exc)
            return
        scope[PRINCIPAL_KEY] = principal
        if scope["type"] == "websocket" and self.ws_messages_per_s > 0:
            receive, send = self._limit_ws_messages(receive, send)
        await self.app(scope, receive, send)

    def _limit_ws_messages(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """Close the socket (1008) when the client sends more than WS_MAX_MESSAGES_PER_S messages (burst
        WS_MAX_MESSAGES_BURST); the application then sees a disconnect and whatever it still sends is dropped."""
        bucket = TokenBucket(self.ws_messages_per_s, self.ws_messages_burst)
        closed = False

        async def limited_send(message: Message) -> None:
            if not closed:
                await send(message)

        async def limited_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] == "websocket.receive" and not bucket.take():
                closed = True
                reason = exceeded("WS_MAX_MESSAGES_PER_S", f"{self.ws_messages_per_s:g}", "too many messages")
                await send({"type": "websocket.send",
                            "text": json.dumps({"type": "error", "data": None, "message": reason, "task_id": None})})
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": reason[:120]})
                return {"type": "websocket.disconnect", "code": WS_POLICY_VIOLATION}
            return message

        return limited_receive, limited_send


async def _refuse_http(send: Send, exc: ServiceError) -> None:
    payload = json.dumps(error_body(exc.error_code, exc.message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if exc.http_status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="upscaling"'))
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _refuse_websocket(receive: Receive, send: Send, exc: ServiceError) -> None:
    """Complete the handshake, say why in an `error` message, close with 1008."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send",
                "text": json.dumps({"type": "error", "data": None, "message": exc.message, "task_id": None})})
    await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": exc.error_code[:120]})
