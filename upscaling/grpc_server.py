"""gRPC server bootstrap shared by every service: health, reflection, error mapping, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from upscaling.config import Settings
from upscaling.errors import ServiceError
from upscaling.logs import correlation_id, new_correlation_id

log = logging.getLogger(__name__)

CORRELATION_HEADER = "x-correlation-id"
# Trailing metadata key carrying the APEx-style error code of a ServiceError (e.g. TOO_MANY_TILES).
ERROR_CODE_KEY = "error-code"
# Correlation ids taken from a client as they are (else a new one): the same rule as the HTTP middleware's.
_VALID_CID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer, the generated function that registers it, and its full service name."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    full_name: str


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for item_key, value in details.invocation_metadata or ():
        if item_key == key:
            return value if isinstance(value, str) else value.decode()
    return None


async def _abort_for(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, ServiceError):
        await context.abort(exc.grpc_code, exc.message, trailing_metadata=((ERROR_CODE_KEY, exc.error_code),))
    log.exception("unhandled error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL,
                        f"internal error (correlation id {correlation_id.get()})")


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Sets the correlation id from metadata and turns exceptions into status codes with a message."""

    def __init__(self, prefix: str = "/upscaling.") -> None:
        self.prefix = prefix

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self.prefix):
            return handler
        given = _metadata_value(handler_call_details, CORRELATION_HEADER) or ""
        cid = given if _VALID_CID.match(given) else new_correlation_id()
        deserialize = handler.request_deserializer or (lambda raw: raw)

        async def parse(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            # Deserialized here rather than by grpc, which answers INTERNAL to bytes that are not the message.
            try:
                return deserialize(raw)
            except Exception:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"the request is not a valid {method.rsplit('/', 1)[-1]} request message",
                                    trailing_metadata=((ERROR_CODE_KEY, "VALIDATION_ERROR"),))

        writer = handler.unary_stream and not inspect.isasyncgenfunction(handler.unary_stream)
        if handler.unary_unary or writer:
            # unary calls, and streams written by a coroutine with context.write (wrapped once, not per message)
            inner = handler.unary_unary or handler.unary_stream

            async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                request = await parse(raw, context)
                token = correlation_id.set(cid)
                try:
                    return await inner(request, context)
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    await _abort_for(context, exc, method)
                finally:
                    correlation_id.reset(token)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.unary_stream_rpc_method_handler
            return make(call, None, handler.response_serializer)

        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                request = await parse(raw, context)
                token = correlation_id.set(cid)
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    await _abort_for(context, exc, method)
                finally:
                    correlation_id.reset(token)

            return grpc.unary_stream_rpc_method_handler(unary_stream, None, handler.response_serializer)
        return handler


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel/server options shared by servers and clients (message size limits, keepalive)."""
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]


class GrpcServer:
    """A grpc.aio server with health and reflection for the given services."""

    def __init__(self, settings: Settings, bindings: Sequence[ServiceBinding], host: str, port: int,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.settings = settings
        self.bindings = list(bindings)
        # The error mapping is outermost, so errors raised by `interceptors` (e.g. authentication) are mapped too.
        self.server = grpc.aio.server(interceptors=[ErrorMappingInterceptor(), *interceptors],
                                      options=grpc_options(settings))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for binding in self.bindings:
            binding.add_to_server(binding.servicer, self.server)
        names = [b.full_name for b in self.bindings]
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self.port = self.add_port(host, port, credentials)

    def add_port(self, host: str, port: int, credentials: grpc.ServerCredentials | None = None) -> int:
        """Listen on host:port too (TLS with `credentials`); returns the bound port."""
        address = f"{host}:{port}"
        bound: int = self.server.add_secure_port(address, credentials) if credentials is not None \
            else self.server.add_insecure_port(address)
        if bound == 0:
            raise RuntimeError(f"cannot bind gRPC port {address}")
        return bound

    async def start(self) -> None:
        """Start serving and mark every service SERVING."""
        await self.server.start()
        for name in ["", *(b.full_name for b in self.bindings)]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC listening", extra={"port": self.port})

    async def stop(self) -> None:
        """Mark NOT_SERVING, then let in-flight calls finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grpc_grace_s)
        log.info("gRPC stopped")


def shutdown_event() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT (installed on the running loop)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


async def serve_until_signal(server: GrpcServer) -> None:
    """Run a server until SIGTERM/SIGINT, then stop it gracefully."""
    stop = shutdown_event()
    await server.start()
    await stop.wait()
    log.info("shutdown signal received")
    await server.stop()
