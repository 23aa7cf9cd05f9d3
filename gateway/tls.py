"""TLS on the gateway's public ports: GATEWAY_TLS_CERT + GATEWAY_TLS_KEY (PEM files) switch the HTTP/WebSocket
port and the gRPC port to TLS; GATEWAY_TLS_CLIENT_CA additionally requires client certificates signed by that CA
(mTLS). With TLS on, plaintext is off unless GATEWAY_PLAINTEXT_HTTP_PORT / GATEWAY_PLAINTEXT_GRPC_PORT open extra
plaintext listeners (e.g. on a private interface for probes behind a TLS-terminating proxy)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from upscaling.config import Settings


@dataclass(frozen=True)
class GatewayTls:
    """The gateway's certificate, key and optional client CA (files read at start)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayTls | None:
        """The configured TLS, None when off; ValueError when half configured or a file cannot be read."""
        cert, key, ca = settings.gateway_tls_cert, settings.gateway_tls_key, settings.gateway_tls_client_ca
        if not cert and not key:
            if ca:
                raise ValueError("GATEWAY_TLS_CLIENT_CA needs GATEWAY_TLS_CERT and GATEWAY_TLS_KEY")
            return None
        if not cert or not key:
            raise ValueError("set both GATEWAY_TLS_CERT and GATEWAY_TLS_KEY (PEM files), or neither")
        tls = cls(Path(cert), Path(key), Path(ca) if ca else None)
        for name, path in (("GATEWAY_TLS_CERT", tls.cert), ("GATEWAY_TLS_KEY", tls.key),
                           ("GATEWAY_TLS_CLIENT_CA", tls.client_ca)):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {path}")
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert, tls.key)  # fails early
        return tls

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials for the gRPC port (client certificates required with a client CA)."""
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.client_ca.read_bytes() if self.client_ca else None,
            require_client_auth=self.client_ca is not None)

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.Config keyword arguments for the HTTP/WebSocket port."""
        options: dict[str, Any] = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        if self.client_ca is not None:
            options |= {"ssl_ca_certs": str(self.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options
