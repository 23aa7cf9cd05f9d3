"""Authentication (and the per-user request rate) of the gateway's public gRPC services.

Every `/upscaling.*` method reads `authorization: Bearer <token>` from the call metadata, authenticates it with
the configured authenticator and serves the call with the caller in `gateway.auth.current_principal`. Health
and reflection are not intercepted (they stay open). Errors are raised as `upscaling.errors` exceptions, so the
ErrorMappingInterceptor (outside this one) turns them into UNAUTHENTICATED / RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from gateway.auth import Authenticator, Principal, bearer_token, current_principal
from upscaling.limits import RateLimiter


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates each call of the public services before the servicer runs."""

    def __init__(self, authenticator: Authenticator, rate: RateLimiter, prefix: str = "/upscaling.") -> None:
        self.authenticator = authenticator
        self.rate = rate
        self.prefix = prefix

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        token = bearer_token(_authorization(context)) if self.authenticator.reads_token else None
        principal = await self.authenticator.authenticate(token)
        self.rate.check(principal.user_id)
        return principal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self.prefix):
            return handler

        writer = handler.unary_stream and not inspect.isasyncgenfunction(handler.unary_stream)
        if handler.unary_unary or writer:
            # unary calls, and streams written by a coroutine with context.write (wrapped once, not per message)
            inner = handler.unary_unary or handler.unary_stream

            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = current_principal.set(await self._principal(context))
                try:
                    return await inner(request, context)
                finally:
                    current_principal.reset(token)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.unary_stream_rpc_method_handler
            return make(call, handler.request_deserializer, handler.response_serializer)

        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                token = current_principal.set(await self._principal(context))
                try:
                    async for item in inner_stream(request, context):
                        yield item
                finally:
                    current_principal.reset(token)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer)
        # Client- and bidi-streaming methods are not served by the public API: refuse rather than serve unchecked.
        return None
