"""ASGI middleware: correlation id per request (echoed as X-Correlation-ID), a request body size limit, and the
500 answer of an unexpected error (inside the request's context, so it carries its request id)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http_errors import error_body
from upscaling.limits import exceeded
from upscaling.logs import correlation_id, new_correlation_id

log = logging.getLogger(__name__)
_VALID_CID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Sets the correlation id for the request and refuses bodies over `max_body_bytes` with 413."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-correlation-id", b"").decode("latin-1")
        cid = given if _VALID_CID.match(given) else new_correlation_id()
        token = correlation_id.set(cid)
        try:
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
                return
            await self._http(scope, receive, send, headers, cid)
        finally:
            correlation_id.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes],
                    cid: str) -> None:
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tagging_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", cid.encode())]
            await send(message)

        try:
            await self.app(scope, counting_receive, tagging_send)
        except _BodyTooLarge:
            if not started:
                await self._too_large(send)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await _send_json(send, 500, error_body("INTERNAL_ERROR",
                                                   "internal error; quote the request_id when reporting it"))

    async def _too_large(self, send: Send) -> None:
        await _send_json(send, 413, error_body(
            "PAYLOAD_TOO_LARGE", exceeded("HTTP_MAX_BODY_BYTES", self.max_body_bytes,
                                          f"the request body is larger than {self.max_body_bytes} bytes")))


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    """Answer with a JSON body and the request's correlation id."""
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"x-correlation-id", (correlation_id.get() or "").encode())]})
    await send({"type": "http.response.body", "body": payload})
