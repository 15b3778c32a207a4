"""The configuration over the API: read it, and change it with validation.

A change names keys by their dotted path, as ``panel config check`` reports them
(``door.relays[0].hold_s``). The whole resulting file is validated exactly as at start; if any key is
wrong nothing is written and every problem is listed. A valid change is written atomically into the
TOML file (comments and layout kept), then the keys in ``HOT`` take effect at once and the others are
listed as needing a restart. Keys in ``LOCKED`` (commands the panel runs, file paths, the TLS
downgrade switch) are changed only by editing the file on the panel itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Annotated, Any

import tomlkit
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from tomlkit.exceptions import TOMLKitError

from ..errors import ConfigError
from ..platform import Config, load_config, parse_config, resolve_paths, write_atomic
from .deps import Caller, PanelDep
from .errors import ApiError, OkBody

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["config"])

# Applied to the running panel without a restart (to the next call / release / login).
HOT = ("panel.name", "panel.board", "calls.*", "door.held_open_s", "door.open_grace_s", "door.relock_on_open",
       "door.exit_button_overrides_tamper", "door.relays[*].hold_s", "door.relays[*].max_on_s", "buttons[*].unit.*",
       "log.level", "storage.history_max_rows", "api.session_ttl_s", "api.login_backoff_s",
       "api.login_lockout_after", "api.mutations_per_minute")
# Only by editing the file on the panel: they run commands, point at files, or weaken transport security.
LOCKED = ("media.video.command", "media.video.file", "media.video.device", "secrets.*", "storage.dir",
          "api.cert_file", "api.key_file", "api.allow_plain_http", "api.tls", "mqtt.ca_file", "mqtt.cert_file",
          "mqtt.key_file", "mqtt.tls", "gpio.*")
MAX_CHANGES = 100
_SEG = r"[a-z_][a-z0-9_]*(?:\[\d{1,3}\])*"
_PATH_RE = re.compile(rf"^{_SEG}(?:\.{_SEG})*$")


def _match(path: str, patterns: tuple[str, ...]) -> bool:
    generic = re.sub(r"\[\d+\]", "[*]", path)
    for p in patterns:
        if p.endswith(".*") and (generic.startswith(p[:-1]) or generic == p[:-2]):
            return True
        if generic == p or generic.startswith(p + "."):
            return True
    return False


def hot(path: str) -> bool:
    return _match(path, HOT)


def locked(path: str) -> bool:
    return _match(path, LOCKED)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path; a list of tables contributes per-index paths."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        out[prefix + "[]"] = len(value)  # a change in length is a change of the list itself
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def diff(old: Config, new: Config) -> list[str]:
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)]
    return [k[:-2] if k.endswith("[]") else k for k in changed]


_MISSING = object()


def _parse_path(path: str) -> list[str | int]:
    if not _PATH_RE.match(path):
        raise ApiError(422, "invalid_request", f"set: {path!r} is not a config key path; expected e.g. "
                       "\"calls.ring_timeout_s\" or \"door.relays[0].hold_s\"")
    parts: list[str | int] = []
    for seg in path.split("."):
        name, *idx = re.split(r"\[", seg)
        parts.append(name)
        parts += [int(i.rstrip("]")) for i in idx]
    return parts


def _container(doc: Any, parts: list[str | int], path: str, create: bool) -> Any:
    node = doc
    for i, part in enumerate(parts[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ApiError(422, "invalid_request", f"{path}: there is no entry [{part}] in this list")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ApiError(422, "invalid_request", f"{path}: {'.'.join(map(str, parts[:i]))} is not a table")
        if part not in node:
            if not create:
                return None
            node[part] = tomlkit.table() if not isinstance(parts[i + 1], int) else tomlkit.aot()
        node = node[part]
    return node


def apply_changes(text: str, sets: dict[str, Any], unsets: list[str]) -> str:
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as e:
        raise ApiError(409, "config_unreadable", f"the config file is not valid TOML ({e}); fix it on the panel") from None
    for path, value in sets.items():
        parts = _parse_path(path)
        if value is None:
            raise ApiError(422, "invalid_request", f"set.{path}: null is not a TOML value; list the key in unset "
                           "to go back to its default")
        node = _container(doc, parts, path, create=True)
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise ApiError(422, "invalid_request", f"{path}: there is no entry [{last}] in this list")
            node[last] = value
        else:
            node[last] = value
    for path in unsets:
        parts = _parse_path(path)
        node = _container(doc, parts, path, create=False)
        if isinstance(node, dict) and isinstance(parts[-1], str) and parts[-1] in node:
            del node[parts[-1]]
    return tomlkit.dumps(doc)


def validate(text: str, path: Path) -> Config:
    try:
        data = tomlkit.parse(text).unwrap()
    except TOMLKitError as e:
        raise ConfigError([f"TOML syntax error: {e}"], str(path)) from None
    return resolve_paths(parse_config(data, source=str(path)), path.parent)


def write_config_file(path: Path, text: str) -> None:
    """The file is old or new, never half; it keeps its mode."""
    write_atomic(path, text.encode("utf-8"), path.stat().st_mode & 0o7777)


def apply_running(panel: Any, new: Config, paths: list[str]) -> list[str]:
    """Put the hot keys among ``paths`` into effect now; returns the ones applied."""
    running = panel.cfg
    data = running.model_dump(mode="json")
    target = new.model_dump(mode="json")
    applied = [p for p in paths if hot(p)]
    if not applied:
        return []
    for p in applied:
        parts = _parse_path(p)
        src: Any = target  # nested dicts and lists, indexed by key or position
        dst: Any = data
        for part in parts[:-1]:
            src, dst = src[part], dst[part]
        dst[parts[-1]] = src[parts[-1]]
    cfg = resolve_paths(parse_config(data), Path("/"))
    panel.cfg = cfg
    door = panel.door
    door.cfg, door.door_cfg = cfg, cfg.door
    for rid, relay in door.relays.items():
        relay.cfg = cfg.relay(rid)
    panel.calls.cfg, panel.calls.policy = cfg, cfg.calls
    panel.journal.panel = cfg.panel
    if "log.level" in applied:
        logging.getLogger().setLevel(cfg.log.level.upper())
    auth = panel.__dict__.get("_api_auth")
    if auth is not None:
        auth.session_ttl_s = cfg.api.session_ttl_s
        auth.login.base_s, auth.login.lockout_after = cfg.api.login_backoff_s, cfg.api.login_lockout_after
        auth.mutations.rate = cfg.api.mutations_per_minute / 60.0
        auth.mutations.burst = float(max(5, cfg.api.mutations_per_minute // 4))
    return applied


class ConfigView(OkBody):
    file: str | None = Field(description="the config file the panel runs from")
    config: dict[str, Any] = Field(description="the configuration in force (no secrets live in it)")
    restart_required: list[str] = Field(description="keys changed in the file that take effect after a restart")
    toml: str | None = Field(description="the file as it is on disk")
    hot_keys: list[str] = Field(description="key patterns applied without a restart")
    locked_keys: list[str] = Field(description="key patterns changed only by editing the file on the panel")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "7" is not a number, "yes" not a boolean


ConfigValue = Annotated[Any, Field(description="a TOML value: string, number, boolean, list or table")]


class ConfigPatch(Strict):
    set: dict[Annotated[str, Field(max_length=128)], ConfigValue] = Field(
        default_factory=dict, max_length=MAX_CHANGES, description="dotted key path -> new value")
    unset: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=MAX_CHANGES, description="keys to remove (back to their default)")
    dry_run: bool = Field(False, description="validate and report, write nothing")


class ConfigUpdate(OkBody):
    changed: list[str] = Field(description="keys whose value changed")
    applied: list[str] = Field(description="changed keys already in effect")
    restart_required: list[str] = Field(description="changed keys that take effect after a restart")
    dry_run: bool


def _file(panel: Any) -> Path:
    path = getattr(panel, "config_path", None)
    if path is None:
        raise ApiError(409, "no_config_file", "this panel was started without a config file it can edit")
    return Path(path)


def _lock(panel: Any) -> asyncio.Lock:
    lock = panel.__dict__.get("_config_lock")
    if lock is None:
        lock = panel.__dict__["_config_lock"] = asyncio.Lock()
    return lock  # type: ignore[no-any-return]


def _read_and_diff(panel: Any, path: Path | None) -> tuple[str | None, list[str]]:
    if path is None:
        return None, []
    try:
        text = path.read_text(encoding="utf-8")
        on_disk = load_config(path)
    except OSError:
        return None, ["(the config file cannot be read)"]
    except ConfigError:
        return text, ["(the file on disk is invalid: run panel config check)"]
    return text, diff(panel.cfg, on_disk)


_401 = {"description": "no, unknown, expired or revoked credential"}


@router.get("/config", response_model=ConfigView, summary="The configuration in force, and the file (installer)",
            responses={401: _401})
async def read_config(panel: PanelDep, who: Caller) -> ConfigView:
    path = getattr(panel, "config_path", None)
    text, pending = await asyncio.to_thread(_read_and_diff, panel, Path(path) if path else None)
    return ConfigView(message=f"configuration of panel {panel.cfg.panel.id}" + (
        f"; {len(pending)} change(s) wait for a restart" if pending else ""), file=str(path) if path else None,
        config=panel.cfg.model_dump(mode="json"), restart_required=pending, toml=text, hot_keys=list(HOT),
        locked_keys=list(LOCKED))


@router.patch("/config", response_model=ConfigUpdate, summary="Change configuration keys, validated (installer)",
              responses={401: _401, 403: {"description": "a key is locked (edit the file on the panel)"},
                         409: {"description": "no config file, or it cannot be read or written"},
                         422: {"description": "the change is invalid; errors lists every problem by key"}})
async def update_config(body: ConfigPatch, panel: PanelDep, who: Caller) -> ConfigUpdate:
    if not body.set and not body.unset:
        raise ApiError(422, "invalid_request", "set: give at least one key to set or unset")
    for key in [*body.set, *body.unset]:
        _parse_path(key)
    path = _file(panel)
    async with _lock(panel):
        def prepare() -> tuple[str, Config, Config]:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise ApiError(409, "config_unreadable", f"cannot read {path} ({e.strerror})") from None
            try:
                before = validate(text, path)
            except ConfigError:
                before = panel.cfg  # edited by hand into an invalid state: compare with what runs
            new_text = apply_changes(text, body.set, body.unset)
            return new_text, before, validate(new_text, path)

        try:
            new_text, before, new_cfg = await asyncio.to_thread(prepare)
        except ConfigError as e:
            problems = [p for p in e.problems]
            raise ApiError(422, "config_invalid", "; ".join(problems), errors=problems) from None
        changed = diff(before, new_cfg)  # what this request changes in the file
        refused = [p for p in changed if locked(p)]
        if refused:
            raise ApiError(403, "locked_key", f"{', '.join(refused)}: changed only by editing the config file on the "
                           "panel itself (these keys run commands, point at files or weaken transport security)")
        differs = diff(panel.cfg, new_cfg)  # what the running panel does not do yet
        pending = [p for p in differs if not hot(p)]
        if not changed:
            return ConfigUpdate(message="nothing changes: the file already says that" + (
                f"; restart the panel for {', '.join(pending)}" if pending else ""), changed=[], applied=[],
                restart_required=pending, dry_run=body.dry_run)
        if body.dry_run:
            return ConfigUpdate(message=f"valid; {len(changed)} key(s) would change (nothing written)",
                                changed=changed, applied=[], restart_required=pending, dry_run=True)
        try:
            await asyncio.to_thread(write_config_file, path, new_text)
        except OSError as e:
            raise ApiError(409, "config_read_only", f"cannot write {path} ({e.strerror}); the service user needs "
                           "write access to the file and its folder, or edit it on the panel") from None
        applied = apply_running(panel, new_cfg, differs)
    log.warning("configuration changed over the API", extra={"by": who.actor, "changed": changed, "applied": applied,
                                                              "restart_required": pending})
    msg = f"{len(changed)} key(s) changed, {len(applied)} in effect now"
    if pending:
        msg += f"; restart the panel for {', '.join(pending)}"
    return ConfigUpdate(message=msg, changed=changed, applied=applied, restart_required=pending, dry_run=False)
