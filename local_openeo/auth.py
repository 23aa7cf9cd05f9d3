"""Basic authentication: ``GET /credentials/basic`` issues tokens, ``Bearer basic//<token>`` uses them."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets

from local_openeo.config import Settings
from local_openeo.errors import ApiError

_BEARER_PREFIX = "Bearer basic//"


class Authenticator:
    """Users come from the settings (so they can change at run time); tokens live in memory."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tokens: dict[str, str] = {}

    def issue_token(self, authorization: str | None) -> str:
        """Check an HTTP Basic ``Authorization`` header and return a new access token for that user."""
        if not authorization:
            raise ApiError(401, "AuthenticationRequired", "HTTP Basic credentials are required.")
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise ApiError(403, "AuthenticationSchemeInvalid", "Use HTTP Basic authentication here.")
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        expected = self._settings.users.get(user) if sep else None
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise ApiError(403, "CredentialsInvalid", "Credentials are not correct.")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = user
        return token

    def user(self, authorization: str | None) -> str:
        """The user of a ``Bearer basic//<token>`` header, or an openEO 401/403 error."""
        if not authorization:
            raise ApiError(401, "AuthenticationRequired", "Unauthorized: an access token is required.")
        if not authorization.startswith(_BEARER_PREFIX):
            if authorization[:7].lower() != "bearer ":
                raise ApiError(403, "AuthenticationSchemeInvalid", "Invalid authentication scheme.")
            raise ApiError(403, "TokenInvalid", "Only basic tokens (Bearer basic//<token>) are supported.")
        user = self._tokens.get(authorization[len(_BEARER_PREFIX) :])
        if user is None or user not in self._settings.users:
            raise ApiError(
                403, "TokenInvalid", "Authorization token has expired or is invalid. Please authenticate again."
            )
        return user
