"""A certificate authority for tests, and TLS certificates for the servers it vouches for.

Every homeserver of a scenario serves federation over HTTPS with a certificate
issued here, and trusts this CA for its outbound requests. Server names are IP
literals (127.0.0.2, ...), so each certificate carries its name as an IP
address in subjectAltName. A DNS name gets a DNS entry instead.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class ServerCertificate:
    """PEM files of one server: the chain (leaf, then CA) and the PKCS#8 private key."""

    name: str
    cert_path: Path
    key_path: Path


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject_alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class TestCA:
    """A self-signed CA whose certificate is written to `cert_path` (PEM)."""

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lattice federation test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self._certificate.public_bytes(serialization.Encoding.PEM)
        self.cert_path = directory / "test-ca.pem"
        self.cert_path.write_bytes(self.cert_pem)

    def ssl_context(self) -> ssl.SSLContext:
        """Create a client TLS context that trusts only this CA, for requests of the harness itself."""
        return ssl.create_default_context(cadata=self.cert_pem.decode())

    def issue(self, host: str, directory: Path | None = None) -> ServerCertificate:
        """Issue a server certificate for `host` (an IP literal or a DNS name, without port).

        The files go to `directory` (default: the CA's own directory) as
        `<host>.crt.pem` and `<host>.key.pem`.
        """
        directory = directory or self.directory
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([_subject_alt_name(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_path = directory / f"{host}.crt.pem"
        key_path = directory / f"{host}.key.pem"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM) + self.cert_pem)
        key_path.write_bytes(_private_key_pem(key))
        key_path.chmod(0o600)
        return ServerCertificate(name=host, cert_path=cert_path, key_path=key_path)
