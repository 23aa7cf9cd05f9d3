"""Shared state of one backend, and the ``endpoint`` decorator that counts requests and injects faults."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from local_openeo.accounting import Accounting
from local_openeo.auth import Authenticator
from local_openeo.config import Settings
from local_openeo.errors import ApiError, error_response
from local_openeo.faults import ERROR_CODES, LOST_KINDS, STATUS_KINDS, FaultInjector
from local_openeo.jobs import Job, JobStore, rfc3339
from local_openeo.limits import StartLimiter
from local_openeo.oidc import OIDC_USER, OidcVerifier
from local_openeo.results import ResultFiles
from local_openeo.udp import UdpCatalogue, UdpResolver


class Backend:
    """Everything a request handler needs: settings, jobs, users, UDPs, limits, faults, accounting."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobStore()
        self.auth = Authenticator(settings)
        self.oidc = OidcVerifier(settings)
        self.catalogue = UdpCatalogue(settings.udp_dir)
        self.resolver = UdpResolver(settings, self.catalogue)
        self.faults = FaultInjector(settings.seed, settings.faults, settings.job_error_fraction)
        self.limiter = StartLimiter(settings)
        self.accounting = Accounting()
        self.files = ResultFiles()
        self.endpoints: list[dict] = []  # capabilities "endpoints", filled in by create_app
        self.capabilities_cache: dict[str, bytes] = {}
        self.started_at = time.time()
        self._secret = secrets.token_bytes(16)

    def base_url(self, request: web.Request) -> str:
        """Base of absolute hrefs: the configured public URL or the request's own scheme://host."""
        return self.settings.public_url or f"{request.scheme}://{request.host}"

    def user(self, request: web.Request) -> str:
        """The caller: the ``sub`` of a verified OIDC token (see ``local_openeo.oidc``), else a basic-auth user."""
        oidc_user = request.get(OIDC_USER)
        if isinstance(oidc_user, str):
            return oidc_user
        return self.auth.user(request.headers.get("Authorization"))

    def job(self, request: web.Request) -> tuple[str, Job]:
        """The authenticated user and their job named in the path (404 JobNotFound otherwise)."""
        user = self.user(request)
        return user, self.store.get(user, request.match_info["job_id"])

    def apply_fault_settings(self) -> None:
        """Reconfigure fault injection from the settings; restarts the seeded random streams."""
        settings = self.settings
        self.faults.configure(settings.seed, settings.faults, settings.job_error_fraction)

    def signature(self, job_id: str, name: str) -> str:
        """Unguessable path element of an asset URL, so that assets download without a token."""
        return hmac.new(self._secret, f"{job_id}/{name}".encode(), hashlib.sha256).hexdigest()[:32]


BACKEND = web.AppKey("local_openeo_backend", Backend)
Handler = Callable[[Backend, web.Request], Awaitable[web.StreamResponse]]


def endpoint(name: str) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Make ``handler(backend, request)`` an aiohttp handler for openEO endpoint `name`:
    counted in the admin report and subject to the faults configured for `name`."""

    def decorate(method: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(method)
        async def handler(request: web.Request) -> web.StreamResponse:
            backend = request.app[BACKEND]
            backend.accounting.requests[name] += 1
            cid = request.headers.get("X-Correlation-ID")
            if cid:
                backend.accounting.correlated(cid, name)
            kind = backend.faults.draw(name)
            if kind is None:
                return await method(backend, request)
            return await _inject(backend, name, kind, method, request)

        return handler

    return decorate


async def _inject(backend: Backend, name: str, kind: str, method: Handler, request: web.Request) -> web.StreamResponse:
    backend.accounting.fault(name, kind)
    if kind in STATUS_KINDS:
        status = STATUS_KINDS[kind]
        return error_response(status, ERROR_CODES[status], f"Injected fault {kind} on {name}.")
    if kind == "delay":
        await request.read()  # received in full: the request takes effect even if the client gives up
        await asyncio.sleep(backend.settings.fault_delay)
        return await method(backend, request)
    # lost responses: the request is handled (and takes effect), the client never sees the answer
    try:
        response = await method(backend, request)
    except ApiError as exc:
        response = exc.response()
    backend.accounting.lost_response(
        {
            "endpoint": name,
            "kind": kind,
            "status": response.status,
            "job_id": response.headers.get("OpenEO-Identifier") or request.match_info.get("job_id"),
            "time": rfc3339(time.time()),
        }
    )
    lost_status = LOST_KINDS[kind]
    if lost_status is None:
        if request.transport is not None:
            request.transport.abort()
        return response
    return error_response(
        lost_status,
        ERROR_CODES[lost_status],
        f"Injected fault {kind} on {name}: the request was processed (HTTP {response.status}), its answer lost.",
    )
