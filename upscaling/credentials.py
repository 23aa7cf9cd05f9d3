"""Users' own backend credentials (backends whose `auth.method` is `user_token_exchange` or `user_refresh_token`):
stored encrypted per owner and backend (`backend_credentials`, migration 0009), written by the gateway (a token
exchange when a user creates work, a refresh-token registration), read by the dispatcher and the monitor as the
owner's backend `Account`, refreshed before they expire.

- Encryption at rest: Fernet with the key(s) of `CREDENTIALS_KEY` (comma-separated urlsafe-base64 Fernet keys; the
  first encrypts, every one decrypts: put a new key first to rotate, drop the old one once every row was
  rewritten). A service whose backends use a per-user method refuses to start without it (`load_cipher`).
- No token is ever returned by an API or written to a log: every decrypted or received token is registered for
  redaction (`user_tokens.register_token`), listings carry endpoints and times only.
- Refreshing: `account` returns a token valid for at least `min_valid_s`; otherwise it refreshes it under the
  row's lock (`SELECT ... FOR UPDATE`), so one replica refreshes and the others take its rotated tokens. `call`
  runs backend calls as the owner and refreshes once more when the backend refuses the token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from upscaling.backends import BackendConfig, Backends
from upscaling.db import AnyConnection
from upscaling.logs import register_secret
from upscaling.openeo_backend import user_tokens
from upscaling.openeo_backend.connection import Account
from upscaling.openeo_backend.errors import BackendAuthError, BackendError, BackendPermanentError, BackendTransientError
from upscaling.openeo_backend.user_tokens import CredentialsRefused, Tokens, register_token

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_ENV = "CREDENTIALS_KEY"
# A token with less time left than this is refreshed before use (covers one backend call and the clock skew).
DEFAULT_MIN_VALID_S = 60.0


class CredentialsError(BackendPermanentError):
    """The owner has no usable credentials for the backend (none stored, or refused beyond refresh): a permanent
    error of their jobs there, which fail with this message."""


class ProviderUnavailable(BackendTransientError):
    """The identity provider that refreshes a user's backend token cannot be reached now: try again later."""


