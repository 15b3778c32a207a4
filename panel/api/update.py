"""Updates over the API: the installer page's (and a script's) way to send the same ``update`` the backend
sends over MQTT, plus the agent's state. The agent (panel/update) owns every rule; this only translates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..update import VERSION_PATTERN, UpdateRequest, disabled_status
from .deps import Caller, PanelDep
from .errors import ApiError, OkBody

router = APIRouter(prefix="/api/v1", tags=["update"])

_401 = {"description": "no, unknown, expired or revoked credential"}
# A request the panel's state refuses now (a later one may pass) against one that will never pass.


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=40, max_length=64, description="the vendor's new public key (base64, 32 bytes)")
    signature: str = Field(min_length=80, max_length=100, description="Ed25519 by a trusted key over "
                           "\"panel-key-rotation.v1\" LF key (docs/updates.md)")


class UpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(pattern=VERSION_PATTERN, description="the release's version, e.g. 1.4.2")
    url: str = Field(min_length=8, max_length=2048, description="https:// URL of the release archive")
    size: int = Field(ge=1, description="its size in bytes")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="its SHA-256, lower-case hex")
    signature: str = Field(min_length=80, max_length=100, description="base64 Ed25519 signature of the manifest "
                           "(docs/updates.md)")
    key_id: str | None = Field(None, pattern=r"^[0-9a-f]{16}$", description="the signing key's id, if known")
    force: bool = Field(False, description="install even if not newer (a downgrade or a reinstall)")
    rotation: Rotation | None = Field(None, description="a new vendor key signed by a trusted one")


class UpdateStatus(OkBody):
    update: dict[str, Any] = Field(description="the agent's state: phase, running version and slot, slots, trial, "
                                   "progress, last result")


@router.get("/update", response_model=UpdateStatus, summary="The update agent's state", responses={401: _401})
async def update_status(panel: PanelDep, who: Caller) -> UpdateStatus:
    status = panel.updates.status() if panel.updates is not None else disabled_status()
    return UpdateStatus(message=f"update {status['phase']}", update=status)


@router.post("/update", response_model=UpdateStatus, summary="Install a signed release (installer)",
             responses={401: _401, 409: {"description": "busy, on trial, or not newer"},
                        422: {"description": "signature, key or size refused"}})
async def start_update(body: UpdateBody, panel: PanelDep, who: Caller) -> UpdateStatus:
    if panel.updates is None:
        raise ApiError("update_disabled", "this panel has no update root (update.root is not set)")
    req = UpdateRequest(version=body.version, url=body.url, size=body.size, sha256=body.sha256,
                        signature=body.signature, key_id=body.key_id, force=body.force,
                        rotation_key=body.rotation.key if body.rotation else None,
                        rotation_signature=body.rotation.signature if body.rotation else None,
                        actor=who.actor, method="api")
    panel.updates.request(req)  # an UpdateError is answered with its status from the one table
    return UpdateStatus(message=f"update to {body.version} started; follow the update.* events",
                        update=panel.updates.status())
