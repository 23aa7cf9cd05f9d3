"""`python -m services.tiler`: the tiler gRPC service."""


from services.tiler.servicer import TilerServicer
from upscaling import event_loop, metrics
from upscaling.config import load_settings
from upscaling.grpc_server import GrpcServer, ServiceBinding, serve_until_signal
from upscaling.logs import configure_logging
from upscaling.v1 import tiler_pb2, tiler_pb2_grpc


async def main() -> None:
    settings = load_settings()
    configure_logging("tiler", settings.log_level, settings.log_format)
    binding = ServiceBinding(
        TilerServicer(settings),
        tiler_pb2_grpc.add_TilerServiceServicer_to_server,
        tiler_pb2.DESCRIPTOR.services_by_name["TilerService"].full_name,
    )
    metrics_server = await metrics.start_server(settings, "tiler")
    try:
        await serve_until_signal(GrpcServer(settings, [binding], settings.tiler_host, settings.tiler_port))
    finally:
        await metrics_server.stop()


if __name__ == "__main__":
    event_loop.run(main())
