"""The embedded broker's TLS material: a CA of its own and a server certificate it signs.

Made once, on the first start, in the state folder's ``secrets/tls`` (keys 0600): terminals
are given ``ca.crt`` with their credentials and verify the broker against it, so a machine in
the middle cannot pose as the broker. A deployment with a CA of its own points the broker's
config at its files instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dispatcher.core.errors import ConfigError
from dispatcher.embedded.secrets import private_folder, write_private

# Ten years for the CA, two for the server: terminals in the field keep the CA for their life,
# the server certificate is renewed by deleting it (the next start makes a new one).
_CA_DAYS = 3650
_SERVER_DAYS = 730


# A CA that signs certificates and revocation lists, and nothing else.
_CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


# A CA that signs certificates and revocation lists, and nothing else.
_CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.read_text(encoding="ascii")


def ensure_tls(folder: Path, hosts: list[str]) -> TlsFiles:
    """The CA and server files in ``folder``; made if missing, the server certificate also
    when it does not name every one of ``hosts`` (names or IP addresses) or is near its end."""
    private_folder(folder)
    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    ca_key_path = folder / "ca.key"
    if not (files.ca_cert.exists() and ca_key_path.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        write_private(ca_key_path, _key_pem(ca_key))
        write_private(files.ca_cert, _pem(_ca_certificate(ca_key)))
    if _server_current(files.server_cert, hosts):
        return files
    signer = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key is not the EC key this engine made", path=ca_key_path)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _server_certificate(server_key, signer, ca_cert, hosts)
    write_private(files.server_key, _key_pem(server_key))
    write_private(files.server_cert, _pem(server_cert))
    return files


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ebd embedded broker CA")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: list[str],
) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=_SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _server_current(path: Path, hosts: list[str]) -> bool:
    if not path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - datetime.now(UTC) < timedelta(days=30):
        return False
    return all(_san(h) in names for h in hosts)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
