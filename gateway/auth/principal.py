"""The authenticated caller and the parsing of `Authorization: Bearer ...`."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

from upscaling.errors import Unauthenticated


@dataclass(frozen=True)
class Principal:
    """A caller: its user id (the owner of what it creates), whether it is an operator seeing everything, and (in
    AUTH_MODE=oidc) the access token it signed in with, which a backend with `auth.method: user_token_exchange`
    exchanges for one of its own (never printed, never compared)."""

    user_id: str
    admin: bool = False
    access_token: str | None = field(default=None, repr=False, compare=False)

    @property
    def owner_filter(self) -> str | None:
        """The owner to restrict reads to, or None for an admin (everything)."""
        return None if self.admin else self.user_id


# The one user of AUTH_MODE=none (also the owner of the rows stored before tasks had owners).
ANONYMOUS = Principal("anonymous", admin=False)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None when absent; Unauthenticated when the
    header is present but is not a bearer token."""
    if header is None or header == "":
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token


# The caller of the gRPC call being served (set by the gateway's authentication interceptor).
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("current_principal",
                                                                                     default=None)


def caller_or_fail() -> Principal:
    """The caller of the current gRPC call; Unauthenticated when no interceptor authenticated it (fail closed)."""
    principal = current_principal.get()
    if principal is None:
        raise Unauthenticated("the call was not authenticated")
    return principal
