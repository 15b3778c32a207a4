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
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigChangeRefused, ConfigError
from ..platform import BOARD_TO_BCM, Config, ConfigService, key_apply, leaf_keys
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


class PinUse(BaseModel):
    bcm: int = Field(description="the BCM GPIO number")
    header: int = Field(description="its position on the 40-pin header")
    kind: Literal["input", "relay", "light", "keypad"] = Field(description="what sort of thing is wired there")
    name: str = Field(description="what is wired there, e.g. \"call button b303 (unit 303)\"")
    key: str = Field(description="the config key that sets the pin, e.g. buttons[0].pin")
    live: str | None = Field(description="where GET /api/v1/state reports it: an inputs name or door.relays id")


class ConfigSchema(OkBody):
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of the configuration (the same "
                                    "descriptions, bounds and units as docs/configuration.md)")
    apply: dict[str, str] = Field(description="every leaf key (generic path, door.relays[].hold_s) -> live, restart "
                                  "or local-only")
    file: str | None = Field(description="the config file on the panel: where local-only keys are changed")
    header: dict[int, int] = Field(description="40-pin header position -> BCM GPIO number")
    pins: list[PinUse] = Field(description="every pin the configuration in force uses, by header position")


def pin_uses(cfg: Config) -> list[PinUse]:
    """What the configuration wires to each pin, with where its live state is reported."""
    header = {bcm: board for board, bcm in BOARD_TO_BCM.items()}
    out: list[tuple[int, Literal["input", "relay", "light", "keypad"], str, str, str | None]] = []
    for i, b in enumerate(cfg.buttons):
        out.append((b.pin, "input", f"call button {b.id} (unit {b.unit.label})", f"buttons[{i}].pin", f"button:{b.id}"))
    for i, r in enumerate(cfg.door.relays):
        out.append((r.pin, "relay", f"relay {r.id} ({r.mode}, active {r.active})", f"door.relays[{i}].pin", r.id))
    for name, inp, key, live in (("door contact", cfg.door.contact, "door.contact.pin", "door_contact"),
                                 ("exit button", cfg.door.exit_button, "door.exit_button.pin", "exit_button"),
                                 ("tamper switch", cfg.tamper, "tamper.pin", "tamper")):
        if inp is not None:
            out.append((inp.pin, "input", f"{name} (active {inp.active}, pull {inp.pull})", key, live))
    for i, light in enumerate(cfg.lights):
        out.append((light.pin, "light", f"light {light.id} ({light.role})", f"lights[{i}].pin", None))
    kp = cfg.access.keypad
    if kp is not None:
        out += [(p, "keypad", f"keypad row {n + 1}", f"access.keypad.rows[{n}]", None) for n, p in enumerate(kp.rows)]
        out += [(p, "keypad", f"keypad column {n + 1}", f"access.keypad.cols[{n}]", None) for n, p in enumerate(kp.cols)]
    return sorted((PinUse(bcm=bcm, header=header.get(bcm, 0), kind=kind, name=name, key=key, live=live)
                   for bcm, kind, name, key, live in out), key=lambda u: u.header)


@router.get("/config/schema", response_model=ConfigSchema, response_model_by_alias=True,
            summary="The configuration's schema, when each key takes effect, and the pins in use (installer)",
            responses={401: _401})
async def config_schema(panel: PanelDep, who: Caller) -> ConfigSchema:
    service = panel.config
    return ConfigSchema(message="the installer page builds its forms and pin diagram from this",
                        schema=Config.model_json_schema(), apply={k: key_apply(k) for k in leaf_keys()},
                        file=str(service.path) if service.path else None, header=dict(sorted(BOARD_TO_BCM.items())),
                        pins=pin_uses(service.current))


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
