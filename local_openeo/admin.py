"""Accountability endpoints for tests (only when an admin token is configured).

``GET /admin/report``   what happened: jobs per user/title/tag, starts, cancels, deletes, limit rejections,
                        injected faults per endpoint and kind, lost responses, UDP resolutions.
``GET /admin/jobs``     every job of every user (id, user, title, description, status, starts).
``POST /admin/reset``   forget jobs and/or counters (``{"jobs": true, "counters": true}``), restart fault streams.
``GET|PUT /admin/config``  read / change the run-time settings (durations, limits, faults, users, ...).
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from aiohttp import web

from local_openeo.errors import ApiError
from local_openeo.faults import ENDPOINTS, KINDS
from local_openeo.jobs import rfc3339
from local_openeo.jsonio import json_response, read_object

if TYPE_CHECKING:
    from local_openeo.backend import Backend


def add_admin_routes(app: web.Application, backend: Backend) -> None:
    admin = Admin(backend)
    app.add_routes(
        [
            web.get("/admin/report", admin.report),
            web.get("/admin/jobs", admin.jobs),
            web.post("/admin/reset", admin.reset),
            web.get("/admin/config", admin.get_config),
            web.put("/admin/config", admin.put_config),
        ]
    )


class Admin:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _check(self, request: web.Request) -> None:
        token = request.headers.get("X-Admin-Token")
        authorization = request.headers.get("Authorization", "")
        if token is None and authorization.lower().startswith("bearer "):
            token = authorization[7:]
        if not token:
            raise ApiError(401, "AuthenticationRequired", "Admin token required (Authorization: Bearer <token>).")
        expected = self.backend.settings.admin_token or ""
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise ApiError(403, "TokenInvalid", "Invalid admin token.")

    async def report(self, request: web.Request) -> web.Response:
        self._check(request)
        backend = self.backend
        now = time.time()
        extra = {
            "udp_resolution": dict(backend.resolver.stats),
            "results_generated": backend.files.generated,
            "config": self._config_view(),
            "server": {"now": rfc3339(now), "uptime_seconds": round(now - backend.started_at, 3)},
        }
        return json_response(backend.accounting.report(backend.store, now, extra))

    async def jobs(self, request: web.Request) -> web.Response:
        self._check(request)
        now = time.time()
        jobs = [
            {
                "id": job.id,
                "user": job.user,
                "title": job.title,
                "description": job.description,
                "status": job.status(now),
                "starts": job.starts,
                "created": rfc3339(job.created),
                "output": job.info.output,
                "extent": job.info.extent,
                "udps": list(job.info.udps),
            }
            for job in self.backend.store.jobs.values()
        ]
        return json_response({"jobs": jobs})

    async def reset(self, request: web.Request) -> web.Response:
        self._check(request)
        body = await read_object(request, empty_ok=True)
        backend = self.backend
        if body.get("jobs", True):
            backend.store.clear()
            backend.limiter.clear()
        if body.get("counters", True):
            backend.accounting.clear()
            backend.resolver.clear()
        backend.apply_fault_settings()
        return json_response({"reset": True, "jobs": len(backend.store.jobs)})

    def _config_view(self) -> dict:
        view = self.backend.settings.runtime_view()
        view["users"] = sorted(view["users"])  # never echo passwords
        return view

    async def get_config(self, request: web.Request) -> web.Response:
        self._check(request)
        return json_response(
            {"settings": self._config_view(), "fault_endpoints": list(ENDPOINTS), "fault_kinds": list(KINDS)}
        )

    async def put_config(self, request: web.Request) -> web.Response:
        self._check(request)
        body = await read_object(request, empty_ok=True)
        try:
            self.backend.settings.update(body)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "ParameterInvalid", f"Invalid settings: {exc}") from None
        if {"seed", "faults", "job_error_fraction"} & set(body):
            self.backend.apply_fault_settings()  # restarts the seeded fault streams
        return json_response({"settings": self._config_view()})
