"""The authenticator of the configured mode: bearer token (or None) in, `Principal` out."""

from __future__ import annotations

from typing import Protocol

from gateway.auth.oidc import OidcAuthenticator
from gateway.auth.principal import ANONYMOUS, Principal
from gateway.auth.settings import AuthSettings
from gateway.auth.tokens import TokenAuthenticator, load_tokens


class Authenticator(Protocol):
    """Turns the caller's bearer token into a Principal, or raises Unauthenticated (Unavailable when the
    identity provider cannot be reached). `reads_token` False: credentials are not even parsed."""

    reads_token: bool

    async def authenticate(self, token: str | None) -> Principal: ...

    async def close(self) -> None: ...


class NoAuthenticator:
    """AUTH_MODE=none: every caller is the anonymous user, whatever it sends."""

    reads_token = False

    async def authenticate(self, token: str | None) -> Principal:
        return ANONYMOUS

    async def close(self) -> None:
        return None


def create_authenticator(settings: AuthSettings) -> Authenticator:
    """The authenticator of `settings.mode`."""
    if settings.mode == "token":
        return TokenAuthenticator(load_tokens(settings.tokens, settings.tokens_file))
    if settings.mode == "oidc":
        return OidcAuthenticator(settings)
    return NoAuthenticator()
