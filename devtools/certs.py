"""A development certificate authority and certificates for the gateway's TLS (`make dev-certs`).

    python -m devtools.certs DIR [--host NAME ...]

writes DIR/ca.pem (the CA to trust), DIR/server.pem + DIR/server-key.pem (for GATEWAY_TLS_CERT / GATEWAY_TLS_KEY;
names: localhost, 127.0.0.1, ::1, gateway and every --host) and DIR/client.pem + DIR/client-key.pem (a client
certificate of the same CA, for mTLS with GATEWAY_TLS_CLIENT_CA=DIR/ca.pem). Keys are ECDSA P-256, valid 365 days.
For development and tests only: production certificates come from your CA or cert-manager (see the README).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1", "gateway")


@dataclass(frozen=True)
class DevCerts:
    """Paths of the files written."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "upscaling dev"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate | None) -> None:
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    else:
        assert cert is not None
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(subject: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate | None,
           names: tuple[str, ...] = (), client: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer = ca_cert.subject if ca_cert is not None else _name(subject)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key() if ca_cert is not None else ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365)))
    if ca_cert is None:  # the CA itself
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
        return ca_key, builder.sign(ca_key, hashes.SHA256())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True) \
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def create(folder: Path, hosts: tuple[str, ...] = ()) -> DevCerts:
    """Write a CA, a server certificate for DEFAULT_NAMES + `hosts` and a client certificate into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _issue("upscaling dev CA", ec.generate_private_key(ec.SECP256R1()), None)
    server_key, server_cert = _issue("upscaling gateway", ca_key, ca_cert, (*DEFAULT_NAMES, *hosts))
    client_key, client_cert = _issue("upscaling client", ca_key, ca_cert, client=True)
    out = DevCerts(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem", folder / "client.pem",
                   folder / "client-key.pem")
    _write(out.ca, None, ca_cert)
    _write(out.server_cert, None, server_cert)
    _write(out.server_key, server_key, None)
    _write(out.client_cert, None, client_cert)
    _write(out.client_key, client_key, None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.certs", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--host", action="append", default=[], help="another name or address of the gateway")
    args = parser.parse_args(argv)
    out = create(args.folder, tuple(args.host))
    print(f"CA: {out.ca}\nGATEWAY_TLS_CERT={out.server_cert}\nGATEWAY_TLS_KEY={out.server_key}\n"
          f"client certificate (mTLS): {out.client_cert} {out.client_key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
