"""The API of users' own backend credentials (`gateway.backend_credentials`), over HTTP (`/backend_credentials`)
and gRPC (`BackendCredentialsService`): register an openEO refresh token for a backend with `auth.method:
user_refresh_token`, list what is stored (never a token), delete it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal, caller_or_fail
from gateway.auth_http import caller
from gateway.backend_credentials import BackendCredentials
from gateway.http_errors import error_responses
from gateway.task_views import proto_time
from upscaling.credentials import Registration
from upscaling.v1 import credentials_pb2, credentials_pb2_grpc

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
                "redeeming it at the backend's identity provider; never returned)", responses=error_responses(400, 409))
    async def register(body: CredentialsRequest, who: Caller) -> dict[str, Any]:
        return registration_json(await get_credentials().register(who, body.endpoint, body.refresh_token))

    @router.get("/backend_credentials", summary="The backends you have credentials stored for (no secrets)",
                responses=error_responses(409))
    async def listing(who: Caller) -> dict[str, Any]:
        return {"backend_credentials": [registration_json(r) for r in await get_credentials().list(who)]}

    @router.delete("/backend_credentials", status_code=204, summary="Forget your credentials for a backend",
                   responses=error_responses(404, 409))
    async def delete(endpoint: Annotated[str, Query(description="the backend's endpoint")], who: Caller) -> Response:
        await get_credentials().delete(who, endpoint)
        return Response(status_code=204)

    return router


def registration_proto(registration: Registration) -> credentials_pb2.BackendCredentials:
    return credentials_pb2.BackendCredentials(endpoint=registration.endpoint, method=registration.method,
                                              registered_at=proto_time(registration.registered_at),
                                              refreshed_at=proto_time(registration.refreshed_at))


class BackendCredentialsServicer(credentials_pb2_grpc.BackendCredentialsServiceServicer):
    """`BackendCredentialsService` on the public gRPC port (the caller from the AuthInterceptor)."""

    def __init__(self, get_credentials: Callable[[], BackendCredentials]) -> None:
        self.get_credentials = get_credentials

    async def RegisterBackendCredentials(self, request: credentials_pb2.RegisterBackendCredentialsRequest,
                                         context: grpc.aio.ServicerContext
                                         ) -> credentials_pb2.RegisterBackendCredentialsResponse:
        registration = await self.get_credentials().register(caller_or_fail(), request.endpoint,
                                                             request.refresh_token)
        return credentials_pb2.RegisterBackendCredentialsResponse(credentials=registration_proto(registration))

    async def ListBackendCredentials(self, request: credentials_pb2.ListBackendCredentialsRequest,
                                     context: grpc.aio.ServicerContext
                                     ) -> credentials_pb2.ListBackendCredentialsResponse:
        registrations = await self.get_credentials().list(caller_or_fail())
        return credentials_pb2.ListBackendCredentialsResponse(credentials=[registration_proto(r)
                                                                           for r in registrations])

    async def DeleteBackendCredentials(self, request: credentials_pb2.DeleteBackendCredentialsRequest,
                                       context: grpc.aio.ServicerContext
                                       ) -> credentials_pb2.DeleteBackendCredentialsResponse:
        await self.get_credentials().delete(caller_or_fail(), request.endpoint)
        return credentials_pb2.DeleteBackendCredentialsResponse()
