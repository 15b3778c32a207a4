"""The installer's password: no default, a unique one made at first start, only its hash on disk.

``<storage.dir>/installer.cred`` (mode 0600) holds a scrypt hash with its own salt and a
*generation* that grows with every change, so sessions opened with an older password end at once.
The first start writes a random password to ``<storage.dir>/installer.initial`` (mode 0600) too,
so ``panel credentials show-initial`` can show it; that file is removed at the first successful
login and at any change, after which nobody can read the password back.

Everything here is blocking (scrypt takes tens of milliseconds by design, and file I/O): the API
calls it from a worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import PanelError
from ..platform import private_dir, write_atomic

CRED_NAME = "installer.cred"
INITIAL_NAME = "installer.initial"
# scrypt cost: 16 MiB and ~50 ms per check on a Pi 4; raised here, old hashes keep their own cost.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_LEN, MAX_LEN = 12, 256
# zxcvbn's score: 3 is "safely unguessable" (about 10^8 guesses and more). Below that the password is, or is
# made from, an entry of its lists (30,000 common passwords, common words and names) with the patterns
# people use (l33t, capitals, years, keyboard walks, repeats), like "password1234" or "P@ssw0rd2024".
MIN_SCORE = 3
# No look-alikes (0/O, 1/l/I): the password is read off a screen and typed.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


class CredentialError(PanelError):
    """The installer credential cannot be read, written or set as asked."""

    code = "credential_error"

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class CredentialInfo:
    generation: int
    set_at: float
    initial: bool  # still the generated password, never used or changed


def generate_password() -> str:
    """Five groups of five characters: about 123 bits, easy to read out and type."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(5))


def check_strength(password: str) -> None:
    if not isinstance(password, str) or not MIN_LEN <= len(password) <= MAX_LEN:
        raise CredentialError("weak_password", f"the password must be {MIN_LEN} to {MAX_LEN} characters long")
    if not password.isprintable():
        raise CredentialError("weak_password", "the password must not contain control characters")
    if len(set(password)) < 6:
        raise CredentialError("weak_password", "the password repeats too few different characters; use a "
                              "passphrase of several words or let the panel generate one (panel credentials reset)")
    why = _common(password)
    if why is not None:
        raise CredentialError("common_password", f"the password is too easy to guess: {why}; use a passphrase of "
                              "several unrelated words or let the panel generate one (panel credentials reset)")


def _common(password: str) -> str | None:
    """Why zxcvbn finds the password guessable, or None. Never echoes the password."""
    from zxcvbn import zxcvbn  # lazily: its lists cost ~40 ms and some MB, needed only to set a password

    result = zxcvbn(password, max_length=MAX_LEN)
    if int(result["score"]) >= MIN_SCORE:
        return None
    warning = str(result["feedback"].get("warning") or "").rstrip(".")
    return warning[:1].lower() + warning[1:] if warning else "it is built from common words or patterns"


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


class InstallerCredential:
    def __init__(self, storage_dir: Path) -> None:
        self.dir = storage_dir
        self.path = storage_dir / CRED_NAME
        self.initial_path = storage_dir / INITIAL_NAME

    # -- reading ---------------------------------------------------------------------------------
    def _load(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise CredentialError("credential_unreadable", f"{self.path} is unreadable ({e}); reset it with "
                                  "`panel credentials reset --config <file>`") from None
        if not isinstance(data, dict) or data.get("kdf") != "scrypt":
            raise CredentialError("credential_unreadable", f"{self.path} is not a panel credential file; reset it "
                                  "with `panel credentials reset --config <file>`")
        return data

    def exists(self) -> bool:
        return self.path.exists()

    def info(self) -> CredentialInfo | None:
        data = self._load()
        if data is None:
            return None
        return CredentialInfo(generation=int(data.get("generation", 1)),  # type: ignore[call-overload]
                              set_at=float(data.get("set_at", 0)),  # type: ignore[arg-type]
                              initial=self.initial_path.exists())

    def verify(self, password: str) -> CredentialInfo | None:
        """The credential's info if ``password`` is right, else None. Constant work either way."""
        data = self._load()
        if data is None or not isinstance(password, str) or len(password) > MAX_LEN:
            # Spend the same time as a real check, so timing does not tell whether a credential exists.
            _hash("x", b"0" * 16, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            return None
        try:
            salt = base64.b64decode(str(data["salt"]))
            want = base64.b64decode(str(data["hash"]))
            n, r, p = int(data["n"]), int(data["r"]), int(data["p"])  # type: ignore[call-overload]
        except (KeyError, ValueError) as e:
            raise CredentialError("credential_unreadable", f"{self.path} is damaged ({e}); reset it with "
                                  "`panel credentials reset --config <file>`") from None
        if not hmac.compare_digest(_hash(password, salt, n, r, p), want):
            return None
        return CredentialInfo(generation=int(data.get("generation", 1)), set_at=float(data.get("set_at", 0)),  # type: ignore[call-overload, arg-type]
                              initial=self.initial_path.exists())

    def initial_password(self) -> str | None:
        """The generated password, until it is first used or changed; then None."""
        try:
            return self.initial_path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    # -- writing ---------------------------------------------------------------------------------
    def ensure(self) -> str | None:
        """Make a first password if there is none; returns it (to show once), else None."""
        if self.exists():
            self._load()  # a damaged file must stop the start, not lock the installer out silently
            return None
        password = generate_password()
        self._store(password, initial=True)
        return password

    def set(self, password: str) -> CredentialInfo:
        """Replace the password (strength checked). Ends every session opened with the old one."""
        check_strength(password)
        return self._store(password, initial=False)

    def reset(self) -> str:
        """A new generated password, shown by ``show-initial`` until first use."""
        password = generate_password()
        self._store(password, initial=True)
        return password

    def first_used(self) -> None:
        """The generated password was used to log in: nobody may read it back from now on."""
        _remove(self.initial_path)

    def _store(self, password: str, *, initial: bool) -> CredentialInfo:
        old = self._load() if self.exists() else None
        generation = int(old.get("generation", 0)) + 1 if old else 1  # type: ignore[call-overload]
        salt = os.urandom(16)
        now = time.time()
        data = {"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                "salt": base64.b64encode(salt).decode(), "hash": base64.b64encode(
                    _hash(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).decode(),
                "generation": generation, "set_at": now}
        private_dir(self.dir)
        if initial:
            write_private(self.initial_path, password.encode() + b"\n")
        else:
            _remove(self.initial_path)
        write_private(self.path, json.dumps(data).encode())
        return CredentialInfo(generation=generation, set_at=now, initial=initial)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically, readable by the owner only."""
    write_atomic(path, data, 0o600)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
