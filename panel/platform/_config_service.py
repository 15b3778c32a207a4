"""The one configuration in force, and the only way to change it while the panel runs.

A change names keys by their dotted path (``door.relays[0].hold_s``), as ``panel config check``
reports them. ``update`` edits the TOML file's text (comments and layout kept) and validates the whole
resulting file exactly as at start; then it refuses the change if any changed key is local-only (see
``key_apply``: wiring, identities, security, anything that widens access). Only then is the file
replaced (crash-safe) and the live keys put into effect: each component that declared the keys it
takes (``subscribe``) is handed the new ``Config``. Restart keys are saved and reported as waiting for
a restart; the config in force keeps their old values until then.

Components never keep a copy of a live value: they read ``ConfigService.current`` or keep what their
``reconfigure`` hook was last handed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from ..errors import ConfigChangeRefused, ConfigError
from ._config import (
    Config,
    declared_apply,
    key_apply,
    load_config,
    parse_config,
    resolve_paths,
)
from ._files import write_atomic

log = logging.getLogger(__name__)

Reconfigure = Callable[[Config], None]

MAX_CHANGES = 100
_SEG = r"[a-z_][a-z0-9_]*(?:\[\d{1,3}\])*"
_PATH_RE = re.compile(rf"^{_SEG}(?:\.{_SEG})*$")
_MISSING = object()


@dataclass(frozen=True)
class ConfigChange:
    """What an update did (or, dry run, would do)."""

    changed: list[str]  # keys whose value this update changes in the file
    applied: list[str]  # changed keys in effect now
    restart_required: list[str]  # keys the file and the running panel disagree on until a restart
    dry_run: bool = False


@dataclass
class _Subscriber:
    prefixes: tuple[str, ...]
    callback: Reconfigure
    name: str = field(default="")

    def wants(self, paths: Iterable[str]) -> bool:
        return any(_under(p, prefix) for p in paths for prefix in self.prefixes)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


# -- the file's text ---------------------------------------------------------------------------------


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
    """The dotted paths whose value differs (a list whose length changed is named itself)."""
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)]
    return sorted({k.removesuffix("[]") for k in changed})


def parse_path(path: str) -> list[str | int]:
    if not _PATH_RE.match(path):
        raise ConfigChangeRefused("invalid_request", f"set: {path!r} is not a config key path; expected e.g. "
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
                raise ConfigChangeRefused("invalid_request", f"{path}: there is no entry [{part}] in this list")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ConfigChangeRefused("invalid_request", f"{path}: {'.'.join(map(str, parts[:i]))} is not a table")
        if part not in node:
            if not create:
                return None
            node[part] = tomlkit.table() if not isinstance(parts[i + 1], int) else tomlkit.aot()
        node = node[part]
    return node


def apply_changes(text: str, sets: dict[str, Any], unsets: list[str]) -> str:
    """The file's text with ``sets`` written and ``unsets`` removed, everything else (comments) kept."""
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as e:
        raise ConfigChangeRefused("config_unreadable", f"the config file is not valid TOML ({e}); fix it on the "
                                  "panel") from None
    for path, value in sets.items():
        parts = parse_path(path)
        if value is None:
            raise ConfigChangeRefused("invalid_request", f"set.{path}: null is not a TOML value; list the key in "
                                      "unset to go back to its default")
        node = _container(doc, parts, path, create=True)
        last = parts[-1]
        if isinstance(last, int) and (not isinstance(node, list) or last >= len(node)):
            raise ConfigChangeRefused("invalid_request", f"{path}: there is no entry [{last}] in this list")
        node[last] = value
    for path in unsets:
        parts = parse_path(path)
        node = _container(doc, parts, path, create=False)
        if isinstance(node, dict) and isinstance(parts[-1], str) and parts[-1] in node:
            del node[parts[-1]]
    return tomlkit.dumps(doc)


def validate_text(text: str, path: Path) -> Config:
    """The config a file with this text would load as (the same checks as at start)."""
    try:
        data = tomlkit.parse(text).unwrap()
    except TOMLKitError as e:
        raise ConfigError([f"TOML syntax error: {e}"], str(path)) from None
    return resolve_paths(parse_config(data, source=str(path)), path.parent)


def _merge(running: Config, new: Config, paths: list[str]) -> Config:
    """``running`` with the values of ``paths`` taken from ``new``, validated as a whole."""
    data: Any = running.model_dump(mode="json")
    target: Any = new.model_dump(mode="json")
    for p in paths:
        parts = parse_path(p)
        src: Any = target
        dst: Any = data
        for part in parts[:-1]:
            src, dst = src[part], dst[part]
        dst[parts[-1]] = src[parts[-1]]
    return resolve_paths(parse_config(data), Path("/"))


# -- the service ---------------------------------------------------------------------------------------


