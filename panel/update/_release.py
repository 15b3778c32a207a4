"""Releases: what is signed, how a signature and a key rotation verify, how a release is built and unpacked.

A release is a gzip'd tar of one application tree: ``panel/`` (the package) and ``release.json``
(``{"version": ...}``). Its manifest is ``{version, url, size, sha256}``; the vendor signs
``panel-release.v1`` LF JCS(manifest) with Ed25519 (RFC 8032). The panel checks that signature
against its pinned keys before it downloads a byte, and size and hash before it unpacks one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import CODES, PanelError

RELEASE_CONTEXT = b"panel-release.v1"
ROTATION_CONTEXT = b"panel-key-rotation.v1"
VERSION_PATTERN = r"^\d{1,6}(\.\d{1,6}){0,3}$"
_VERSION_PREFIX = re.compile(r"^(\d+(?:\.\d+)*)")


class UpdateError(PanelError):
    """An update was refused or failed; nothing in use changed. ``code`` says why, stably."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


# Every code an UpdateError carries, with what it means (docs/updates.md lists them).
# The update refusals, as the one error table (panel/errors.py) describes them.
UPDATE_ERRORS: dict[str, str] = {code: spec.meaning for code, spec in CODES.items() if code.startswith("update_")}


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def public_b64(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def load_public(text: str) -> Ed25519PublicKey:
    """A public key as base64 of its 32 raw bytes (what ``*.pub`` files and rotations carry)."""
    raw = base64.b64decode(text.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def version_key(version: str) -> tuple[int, ...]:
    """Releases compare by their numeric dotted prefix; a source tree (``0.0.0+source``) is 0.0.0."""
    m = _VERSION_PREFIX.match(version)
    parts = tuple(int(p) for p in m.group(1).split(".")) if m else (0,)
    return parts + (0,) * (4 - len(parts))


def manifest_bytes(version: str, url: str, size: int, sha256: str) -> bytes:
    # JCS of an object of strings and one small integer: sorted keys, no whitespace, plain JSON strings.
    body = json.dumps({"sha256": sha256, "size": size, "url": url, "version": version}, separators=(",", ":"),
                      ensure_ascii=False)
    return RELEASE_CONTEXT + b"\n" + body.encode()


def sign_manifest(key: Ed25519PrivateKey, version: str, url: str, size: int, sha256: str) -> str:
    return base64.b64encode(key.sign(manifest_bytes(version, url, size, sha256))).decode()


def sign_rotation(old: Ed25519PrivateKey, new: Ed25519PublicKey) -> str:
    """The old key's word that ``new`` is the vendor's next key."""
    return base64.b64encode(old.sign(ROTATION_CONTEXT + b"\n" + public_b64(new).encode())).decode()


@dataclass
class Keyring:
    """The keys a release may be signed with: the pinned ones, plus rotations they signed."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Keyring:
        keys = [load_public(t) for t in texts if t.strip()]
        return cls({key_id(k): k for k in keys})

    @classmethod
    def from_dir(cls, directory: Path) -> Keyring:
        texts = [p.read_text() for p in sorted(directory.glob("*.pub"))] if directory.is_dir() else []
        return cls.from_texts(texts)

    def accept_rotation(self, new_key: str, signature: str) -> str:
        """Trust ``new_key`` if a trusted key signed it; returns its id (``update_bad_rotation`` otherwise)."""
        try:
            new = load_public(new_key)
            sig = base64.b64decode(signature, validate=True)
        except ValueError as e:
            raise UpdateError("update_bad_rotation", f"the rotation's key or signature is not base64 of the "
                              f"right length ({e})") from None
        message = ROTATION_CONTEXT + b"\n" + public_b64(new).encode()
        for old in self.keys.values():
            try:
                old.verify(sig, message)
            except InvalidSignature:
                continue
            self.keys[key_id(new)] = new
            return key_id(new)
        raise UpdateError("update_bad_rotation", "the new key is not signed by a key this panel trusts")

    def verify(self, signature: str, version: str, url: str, size: int, sha256: str,
               kid: str | None = None) -> str:
        """The id of the key that signed this manifest, or ``UpdateError``."""
        try:
            sig = base64.b64decode(signature, validate=True)
        except ValueError:
            raise UpdateError("update_bad_signature", "signature is not base64") from None
        if kid is not None and kid not in self.keys:
            raise UpdateError("update_untrusted_key", f"key {kid} is not one this panel trusts (trusted: "
                              f"{', '.join(sorted(self.keys)) or 'none'})")
        candidates = {kid: self.keys[kid]} if kid is not None else self.keys
        message = manifest_bytes(version, url, size, sha256)
        for k, pub in candidates.items():
            try:
                pub.verify(sig, message)
                return k
            except InvalidSignature:
                continue
        if kid is None:
            raise UpdateError("update_untrusted_key" if not self.keys else "update_bad_signature",
                              "the signature verifies with none of this panel's keys (a wrong signature, or a key "
                              "it does not trust)")
        raise UpdateError("update_bad_signature", f"the signature does not verify with key {kid}")


# -- building and unpacking ------------------------------------------------------------------------


def build_release(source: Path, version: str, out: Path,
                  replace: dict[str, tuple[str, str]] | None = None) -> Path:
    """A release archive of the ``panel`` package under ``source``, stamped ``version``.

    ``__version__`` in the archive is the release's (the installed metadata of the factory application
    would otherwise answer for every slot). ``replace`` edits files on the way in: ``{path: (old, new)}``
    (the tests build broken releases this way)."""
    replace = dict(replace or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))

        add_bytes("release.json", json.dumps({"version": version}).encode())
        pkg = source / "panel"
        for path in sorted(pkg.rglob("*")):
            rel = path.relative_to(source).as_posix()
            if "__pycache__" in path.parts or path.is_dir() or path.suffix in (".pyc",):
                continue
            data = path.read_bytes()
            if rel == "panel/__init__.py":
                data += f"\n__version__ = {version!r}  # stamped by the release build\n".encode()
            if rel in replace:
                old, new = replace.pop(rel)
                text = data.decode()
                if old not in text:
                    raise ValueError(f"{rel}: {old!r} not found")
                data = text.replace(old, new, 1).encode()
            add_bytes(rel, data)
    if replace:
        raise ValueError(f"not in the release: {sorted(replace)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unpack(archive: Path, dest: Path, version: str) -> None:
    """Unpack into ``dest`` (which must not exist); refuses anything but plain files and folders below it."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                # Checked here rather than left to tarfile's 'data' filter: bookworm's Python 3.11.2 has none.
                path = PurePosixPath(member.name)
                if not (member.isfile() or member.isdir()):
                    raise UpdateError("update_bad_release", f"{member.name}: only files and folders are allowed")
                if path.is_absolute() or ".." in path.parts:
                    raise UpdateError("update_bad_release", f"{member.name}: a path outside the release")
                member.mode = 0o755 if member.isdir() else 0o644  # no set-id bits, nothing executable
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **extra)  # type: ignore[arg-type]
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise UpdateError("update_bad_release", f"the archive does not unpack ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads((dest / "release.json").read_text())
    except (OSError, ValueError):
        shutil.rmtree(dest, ignore_errors=True)
        raise UpdateError("update_bad_release", "the archive has no readable release.json") from None
    if meta.get("version") != version or not (dest / "panel" / "__main__.py").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        raise UpdateError("update_bad_release", f"the archive holds version {meta.get('version')!r} (signed: "
                          f"{version!r}) or no panel package")
