"""The enrolled identity on disk, and what it changes in the panel's backend settings.

``storage.dir/enrolment/`` holds one generation directory per enrolment (``gen-<n>``: ``key.pem`` and
``identity.json`` mode 0600, ``cert.pem``, ``ca.pem``) and ``current``, a symlink to the one in force.
A generation is written under a temporary name, fsynced, renamed, and only then does ``current`` move
to it (a new symlink renamed over the old): after a crash at any instant the panel has either the old
identity whole or the new one whole, never a key of one and a certificate of the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..auth import Secrets
from ..platform import Config, fsync_dir, iso8601, write_atomic
from ._est import EnrolError, PanelConfigMsg

CURRENT = "current"
_GEN_RE = re.compile(r"^gen-(\d{1,9})$")


@dataclass(frozen=True)
class Identity:
    """The panel's client certificate and the backend it was issued for."""

    dir: Path
    panel_id: str
    serial: str
    not_before: float
    not_after: float
    enrolled_at: float
    mqtt_host: str
    mqtt_port: int
    topic_prefix: str | None
    has_ca: bool
    webhook_url: str | None
    webhook_secret: str | None = field(default=None, repr=False)
    command_key: str | None = field(default=None, repr=False)

    @property
    def cert_file(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def key_file(self) -> Path:
        return self.dir / "key.pem"

    @property
    def ca_file(self) -> Path | None:
        return self.dir / "ca.pem" if self.has_ca else None

    def public(self) -> dict[str, Any]:
        return {"panel_id": self.panel_id, "serial": self.serial, "not_before": iso8601(self.not_before),
                "not_after": iso8601(self.not_after), "enrolled_at": iso8601(self.enrolled_at),
                "broker": f"{self.mqtt_host}:{self.mqtt_port}", "webhooks": self.webhook_url is not None}


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


def pick_certificate(certs: list[x509.Certificate], key: ec.EllipticCurvePrivateKey, panel_id: str,
                     now: float) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The issued certificate (the one for ``key``) and the rest of the chain, checked: it names this
    panel, is valid now and may be used as a TLS client certificate."""
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    mine = [c for c in certs if c.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == spki]
    if not mine:
        raise EnrolError("enrol_wrong_identity", "the backend answered with a certificate for another key, not the "
                         "one in this panel's request; nothing was changed: report this to the backend's operators")
    cert = mine[0]
    cn = common_name(cert)
    if cn != panel_id:
        raise EnrolError("enrol_wrong_identity", f"the backend issued a certificate for panel {cn!r}, but this panel "
                         f"is {panel_id!r}; nothing was changed: the code was redeemed for another panel id, redeem "
                         "it again for this one")
    if not cert.not_valid_before_utc.timestamp() <= now < cert.not_valid_after_utc.timestamp():
        raise EnrolError("enrol_wrong_identity", f"the issued certificate is valid from {cert.not_valid_before_utc} to "
                         f"{cert.not_valid_after_utc}, not now; check the panel's clock (NTP) and the backend's")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise EnrolError("enrol_wrong_identity", "the issued certificate is not for TLS clients (its extended "
                             "key usage lacks clientAuth); the backend's EST CA profile must allow it")
    except x509.ExtensionNotFound:
        pass
    return cert, [c for c in certs if c is not cert]


def _generations(root: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _GEN_RE.match(p.name))) if root.exists() else []


def stage(root: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, chain: list[x509.Certificate]) -> Path:
    """A new generation's key and certificate under a temporary name (not in force). Blocking."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    n = max(_generations(root), default=0) + 1
    staged = root / f"gen-{n}.staging"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(mode=0o700)
    write_atomic(staged / "key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), 0o600)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain])
    write_atomic(staged / "cert.pem", pem, 0o644)
    return staged


def add_ca(staged: Path, pem: str) -> Path:
    """The broker's CA bundle the backend sent, beside the staged certificate. Blocking."""
    write_atomic(staged / "ca.pem", pem.encode(), 0o644)
    return staged / "ca.pem"


def commit(staged: Path, cert: x509.Certificate, msg: PanelConfigMsg, now: float) -> Identity:
    """Finish the staged generation with the backend's settings and put it in force. Blocking."""
    info = {"panel_id": msg.panel_id, "serial": format(cert.serial_number, "x"),
            "not_before": cert.not_valid_before_utc.timestamp(), "not_after": cert.not_valid_after_utc.timestamp(),
            "enrolled_at": now, "mqtt_host": msg.mqtt.host, "mqtt_port": msg.mqtt.port,
            "topic_prefix": msg.mqtt.topic_prefix, "has_ca": msg.mqtt.ca_pem is not None,
            "webhook_url": msg.webhooks.url if msg.webhooks else None,
            "webhook_secret": msg.webhooks.secret if msg.webhooks else None, "command_key": msg.command_key}
    write_atomic(staged / "identity.json", json.dumps(info).encode(), 0o600)
    fsync_dir(staged)
    root = staged.parent
    final = root / staged.name.removesuffix(".staging")
    os.rename(staged, final)
    link = root / f".{CURRENT}.tmp"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    os.symlink(final.name, link)
    os.replace(link, root / CURRENT)
    fsync_dir(root)
    for n in _generations(root):  # the old generations: nothing uses them any more
        if root / f"gen-{n}" != final:
            shutil.rmtree(root / f"gen-{n}", ignore_errors=True)
    return _identity(final, info)


def discard(staged: Path) -> None:
    shutil.rmtree(staged, ignore_errors=True)


def _identity(directory: Path, info: dict[str, Any]) -> Identity:
    return Identity(dir=directory, panel_id=str(info["panel_id"]), serial=str(info["serial"]),
                    not_before=float(info["not_before"]), not_after=float(info["not_after"]),
                    enrolled_at=float(info["enrolled_at"]), mqtt_host=str(info["mqtt_host"]),
                    mqtt_port=int(info["mqtt_port"]), topic_prefix=info.get("topic_prefix"),
                    has_ca=bool(info["has_ca"]), webhook_url=info.get("webhook_url"),
                    webhook_secret=info.get("webhook_secret"), command_key=info.get("command_key"))


def load_identity(root: Path, *, tidy: bool = True) -> Identity | None:
    """The identity in force, or None (never enrolled, or reset). With ``tidy`` (the daemon, at its start)
    removes what a crash left half-written; a reader beside a running daemon (``panel enrol show``) must not,
    as those are the daemon's writes in flight. Blocking."""
    if not root.exists():
        return None
    for p in root.iterdir() if tidy else ():
        if p.name.endswith(".staging") or p.name.endswith(".tmp"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    current = root / CURRENT
    if not current.is_symlink():
        return None
    directory = root / os.readlink(current)
    try:
        info = json.loads((directory / "identity.json").read_text(encoding="utf-8"))
        return _identity(directory, info)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def backend_settings(cfg: Config, secrets: Secrets, ident: Identity | None) -> tuple[Config, Secrets]:
    """The config and secrets the backend link runs with: the file's, with the enrolled broker, client
    certificate, webhook endpoint and secret in place of the keys enrolment hands over."""
    if ident is None:
        return cfg, secrets
    ca = ident.ca_file or cfg.mqtt.ca_file or cfg.enrol.ca_file
    mqtt = cfg.mqtt.model_copy(update={
        "host": ident.mqtt_host, "port": ident.mqtt_port, "tls": True, "ca_file": ca,
        "cert_file": ident.cert_file, "key_file": ident.key_file, "username": None,
        "topic_prefix": ident.topic_prefix or cfg.mqtt.topic_prefix})
    webhooks = cfg.webhooks.model_copy(update={"url": ident.webhook_url})
    cfg = cfg.model_copy(update={"mqtt": mqtt, "webhooks": webhooks})
    if ident.webhook_secret is not None:
        secrets = secrets.model_copy(update={"webhook_secrets": [ident.webhook_secret]})
    if ident.command_key is not None:
        secrets = secrets.model_copy(update={"command_key": ident.command_key})
    return cfg, secrets
