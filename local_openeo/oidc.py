"""OIDC bearer tokens (``Bearer oidc/<provider_id>/<JWT>``) of the configured issuer (``--oidc-issuer``).

The issuer's signing keys come from its ``/.well-known/openid-configuration`` ``jwks_uri`` (fetched again on an
unknown ``kid``, at most every ``MIN_REFRESH_S``); a token is accepted when its signature, ``iss``, ``exp`` (and
``aud`` when ``--oidc-audience`` is set) check out. The user is the token's ``sub``: each user sees only their own
jobs, as with basic authentication. The middleware verifies the token before the handler runs (without blocking
the event loop) and leaves the user in the request for ``Backend.user``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from local_openeo.config import Settings
from local_openeo.errors import ApiError

OIDC_USER = "local_openeo.oidc_user"
_PREFIX = "bearer oidc/"
MIN_REFRESH_S = 2.0
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


class OidcVerifier:
    """The issuer's keys and the token check."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    def provider(self) -> dict[str, Any]:
        """The provider as ``GET /credentials/oidc`` lists it."""
        return {"id": self.settings.oidc_provider_id, "issuer": self.settings.oidc_issuer,
                "title": "Local identity provider", "scopes": ["openid"]}

    async def _fetch(self) -> None:
        issuer = self.settings.oidc_issuer
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(f"{issuer}/.well-known/openid-configuration") as reply:
                config = await reply.json(content_type=None)
            async with http.get(config["jwks_uri"]) as reply:
                document = await reply.json(content_type=None)
        self.keys = {k.get("kid", ""): jwt.PyJWK.from_dict(k) for k in document.get("keys", [])
                     if k.get("use", "sig") == "sig"}

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid not in self.keys:
            async with self._lock:
                if kid not in self.keys and time.monotonic() - self.fetched_at >= MIN_REFRESH_S:
                    self.fetched_at = time.monotonic()
                    try:
                        await self._fetch()
                    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, jwt.PyJWTError) as exc:
                        raise ApiError(503, "ServiceUnavailable",
                                       f"The identity provider cannot be reached: {type(exc).__name__}") from None
        key = self.keys.get(kid)
        if key is None:
            raise ApiError(403, "TokenInvalid", "The token is signed with an unknown key.")
        return key

    async def user(self, authorization: str) -> str:
        """The ``sub`` of a valid ``Bearer oidc/<provider>/<JWT>``, or an openEO 403 error."""
        provider, _, token = authorization[len(_PREFIX):].partition("/")
        if provider != self.settings.oidc_provider_id or not token:
            raise ApiError(403, "TokenInvalid", f"Unknown OIDC provider {provider[:40]!r}.")
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
        except jwt.PyJWTError:
            raise ApiError(403, "TokenInvalid", "The OIDC access token is not a JWT.") from None
        key = await self._key(str(kid))
        audience = self.settings.oidc_audience
        try:
            claims = jwt.decode(token, key=key, algorithms=ALGORITHMS, issuer=self.settings.oidc_issuer,
                                audience=audience, leeway=5,
                                options={"verify_aud": audience is not None, "require": ["exp", "sub", "iss"]})
        except jwt.ExpiredSignatureError:
            raise ApiError(403, "TokenInvalid", "Authorization token has expired. Please authenticate again.") from None
        except jwt.PyJWTError as exc:
            raise ApiError(403, "TokenInvalid", f"Invalid OIDC access token: {type(exc).__name__}.") from None
        return str(claims["sub"])


def oidc_middleware(verifier: OidcVerifier) -> Callable:
    """Verify ``Bearer oidc/...`` tokens before the handler runs (other requests pass untouched)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        if authorization[: len(_PREFIX)].lower() == _PREFIX:
            if verifier.settings.oidc_issuer is None:
                raise ApiError(403, "TokenInvalid", "This backend accepts no OIDC tokens.")
            request[OIDC_USER] = await verifier.user(authorization)
        return await handler(request)

    return middleware