class Cipher:
    """Encrypts and decrypts tokens (MultiFernet: the first key encrypts, every key decrypts)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError(f"{KEY_ENV} holds no key")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError:
            raise ValueError(f"{KEY_ENV}: every key must be a Fernet key (32 url-safe base64-encoded bytes; "
                             "make one with `python -c 'from cryptography.fernet import Fernet; "
                             "print(Fernet.generate_key().decode())'`)") from None

    def encrypt(self, token: str) -> bytes:
        return self._fernet.encrypt(token.encode())

    def decrypt(self, data: bytes) -> str:
        try:
            token = self._fernet.decrypt(bytes(data)).decode()
        except InvalidToken:
            raise CredentialsError("stored backend credentials cannot be decrypted with the keys of "
                                   f"{KEY_ENV}; register them again") from None
        register_token(token)
        return token


def load_cipher(backends: Backends, environ: dict[str, str] | None = None) -> Cipher | None:
    """The cipher of CREDENTIALS_KEY; None when no backend uses per-user credentials and no key is set.
    ValueError (a clear start-up error) when a backend needs it and it is missing or malformed."""
    raw = (os.environ if environ is None else environ).get(KEY_ENV, "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    needing = backends.per_user()
    if not keys:
        if needing:
            names = ", ".join(f"{b.endpoint} ({b.auth.method})" for b in needing)
            raise ValueError(f"{KEY_ENV} is not set, but these backends use users' own credentials, which are "
                             f"stored encrypted with it: {names}")
        return None
    for key in keys:
        register_secret(key)
    return Cipher(keys)


@dataclass(frozen=True)
class Registration:
    """What a listing shows of stored credentials: never a token."""

    endpoint: str
    method: str
    registered_at: datetime
    refreshed_at: datetime | None


def _stamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class CredentialStore:
    """The `backend_credentials` table, through the cipher."""

    def __init__(self, pool: asyncpg.Pool, cipher: Cipher, timeout_s: float = 30.0,
                 min_valid_s: float = DEFAULT_MIN_VALID_S) -> None:
        self.pool = pool
        self.cipher = cipher
        self.timeout_s = timeout_s
        self.min_valid_s = min_valid_s

    # ---- writes of the gateway ---------------------------------------------------------------------------

    async def save_tokens(self, owner: str, backend: BackendConfig, tokens: Tokens) -> None:
        """Store (replace) the owner's tokens for `backend` (after a token exchange)."""
        await self.pool.execute(
            "INSERT INTO backend_credentials (owner, backend, method, access_token, expires_at, refresh_token,"
            " registered_at, refreshed_at) VALUES ($1, $2, $3, $4, $5, $6, now(), NULL)"
            " ON CONFLICT (owner, backend) DO UPDATE SET method = EXCLUDED.method,"
            " access_token = EXCLUDED.access_token, expires_at = EXCLUDED.expires_at,"
            " refresh_token = EXCLUDED.refresh_token, registered_at = now(), refreshed_at = NULL",
            owner, backend.endpoint, backend.auth.method, self.cipher.encrypt(tokens.access_token),
            _stamp(tokens.expires_at),
            None if tokens.refresh_token is None else self.cipher.encrypt(tokens.refresh_token))

    async def registrations(self, owner: str) -> list[Registration]:
        rows = await self.pool.fetch(
            "SELECT backend, method, registered_at, refreshed_at FROM backend_credentials WHERE owner = $1"
            " ORDER BY backend", owner)
        return [Registration(r["backend"], r["method"], r["registered_at"], r["refreshed_at"]) for r in rows]

    async def delete(self, owner: str, backend: BackendConfig) -> bool:
        """Forget the owner's credentials for `backend`; False when there were none."""
        deleted = await self.pool.fetchval(
            "DELETE FROM backend_credentials WHERE owner = $1 AND backend = $2 RETURNING backend",
            owner, backend.endpoint)
        return deleted is not None

    # ---- reads of the dispatcher and the monitor ---------------------------------------------------------

    async def call(self, backend: BackendConfig, owner: str, run: Callable[[Account], Awaitable[T]]) -> T:
        """`run(account)` as the owner's backend account; when the backend refuses the token (BackendAuthError),
        it is refreshed and `run` repeated once (a refused request did nothing; a second refusal is raised)."""
        account = await self.account(backend, owner)
        try:
            return await run(account)
        except BackendAuthError as exc:
            log.warning("backend refused the owner's token; refreshing it",
                        extra={"backend": backend.endpoint, "owner": owner, "error": str(exc)})
        return await run(await self.account(backend, owner, force_refresh=True))

    async def account(self, backend: BackendConfig, owner: str, force_refresh: bool = False) -> Account:
        """The owner's backend account with an access token valid for at least `min_valid_s` (refreshed under
        the row lock when it is not, or when `force_refresh`: the backend refused it). CredentialsError when the
        owner has none or they are refused beyond refresh; ProviderUnavailable when the identity provider cannot
        be reached."""
        row = await self.pool.fetchrow(
            "SELECT access_token, expires_at, refresh_token FROM backend_credentials WHERE owner = $1 AND backend = $2",
            owner, backend.endpoint)
        if row is None:
            raise CredentialsError(self._missing(backend, owner))
        if not force_refresh and self._fresh(row):
            return self._account(backend, owner, self.cipher.decrypt(row["access_token"]))
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT access_token, expires_at, refresh_token, refreshed_at,"
                " extract(epoch FROM now() - refreshed_at)::float8 AS refreshed_ago"
                " FROM backend_credentials WHERE owner = $1 AND backend = $2 FOR UPDATE", owner, backend.endpoint)
            if row is None:
                raise CredentialsError(self._missing(backend, owner))
            # Another replica refreshed while this one waited for the lock (a forced refresh counts too when it
            # happened within the last seconds).
            just_refreshed = row["refreshed_ago"] is not None and row["refreshed_ago"] < 5.0
            if self._fresh(row) and (not force_refresh or just_refreshed):
                return self._account(backend, owner, self.cipher.decrypt(row["access_token"]))
            tokens = await self._refresh(backend, owner, row)
            await self._store_refreshed(conn, owner, backend, tokens)
        return self._account(backend, owner, tokens.access_token)

    def _fresh(self, row: asyncpg.Record) -> bool:
        return (row["access_token"] is not None and row["expires_at"] is not None
                and row["expires_at"].timestamp() - time.time() > self.min_valid_s)

    @staticmethod
    def _remedy(backend: BackendConfig) -> str:
        """What the user does to get usable credentials again."""
        if backend.auth.method == "user_refresh_token":
            return "register an openEO refresh token for it (PUT /backend_credentials), then retry"
        return "retry (or create the work again) while signed in: your token is exchanged for one of the backend"

    @classmethod
    def _missing(cls, backend: BackendConfig, owner: str) -> str:
        return f"user {owner!r} has no credentials for backend {backend.endpoint}: {cls._remedy(backend)}"

    @staticmethod
    def _account(backend: BackendConfig, owner: str, access_token: str) -> Account:
        register_token(access_token)
        return Account(owner=owner, access_token=access_token, provider_id=backend.auth.provider_id or "")

    async def _refresh(self, backend: BackendConfig, owner: str, row: asyncpg.Record) -> Tokens:
        if row["refresh_token"] is None:
            raise CredentialsError(f"the backend credentials of user {owner!r} for {backend.endpoint} expired and "
                                   f"cannot be refreshed (no refresh token): {self._remedy(backend)}")
        refresh_token = self.cipher.decrypt(row["refresh_token"])
        try:
            return await asyncio.to_thread(user_tokens.refresh, backend, refresh_token, self.timeout_s)
        except CredentialsRefused as exc:
            raise CredentialsError(f"the backend credentials of user {owner!r} for {backend.endpoint} could not be "
                                   f"refreshed ({exc}): {self._remedy(backend)}") from None
        except BackendTransientError as exc:
            raise ProviderUnavailable(f"the identity provider of backend {backend.endpoint} cannot be reached: "
                                      f"{exc}", code=exc.code, http_status=exc.http_status) from exc
        except BackendError as exc:
            raise CredentialsError(f"the backend credentials of user {owner!r} for {backend.endpoint} could not be "
                                   f"refreshed: {exc}") from None

    async def _store_refreshed(self, conn: AnyConnection, owner: str, backend: BackendConfig, tokens: Tokens) -> None:
        await conn.execute(
            "UPDATE backend_credentials SET access_token = $3, expires_at = $4,"
            " refresh_token = coalesce($5, refresh_token), refreshed_at = now() WHERE owner = $1 AND backend = $2",
            owner, backend.endpoint, self.cipher.encrypt(tokens.access_token), _stamp(tokens.expires_at),
            None if tokens.refresh_token is None else self.cipher.encrypt(tokens.refresh_token))

