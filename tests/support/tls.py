"""The one self-signed certificate maker of the tests (the https image origin and
the control plane's TLS listener)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

__all__ = ["self_signed"]


def self_signed(
    directory: Path,
    common_name: str,
    *,
    dns: str | None = None,
    ip: str | None = None,
    cert_name: str = "cert.pem",
    key_name: str = "key.pem",
    valid_from: dt.timedelta = dt.timedelta(days=1),
) -> tuple[Path, Path]:
    """Write a self-signed EC certificate (a CA, valid a day on) and its key into
    ``directory``; its one subject alternative name is ``dns`` or ``ip``. Returns
    the certificate's and the key's paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    san: x509.GeneralName = (
        x509.DNSName(dns) if dns is not None else x509.IPAddress(ipaddress.ip_address(ip or ""))
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - valid_from)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / cert_name, directory / key_name
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
