"""Users' own backend credentials, the gateway's side (the store is `upscaling.credentials`):

- before a task or unit job is stored for a backend with `auth.method: user_token_exchange`, the caller's OIDC
  access token (AUTH_MODE=oidc) is exchanged at the backend's token endpoint for a backend token (+ refresh
  token), stored for (caller, backend): the dispatcher and the monitor use it for the caller's jobs;
- for `auth.method: user_refresh_token`, the caller registers an openEO refresh token once (`PUT
  /backend_credentials`, gRPC `RegisterBackendCredentials`): it is checked by redeeming it at the backend's
  OIDC provider (the answer's tokens are stored, rotated when the provider rotates), listed without any secret,
  and deleted on request; creating work on such a backend without one is refused with what to do.

No answer ever carries a token; every token that passes through is registered for log redaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from gateway.audit import AuditLog
from gateway.auth import Principal
from upscaling.backends import BackendConfig, Backends
from upscaling.credentials import CredentialStore, Registration
from upscaling.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError, Unavailable
from upscaling.openeo_backend import user_tokens
from upscaling.openeo_backend.errors import BackendError, BackendTransientError

MAX_REFRESH_TOKEN_LENGTH = 8192
T = TypeVar("T")


def check_auth_mode(backends: Backends, auth_mode: str) -> None:
    """ValueError when a backend exchanges callers' tokens but callers do not sign in with OIDC tokens."""
    exchanging = [b.endpoint for b in backends.per_user() if b.auth.method == "user_token_exchange"]
    if exchanging and auth_mode != "oidc":
        raise ValueError(f"backends {', '.join(exchanging)} use auth.method user_token_exchange, which exchanges "
                         f"the caller's OIDC access token: it needs AUTH_MODE=oidc (not {auth_mode!r})")


@dataclass
class BackendCredentials:
    """Token exchange at task creation, and the registration API of refresh tokens."""

    store: CredentialStore
    backends: Backends
    timeout_s: float = 15.0
    audit: AuditLog | None = None

    async def _audited(self, caller: Principal, action: str, endpoint: object, work: Awaitable[T]) -> T:
        """`work`, recorded in the audit trail with its outcome (resource `backend_credentials`, detail: the
        endpoint or the error; never a token)."""
        if self.audit is None:
            return await work
        try:
            result = await work
        except ServiceError as exc:
            await self.audit.record(caller, action, "backend_credentials", None, exc.error_code, exc.message,
                                    owner=caller.user_id)
            raise
        await self.audit.record(caller, action, "backend_credentials", None, "ok", str(endpoint)[:300],
                                owner=caller.user_id)
        return result

    def _backend(self, endpoint: object) -> BackendConfig:
        if not isinstance(endpoint, str) or not endpoint:
            raise InvalidArgument("endpoint is required (a configured openEO backend URL)")
        backend = self.backends.find(endpoint)
        if backend is None:
            raise InvalidArgument(f"endpoint {endpoint!r} is not a configured openEO backend; "
                                  f"configured: {', '.join(self.backends.endpoints())}")
        return backend

    async def prepare(self, caller: Principal, endpoint: str) -> None:
        """Make sure the caller's jobs on `endpoint` will have credentials (before anything is stored)."""
        backend = self._backend(endpoint)
        if backend.auth.method == "user_token_exchange":
            await self._exchange(caller, backend)
        elif backend.auth.method == "user_refresh_token":
            if not any(r.endpoint == backend.endpoint for r in await self.store.registrations(caller.user_id)):
                raise FailedPrecondition(
                    f"backend {backend.endpoint} runs jobs with each user's own openEO credentials: register your "
                    "refresh token for it first (PUT /backend_credentials {\"endpoint\", \"refresh_token\"} or gRPC "
                    "RegisterBackendCredentials)", error_code="BACKEND_CREDENTIALS_MISSING")

    async def prepare_again(self, caller: Principal, endpoint: object) -> None:
        """`prepare` for work stored earlier (a retry), for each backend its `service.endpoint` still names."""
        try:
            backends = self.backends.resolve(endpoint)
        except ValueError:
            return  # no longer configured
        for backend in backends:
            await self.prepare(caller, backend.endpoint)

    async def _exchange(self, caller: Principal, backend: BackendConfig) -> None:
        token = caller.access_token
        if not token:
            raise FailedPrecondition(f"backend {backend.endpoint} runs jobs with the caller's own credentials, "
                                     "exchanged from the caller's OIDC access token, and this request carries none",
                                     error_code="BACKEND_CREDENTIALS_MISSING")
        try:
            tokens = await asyncio.to_thread(user_tokens.exchange, backend, token, self.timeout_s)
        except BackendTransientError as exc:
            raise Unavailable(f"the identity provider of backend {backend.endpoint} cannot exchange tokens now: "
                              f"{exc}") from None
        except BackendError as exc:
            raise FailedPrecondition(f"your token could not be exchanged for one of backend {backend.endpoint}: "
                                     f"{exc}", error_code="BACKEND_CREDENTIALS_REFUSED") from None
        await self.store.save_tokens(caller.user_id, backend, tokens)

    async def register(self, caller: Principal, endpoint: object, refresh_token: object) -> Registration:
        """Check and store the caller's refresh token for a `user_refresh_token` backend (audited)."""
        return await self._audited(caller, "credentials.register", endpoint,
                                   self._register(caller, endpoint, refresh_token))

    async def _register(self, caller: Principal, endpoint: object, refresh_token: object) -> Registration:
        backend = self._backend(endpoint)
        if backend.auth.method != "user_refresh_token":
            raise InvalidArgument(f"backend {backend.endpoint} takes no registered credentials (its auth.method is "
                                  f"{backend.auth.method})")
        if not isinstance(refresh_token, str) or not refresh_token.strip():
            raise InvalidArgument("refresh_token is required (an openEO refresh token of the backend's provider "
                                  f"{backend.auth.provider_id!r})")
        if len(refresh_token) > MAX_REFRESH_TOKEN_LENGTH or any(c.isspace() for c in refresh_token.strip()):
            raise InvalidArgument("refresh_token is not a token")
        refresh_token = refresh_token.strip()
        user_tokens.register_token(refresh_token)
        try:
            tokens = await asyncio.to_thread(user_tokens.refresh, backend, refresh_token, self.timeout_s)
        except BackendTransientError as exc:
            raise Unavailable(f"the identity provider of backend {backend.endpoint} cannot be reached now: "
                              f"{exc}") from None
        except BackendError as exc:
            raise InvalidArgument(f"the refresh token was refused by backend {backend.endpoint}'s identity "
                                  f"provider: {exc}") from None
        await self.store.save_tokens(caller.user_id, backend, tokens)
        for registration in await self.store.registrations(caller.user_id):
            if registration.endpoint == backend.endpoint:
                return registration
        raise Unavailable("the registration was not stored")  # deleted concurrently

    async def list(self, caller: Principal) -> list[Registration]:
        return await self.store.registrations(caller.user_id)

    async def delete(self, caller: Principal, endpoint: object) -> None:
        """Forget the caller's credentials for a backend (audited)."""
        await self._audited(caller, "credentials.delete", endpoint, self._delete(caller, endpoint))

    async def _delete(self, caller: Principal, endpoint: object) -> None:
        backend = self._backend(endpoint)
        if not await self.store.delete(caller.user_id, backend):
            raise NotFound(f"no credentials of yours are stored for backend {backend.endpoint}",
                           error_code="BACKEND_CREDENTIALS_NOT_FOUND")
