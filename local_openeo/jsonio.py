"""JSON request bodies and responses."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from local_openeo.errors import body_invalid


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json", headers=headers)


async def read_json(request: web.Request) -> Any:
    """The parsed body, or an openEO 400 ``BodyInvalid`` error."""
    raw = await request.read()
    if not raw:
        raise body_invalid("The request body is empty; a JSON object is required.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise body_invalid("The request body is not valid JSON.") from None


async def read_object(request: web.Request, *, empty_ok: bool = False) -> dict:
    """The body as JSON object (``{}`` for an empty body when `empty_ok`)."""
    if empty_ok and not request.can_read_body:
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise body_invalid("The request body must be a JSON object.")
    return body
