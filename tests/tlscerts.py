"""Test certificates made on the spot with ``cryptography`` (no network, no openssl CLI).

``make_ca`` makes a self-signed CA; ``make_cert`` a leaf certificate signed by it
for 127.0.0.1 (IP SAN) and ``localhost`` (DNS SAN), usable as a TLS server and
client certificate. A second ``make_ca`` gives a CA nobody trusts: a leaf signed
by it must be refused by a peer that trusts only the first.

Keys are ECDSA P-256 (small and fast; OpenSSL 3, Python's ssl and baresip's libre
all take them). Every file is PEM; ``LeafCert.pem`` holds the certificate followed
by its key, the single-file form baresip's ``sip_certificate`` wants.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_FOR = datetime.timedelta(days=2)
_BACKDATE = datetime.timedelta(hours=1)  # tolerate a little clock skew


@dataclass(frozen=True)
class Ca:
    name: str
    cert_path: Path  # PEM certificate: what a peer that trusts this CA loads as its CA file
    key_path: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class LeafCert:
    name: str
    cert_path: Path  # PEM certificate (leaf only)
    key_path: Path  # PEM private key (PKCS#8, unencrypted)
    pem: Path  # certificate then key in one file (baresip sip_certificate)
    ca: Ca

    @property
    def cert(self) -> Path:  # the names the SIP/TLS tests and config keys use
        return self.cert_path

    @property
    def key(self) -> Path:
        return self.key_path


CertFiles = LeafCert


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recorder tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def make_ca(directory: Path, name: str = "test-ca") -> Ca:
    """A self-signed CA, written to ``directory/name.crt`` and ``name.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = _name(name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = _write(directory / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write(directory / f"{name}.key", _key_pem(key), private=True)
    return Ca(name, cert_path, key_path, cert, key)


def make_cert(
    ca: Ca,
    directory: Path,
    name: str,
    ip: str | None = "127.0.0.1",
    dns: tuple[str, ...] = ("localhost",),
) -> LeafCert:
    """A leaf for ``ip`` and ``dns`` signed by ``ca``: ``name.crt``, ``name.key``
    and ``name.pem`` (certificate + key) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALID_FOR)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(d) for d in dns]
                + ([x509.IPAddress(ipaddress.ip_address(ip))] if ip is not None else [])
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = _key_pem(key)
    cert_path = _write(directory / f"{name}.crt", cert_pem)
    key_path = _write(directory / f"{name}.key", key_pem, private=True)
    pem = _write(directory / f"{name}.pem", cert_pem + key_pem, private=True)
    return LeafCert(name, cert_path, key_path, pem, ca)
