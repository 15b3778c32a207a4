"""The enrolment code a fresh panel shows: a one-time secret, this panel's id and its key's fingerprint.

The short code (16 Crockford base32 characters, 80 bits, shown in groups of four) is what an installer
types into the backend account beside the panel id; the QR code carries both and the SHA-256
fingerprint of the key the panel will put in its CSR, so a backend that scanned it can refuse a CSR
made with any other key. The code, and the key it names, live in one file (mode 0600) under
``storage.dir/enrolment``: made at the first need, replaced once ``enrol.code_ttl_s`` has passed,
removed when an enrolment with it succeeded (it is single-use).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..platform import fsync_dir, iso8601

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U
CODE_CHARS = 16
PENDING = "pending.json"
URI_SCHEME = "panel-enrol"
# What a person may type for a character (Crockford: O is 0, I and L are 1; dashes and spaces are ignored)
_TYPED = str.maketrans({"O": "0", "I": "1", "L": "1"})


def normalise(code: str) -> str:
    """A typed code as the panel made it: upper case, dashes and spaces dropped, O/I/L read as 0/1."""
    return "".join(c for c in code.upper() if c not in "- ").translate(_TYPED)


def key_fingerprint(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """base64url (no padding) of the SHA-256 of the public key's DER SubjectPublicKeyInfo."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class EnrolCode:
    panel_id: str
    secret: str = field(repr=False)
    key_pem: bytes = field(repr=False)
    created: float
    expires: float

    @property
    def short(self) -> str:
        """The secret as shown: XXXX-XXXX-XXXX-XXXX."""
        return "-".join(self.secret[i:i + 4] for i in range(0, len(self.secret), 4))

    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key())

    @property
    def uri(self) -> str:
        """What the QR code carries (docs/enrolment.md, The enrolment code)."""
        return (f"{URI_SCHEME}:?v=1&panel={quote(self.panel_id, safe='')}&code={self.secret}"
                f"&fp={self.fingerprint}")

    def qr(self) -> segno.QRCode:
        # Level M survives a smudged screen or a phone's reflection (15 %) and still fits the URI in 41x41.
        return segno.make(self.uri, error="m")

    def qr_svg_data_uri(self) -> str:
        return str(self.qr().svg_data_uri(scale=4, border=2))

    def qr_terminal(self) -> str:
        """The QR code as text for a terminal (two modules per character)."""
        out = io.StringIO()
        self.qr().terminal(out=out, compact=True, border=2)
        return out.getvalue()

    def public(self) -> dict[str, object]:
        """What the installer page and ``panel enrol show`` show (the short code is the secret)."""
        return {"panel_id": self.panel_id, "short": self.short, "uri": self.uri, "fingerprint": self.fingerprint,
                "created": iso8601(self.created), "expires": iso8601(self.expires)}


def _read(path: Path) -> EnrolCode | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return EnrolCode(panel_id=str(data["panel_id"]), secret=str(data["secret"]),
                         key_pem=str(data["key_pem"]).encode(), created=float(data["created"]),
                         expires=float(data["expires"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged: a new code replaces it


def _make(panel_id: str, now: float, ttl_s: float) -> EnrolCode:
    secret = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return EnrolCode(panel_id, secret, key_pem(new_key()), now, now + ttl_s)


def _write_new(path: Path, code: EnrolCode, *, replace: bool) -> None:
    """Write the code's file, mode 0600, whole or not at all; without ``replace`` only if none exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"panel_id": code.panel_id, "secret": code.secret, "key_pem": code.key_pem.decode(),
                       "created": code.created, "expires": code.expires}).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process (panel enrol show) made one first
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def current_code(directory: Path, panel_id: str, ttl_s: float, now: float) -> EnrolCode:
    """The code in force, made (or replaced, once expired or made for another panel id) as needed.
    Blocking (file I/O, key generation): call it off the event loop."""
    path = directory / PENDING
    code = _read(path)
    if code is not None and code.panel_id == panel_id and code.created <= now < code.expires:
        return code
    fresh = _make(panel_id, now, ttl_s)
    if code is None and not path.exists():
        try:
            _write_new(path, fresh, replace=False)
        except FileExistsError:
            raced = _read(path)
            if raced is not None and raced.panel_id == panel_id and raced.created <= now < raced.expires:
                return raced
            _write_new(path, fresh, replace=True)
    else:
        _write_new(path, fresh, replace=True)
    return fresh


def spend_code(directory: Path, code: EnrolCode) -> None:
    """Forget ``code`` after it enrolled the panel (single-use), unless a newer one replaced it already."""
    path = directory / PENDING
    on_disk = _read(path)
    if on_disk is not None and on_disk.secret == code.secret:
        path.unlink(missing_ok=True)
        fsync_dir(directory)
