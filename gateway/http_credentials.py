"""HTTP routes of users' own backend credentials (`gateway.backend_credentials`): register an openEO refresh
token for a backend with `auth.method: user_refresh_token`, list what is stored (never a token), delete it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal
from gateway.auth_http import caller
from gateway.backend_credentials import BackendCredentials
from gateway.http_errors import error_responses
from upscaling.credentials import Registration

Caller = Annotated[Principal, Depends(caller)]


class CredentialsRequest(BaseModel):
    """Body of `PUT /backend_credentials`."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(description="a configured openEO backend whose auth.method is user_refresh_token")
    refresh_token: str = Field(description="an openEO refresh token of the backend's OIDC provider (never returned)")


def registration_json(registration: Registration) -> dict[str, Any]:
    """What a listing shows of stored credentials: the backend, the method and when (never a token)."""
    return {"endpoint": registration.endpoint, "method": registration.method,
            "registered_at": registration.registered_at.isoformat(),
            "refreshed_at": registration.refreshed_at.isoformat() if registration.refreshed_at else None}


def create_credentials_router(get_credentials: Callable[[], BackendCredentials]) -> APIRouter:
    router = APIRouter(tags=["backend credentials"])

    @router.put("/backend_credentials", summary="Register your openEO refresh token for a backend (checked by "
                "redeeming it at the backend's identity provider; never returned)", responses=error_responses(409))
    async def register(body: CredentialsRequest, who: Caller) -> dict[str, Any]:
        return registration_json(await get_credentials().register(who, body.endpoint, body.refresh_token))

    @router.get("/backend_credentials", summary="The backends you have credentials stored for (no secrets)")
    async def listing(who: Caller) -> dict[str, Any]:
        return {"backend_credentials": [registration_json(r) for r in await get_credentials().list(who)]}

    @router.delete("/backend_credentials", status_code=204, summary="Forget your credentials for a backend",
                   responses=error_responses(404))
    async def delete(endpoint: Annotated[str, Query(description="the backend's endpoint")], who: Caller) -> Response:
        await get_credentials().delete(who, endpoint)
        return Response(status_code=204)

    return router
