"""Whose backend credentials a submission uses: the backend's service account, or, on a backend with a per-user
`auth.method`, the account of the job's owner (`upscaling.credentials`), set for the job being handled in
`job_owner` (a context variable: each message is handled in its own task)."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import TypeVar

from upscaling.backends import BackendConfig
from upscaling.credentials import CredentialsError, CredentialStore
from upscaling.openeo_backend.connection import SERVICE, Account

T = TypeVar("T")

# The owner of the unit job being submitted in this task.
job_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_owner", default=None)


class OwnerAccounts:
    """Runs a submission's backend calls as the service account, or, on a backend with a per-user `auth.method`,
    as the current job's owner (`CredentialStore.call`: refreshed before it expires and once more when the
    backend refuses it)."""

    def __init__(self, store: CredentialStore | None) -> None:
        self.store = store

    async def call(self, backend: BackendConfig, run: Callable[[Account], Awaitable[T]]) -> T:
        if not backend.auth.per_user:
            return await run(SERVICE)
        owner = job_owner.get()
        if owner is None or self.store is None:
            raise CredentialsError(f"backend {backend.endpoint} needs the job owner's own credentials, which this "
                                   "dispatcher cannot read")
        return await self.store.call(backend, owner, run)
