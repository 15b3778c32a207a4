"""The API's HTTPS certificate: the installer's own, or one the panel makes for itself at first start.

The generated certificate is self-signed (ECDSA P-256), names the host, ``<host>.local``,
``localhost`` and every address of the machine, and lives in ``<storage.dir>/tls/`` with the key at
mode 0600. It is kept across restarts (clients that pinned it keep working) and made anew only when
it is missing, unreadable or about to expire, or after a factory reset. Its SHA-256 fingerprint is
logged at start and shown in ``/api/v1/system``, so a client can pin it on first use.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import PanelError
from ..platform import addresses, write_atomic

log = logging.getLogger(__name__)

VALID_DAYS = 3650
RENEW_BEFORE_DAYS = 30
TLS_DIR = "tls"
CERT_NAME = "api-cert.pem"
KEY_NAME = "api-key.pem"


class TlsError(PanelError):
    """The API certificate or key cannot be used."""

    code = "tls_invalid"


@dataclass(frozen=True)
class ServerCert:
    cert_file: Path
    key_file: Path
    fingerprint_sha256: str
    not_after: str
    generated: bool  # made by the panel (not the installer's own)


def cert_paths(storage_dir: Path) -> tuple[Path, Path]:
    d = storage_dir / TLS_DIR
    return d / CERT_NAME, d / KEY_NAME


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def server_cert(storage_dir: Path, panel_id: str, cert_file: Path | None = None,
                key_file: Path | None = None) -> ServerCert:
    """The certificate to serve: the installer's (checked), else the panel's own (made if needed).

    Blocking (file system, key generation): call it before the loop serves, or from a thread."""
    if cert_file is not None and key_file is not None:
        _check_private(key_file)
        cert = _load_cert(cert_file)
        return ServerCert(cert_file, key_file, fingerprint(cert), _iso(cert), generated=False)
    cpath, kpath = cert_paths(storage_dir)
    if cpath.exists() and kpath.exists():
        _check_private(kpath)
        try:
            cert = _load_cert(cpath)
        except TlsError as e:
            log.warning("the panel's certificate is unusable (%s); making a new one", e)
        else:
            left = _not_after(cert) - dt.datetime.now(dt.UTC)
            if left > dt.timedelta(days=RENEW_BEFORE_DAYS):
                return ServerCert(cpath, kpath, fingerprint(cert), _iso(cert), generated=True)
            log.warning("the panel's certificate expires on %s; making a new one", _iso(cert))
    cert = generate(cpath, kpath, panel_id)
    log.warning("made a new HTTPS certificate for the local API; clients that pinned the old one must accept "
                "the new one", extra={"fingerprint_sha256": fingerprint(cert), "cert_file": str(cpath)})
    return ServerCert(cpath, kpath, fingerprint(cert), _iso(cert), generated=True)


def generate(cert_path: Path, key_path: Path, panel_id: str, hostname: str | None = None,
             names: list[str] | None = None) -> x509.Certificate:
    hostname = hostname or socket.gethostname()
    key = ec.generate_private_key(ec.SECP256R1())
    dns = list(dict.fromkeys([hostname, f"{hostname}.local", "localhost"]))
    ips = []
    for a in names if names is not None else addresses():
        try:
            ips.append(ipaddress.ip_address(a))
        except ValueError:
            dns.append(a)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64]),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"door panel {panel_id}"[:64])])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([*map(x509.DNSName, dns), *map(x509.IPAddress, ips)]),
                       critical=False)
        # A self-signed end-entity certificate: clients pin it, or trust exactly this certificate.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_atomic(key_path, key_pem, 0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o600)
    return cert


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise TlsError(f"certificate {path} does not exist; set api.cert_file to an existing PEM file") from None
    except (OSError, ValueError) as e:
        raise TlsError(f"cannot read the certificate {path} ({e}); it must be a PEM certificate") from None


def _check_private(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise TlsError(f"key file {path} does not exist") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TlsError(f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}, so other users can read it; "
                       f"run: chmod 600 {path}")


def _not_after(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def _iso(cert: x509.Certificate) -> str:
    return _not_after(cert).isoformat().replace("+00:00", "Z")
