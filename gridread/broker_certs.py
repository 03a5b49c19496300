"""A local CA and the broker's TLS certificate (`gridread broker certs`), for tests, the demo
and a first installation. A utility with its own CA issues the server certificate there
instead and points the broker's cafile/certfile/keyfile (and gridread's mqtt_ca_file) at it.

Files: ca.crt, ca.key (0600: it signs), server.crt, server.key (0600). An existing CA is
reused, so certificates already given to devices stay valid; the server certificate is
issued anew each time (e.g. for new host names).
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CRT, CA_KEY, SERVER_CRT, SERVER_KEY = "ca.crt", "ca.key", "server.crt", "server.key"


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridread"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _save_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _ca(out: Path, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = out / CA_CRT, out / CA_KEY
    if crt.exists() and key.exists():
        loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key}: not an EC key")
        return x509.load_pem_x509_certificate(crt.read_bytes()), loaded
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("gridread local CA"))
        .issuer_name(_name("gridread local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    _save_key(key, ca_key)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, ca_key


def make_certs(out: Path, hosts: list[str], *, days: int = 825) -> list[Path]:
    """The CA (kept if present) and a server certificate for `hosts` (DNS names or IP
    addresses); returns the files written."""
    if not hosts:
        raise ValueError("at least one host name or address for the server certificate")
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca(out, days)
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _save_key(out / SERVER_KEY, key)
    (out / SERVER_CRT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return [out / n for n in (CA_CRT, CA_KEY, SERVER_CRT, SERVER_KEY)]
