"""The configuration over the API: read it, and change it through the config service.

A change names keys by their dotted path, as ``panel config check`` reports them
(``door.relays[0].hold_s``). ``ConfigService.update`` owns the rules: the whole resulting file is
validated exactly as at start (if any key is wrong nothing is written and every problem is listed),
local-only keys are refused with ``config_local_only``, live keys take effect at once in every
component that uses them, restart keys are saved and listed as waiting for a restart. This module only
translates between HTTP and the service.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigChangeRefused, ConfigError
from ..platform import ConfigService, key_apply, leaf_keys
from .deps import Caller, PanelDep
from .errors import ApiError, OkBody

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["config"])

# The statuses these refusals had before the service owned them (the lead folds them into one table).
def keys_by_apply() -> dict[str, list[str]]:
    """Every leaf key (generic path, ``door.relays[].hold_s``) by when a change to it takes effect."""
    out: dict[str, list[str]] = {"live": [], "restart": [], "local-only": []}
    for key in leaf_keys():
        out[key_apply(key)].append(key)
    return out


class ConfigView(OkBody):
    file: str | None = Field(description="the config file the panel runs from")
    config: dict[str, Any] = Field(description="the configuration in force (no secrets live in it)")
    restart_required: list[str] = Field(description="keys changed in the file that take effect after a restart")
    toml: str | None = Field(description="the file as it is on disk")
    live_keys: list[str] = Field(description="keys a change puts into effect at once (`[]`: every entry)")
    restart_keys: list[str] = Field(description="keys a change saves for the next start")
    local_only_keys: list[str] = Field(description="keys changed only by editing the file on the panel itself; "
                                       "a change over the API is refused with config_local_only")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "7" is not a number, "yes" not a boolean


ConfigValue = Annotated[Any, Field(description="a TOML value: string, number, boolean, list or table")]


class ConfigPatch(Strict):
    set: dict[Annotated[str, Field(max_length=128)], ConfigValue] = Field(
        default_factory=dict, max_length=ConfigService.MAX_CHANGES, description="dotted key path -> new value")
    unset: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=ConfigService.MAX_CHANGES,
        description="keys to remove (back to their default)")
    dry_run: bool = Field(False, description="validate and report, write nothing")


class ConfigUpdate(OkBody):
    changed: list[str] = Field(description="keys whose value changed")
    applied: list[str] = Field(description="changed keys already in effect")
    restart_required: list[str] = Field(description="changed keys that take effect after a restart")
    dry_run: bool


_401 = {"description": "no, unknown, expired or revoked credential"}


@router.get("/config", response_model=ConfigView, summary="The configuration in force, and the file (installer)",
            responses={401: _401})
async def read_config(panel: PanelDep, who: Caller) -> ConfigView:
    service = panel.config
    text, pending = await asyncio.to_thread(service.pending)
    keys = keys_by_apply()
    return ConfigView(message=f"configuration of panel {service.current.panel.id}" + (
        f"; {len(pending)} change(s) wait for a restart" if pending else ""),
        file=str(service.path) if service.path else None, config=service.current.model_dump(mode="json"),
        restart_required=pending, toml=text, live_keys=keys["live"], restart_keys=keys["restart"],
        local_only_keys=keys["local-only"])


@router.patch("/config", response_model=ConfigUpdate, summary="Change configuration keys, validated (installer)",
              responses={401: _401, 403: {"description": "config_local_only: a key is changed only by editing the "
                                                         "file on the panel; nothing was changed"},
                         409: {"description": "no config file, or it cannot be read or written"},
                         422: {"description": "the change is invalid; errors lists every problem by key"}})
async def update_config(body: ConfigPatch, panel: PanelDep, who: Caller) -> ConfigUpdate:
    try:
        change = await panel.config.update(body.set, body.unset, dry_run=body.dry_run)
    except ConfigError as e:
        raise ApiError(e.code, "; ".join(e.problems), errors=list(e.problems)) from None
    except ConfigChangeRefused as e:
        raise ApiError(e.code, str(e), errors=e.keys or None) from None
    pending = change.restart_required
    if not change.changed:
        return ConfigUpdate(message="nothing changes: the file already says that" + (
            f"; restart the panel for {', '.join(pending)}" if pending else ""), changed=[], applied=[],
            restart_required=pending, dry_run=change.dry_run)
    if change.dry_run:
        return ConfigUpdate(message=f"valid; {len(change.changed)} key(s) would change (nothing written)",
                            changed=change.changed, applied=[], restart_required=pending, dry_run=True)
    log.warning("configuration changed over the API", extra={
        "by": who.actor, "changed": change.changed, "applied": change.applied, "restart_required": pending})
    msg = f"{len(change.changed)} key(s) changed, {len(change.applied)} in effect now"
    if pending:
        msg += f"; restart the panel for {', '.join(pending)} (applies after restart)"
    return ConfigUpdate(message=msg, changed=change.changed, applied=change.applied, restart_required=pending,
                        dry_run=False)
