"""Whose backend credentials a submission uses: the backend's service account, or, on a backend with a per-user
`auth.method`, the account of the job's owner (`upscaling.credentials`), set for the job being handled in
`job_owner` (a context variable: each message is handled in its own task)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from upscaling.backends import BackendConfig
from upscaling.credentials import CredentialsError, CredentialStore
from upscaling.openeo_backend.connection import SERVICE, Account
from upscaling.openeo_backend.errors import BackendAuthError

log = logging.getLogger(__name__)
T = TypeVar("T")

# The owner of the unit job being submitted in this task.
job_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_owner", default=None)


class OwnerAccounts:
    """The backend account of the current job's owner, refreshed before it expires and once more when the backend
    refuses it."""

    def __init__(self, store: CredentialStore | None) -> None:
        self.store = store

    async def account(self, backend: BackendConfig, force_refresh: bool = False) -> Account:
        if not backend.auth.per_user:
            return SERVICE
        owner = job_owner.get()
        if owner is None or self.store is None:
            raise CredentialsError(f"backend {backend.endpoint} needs the job owner's own credentials, which this "
                                   "dispatcher cannot read")
        return await self.store.account(backend, owner, force_refresh=force_refresh)

    async def call(self, backend: BackendConfig, run: Callable[[Account], Awaitable[T]]) -> T:
        """`run(account)`; when the backend refuses a user's token (401/403), the token is refreshed and `run`
        repeated once (a refused request did nothing)."""
        account = await self.account(backend)
        try:
            return await run(account)
        except BackendAuthError as exc:
            if account.owner is None:
                raise
            log.warning("backend refused the owner's token; refreshing it",
                        extra={"backend": backend.endpoint, "owner": account.owner, "error": str(exc)})
        return await run(await self.account(backend, force_refresh=True))