class ConfigService:
    """Holds the config in force; ``update`` is the only way to change it at run time."""

    MAX_CHANGES = MAX_CHANGES

    def __init__(self, cfg: Config, path: Path | None = None) -> None:
        self._current = cfg
        self.path = path  # the file update() edits; None: started without one (tests, embedded)
        self._subscribers: list[_Subscriber] = []
        self._lock = asyncio.Lock()

    @property
    def current(self) -> Config:
        return self._current

    def subscribe(self, prefixes: Iterable[str], callback: Reconfigure, name: str = "") -> Callable[[], None]:
        """Call ``callback(new_config)`` after an update changes a live key under one of ``prefixes``
        (``"door"``, ``"buttons"``, ``"api"``...). Returns the unsubscribe function."""
        sub = _Subscriber(tuple(prefixes), callback, name or getattr(callback, "__qualname__", "?"))
        self._subscribers.append(sub)
        return lambda: self._subscribers.remove(sub) if sub in self._subscribers else None

    def pending(self) -> tuple[str | None, list[str]]:
        """The file's text and the keys it sets differently from the config in force (blocking: file I/O)."""
        if self.path is None:
            return None, []
        try:
            text = self.path.read_text(encoding="utf-8")
            on_disk = load_config(self.path)
        except OSError:
            return None, ["(the config file cannot be read)"]
        except ConfigError:
            return text, ["(the file on disk is invalid: run panel config check)"]
        return text, diff(self._current, on_disk)

    async def update(self, sets: dict[str, Any], unsets: list[str] | None = None, *,
                     dry_run: bool = False) -> ConfigChange:
        """Validate the whole new file, refuse local-only keys, write it, put the live keys into effect.

        Raises ``ConfigError`` (code config_invalid, every problem by key) or ``ConfigChangeRefused``;
        either way nothing was written and nothing changed in the running panel.
        """
        unsets = unsets or []
        if not sets and not unsets:
            raise ConfigChangeRefused("invalid_request", "set: give at least one key to set or unset")
        if len(sets) > MAX_CHANGES or len(unsets) > MAX_CHANGES:
            raise ConfigChangeRefused("invalid_request", f"set: at most {MAX_CHANGES} keys at once")
        for key in [*sets, *unsets]:
            parse_path(key)
        # Asked for by name (or inside a table given as the value): refused before the value is even
        # validated, so probing a local-only key teaches nothing about it. Unknown keys are left to the
        # validation, which names them with a suggestion.
        asked = [*unsets, *(k for p, v in sets.items() for k in flatten(v, p))]
        self._refuse_local_only(sorted({k.removesuffix("[]") for k in asked if declared_apply(k) == "local-only"}))
        path = self.path
        if path is None:
            raise ConfigChangeRefused("no_config_file", "this panel was started without a config file it can edit")
        async with self._lock:
            new_text, before, new_cfg = await asyncio.to_thread(self._prepare, path, sets, unsets)
            changed = diff(before, new_cfg)  # what this request changes in the file
            # e.g. a first media.* key creates the whole [media] table
            self._refuse_local_only([p for p in changed if key_apply(p) == "local-only"])
            differs = diff(self._current, new_cfg)  # what the running panel does not do yet
            live = [p for p in differs if key_apply(p) == "live"]
            pending = [p for p in differs if key_apply(p) != "live"]
            # Validated before anything is written: a live value may only fit the restart values beside it.
            running = self._running_with(new_cfg, live)
            if not changed:
                return ConfigChange([], [], pending, dry_run)
            if dry_run:
                return ConfigChange(changed, [], pending, True)
            try:
                await asyncio.to_thread(write_atomic, path, new_text.encode("utf-8"), path.stat().st_mode & 0o7777)
            except OSError as e:
                raise ConfigChangeRefused("config_read_only", f"cannot write {path} ({e.strerror}); the service user "
                                          "needs write access to the file and its folder, or edit it on the "
                                          "panel") from None
            self._current = running
            self._notify(running, live)
        return ConfigChange(changed, live, pending, False)

    @staticmethod
    def _refuse_local_only(keys: list[str]) -> None:
        if keys:
            raise ConfigChangeRefused(
                "config_local_only", f"{', '.join(keys)}: can only be changed in the config file on the panel "
                "itself (wiring, identities, security and anything that widens access are never changed "
                "remotely); nothing was changed", keys=keys)

    def _prepare(self, path: Path, sets: dict[str, Any], unsets: list[str]) -> tuple[str, Config, Config]:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigChangeRefused("config_unreadable", f"cannot read {path} ({e.strerror})") from None
        try:
            before = validate_text(text, path)
        except ConfigError:
            before = self._current  # edited by hand into an invalid state: compare with what runs
        new_text = apply_changes(text, sets, unsets)
        return new_text, before, validate_text(new_text, path)

    def _running_with(self, new: Config, live: list[str]) -> Config:
        if not live:
            return self._current
        try:
            return _merge(self._current, new, live)
        except ConfigError as e:
            raise ConfigError([f"{p} (with the changes that wait for a restart left out; restart the panel "
                               "first)" for p in e.problems]) from None

    def _notify(self, cfg: Config, live: list[str]) -> None:
        for sub in list(self._subscribers):
            if not sub.wants(live):
                continue
            try:
                sub.callback(cfg)
            except Exception:  # the file is written: one component's bug must not keep the others stale
                log.exception("%s could not take the new configuration", sub.name)
