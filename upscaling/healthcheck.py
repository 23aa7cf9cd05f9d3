"""Health probe for container health checks and Kubernetes exec probes; exit code 0 = healthy, 1 = not.

    upscaling health grpc [HOST:]PORT [SERVICE]   # gRPC health v1 Check (SERVICE "" = the whole server)
    upscaling health http URL                     # HTTP GET, healthy on a 2xx answer

A gateway with TLS: `--tls` (gRPC over TLS), `--ca FILE` (trust this CA, for https:// URLs and --tls), and
`--cert FILE --key FILE` (a client certificate, where the gateway requires mTLS).

(`python -m upscaling.healthcheck ...` without the image's entry point.) A bare PORT means 127.0.0.1:PORT.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tls:
    """TLS for the probe: a CA to trust (default: the system's) and an optional client certificate."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context

    def grpc_credentials(self) -> object:
        import grpc

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


def check_grpc(address: str, service: str = "", timeout_s: float = 3.0, tls: Tls | None = None
               ) -> tuple[bool, str]:
    """Whether the gRPC server at `address` reports SERVING for `service`, and what it said."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = address if ":" in address else f"127.0.0.1:{address}"
    if target.startswith(":"):
        target = "127.0.0.1" + target
    channel = grpc.secure_channel(target, tls.grpc_credentials()) if tls else grpc.insecure_channel(target)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"{target}: {exc.code().name} {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def check_http(url: str, timeout_s: float = 3.0, tls: Tls | None = None) -> tuple[bool, str]:
    """Whether GET `url` answers 2xx, and what it said."""
    context = (tls or Tls()).ssl_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as reply:
            return 200 <= reply.status < 300, f"{url}: HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Run one probe; prints the outcome and returns the exit code."""
    parser = argparse.ArgumentParser(prog="upscaling health", description="Probe a service's health once.")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer (default 3)")
    parser.add_argument("--tls", action="store_true", help="gRPC over TLS")
    parser.add_argument("--ca", help="PEM file of the CA to trust (https:// URLs and --tls)")
    parser.add_argument("--cert", help="PEM client certificate (mTLS)")
    parser.add_argument("--key", help="PEM key of --cert")
    kinds = parser.add_subparsers(dest="kind", required=True)
    grpc_parser = kinds.add_parser("grpc", help="gRPC health v1 Check")
    grpc_parser.add_argument("address", help="HOST:PORT or PORT (on 127.0.0.1)")
    grpc_parser.add_argument("service", nargs="?", default="", help="service name (default: the whole server)")
    http_parser = kinds.add_parser("http", help="HTTP GET, healthy on 2xx")
    http_parser.add_argument("url")
    args = parser.parse_args(argv)
    tls = Tls(args.ca, args.cert, args.key)
    if args.kind == "grpc":
        healthy, said = check_grpc(args.address, args.service, args.timeout,
                                   tls if args.tls or args.ca or args.cert else None)
    else:
        healthy, said = check_http(args.url, args.timeout, tls)
    print(("healthy " if healthy else "unhealthy ") + said, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
