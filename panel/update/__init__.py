"""Signed updates into two application slots, with a boot counter and automatic rollback (docs/updates.md)."""

from ._agent import UpdateAgent, UpdateRequest, disabled_status
from ._boot import FACTORY, SLOTS, choose_slot, load_state, save_state
from ._release import (
    UPDATE_ERRORS,
    VERSION_PATTERN,
    Keyring,
    UpdateError,
    build_release,
    key_id,
    manifest_bytes,
    public_b64,
    sha256_file,
    sign_manifest,
    sign_rotation,
    version_key,
)

__all__ = [
    "FACTORY",
    "SLOTS",
    "UPDATE_ERRORS",
    "VERSION_PATTERN",
    "Keyring",
    "UpdateAgent",
    "UpdateError",
    "UpdateRequest",
    "build_release",
    "choose_slot",
    "disabled_status",
    "key_id",
    "load_state",
    "manifest_bytes",
    "public_b64",
    "save_state",
    "sha256_file",
    "sign_manifest",
    "sign_rotation",
    "version_key",
]
