"""Documents generated from the code, so they cannot drift from it.

``docs/configuration.md`` is rendered from the pydantic models in ``panel/platform/_config.py`` (and the
secrets model), ``docs/events.md`` from ``panel/events.EVENT_MODELS``, ``docs/openapi.json``
from the API app, and the board-independent sections of ``config/profiles/*.toml`` are copied from
``config/panel.example.toml``. Run ``scripts/gen-docs`` (``python -m panel.docgen``) after changing any of
them; ``python -m panel.docgen --check`` (and tests/test_docs.py) fail while a file is stale.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tomllib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .errors import ConfigError
from .platform import (
    BOARD_TO_BCM,
    BOOT_PULLED_UP,
    FIXED_PULLUP_PINS,
    RESERVED_PINS,
    SLUG_PATTERN,
    Config,
    declared_apply,
    parse_config,
)

ROOT = Path(__file__).resolve().parent.parent
GENERATED_NOTE = "Generated from {source} by `scripts/gen-docs`; do not edit by hand."

# ---------------------------------------------------------------------------------------------
# Type introspection shared by both references


def _strip(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``/``Annotated``, whether ``None`` was allowed)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _strip(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            inner, inner_opt = _strip(args[0])
            return inner, optional or inner_opt
        return typing.Union[tuple(args)], optional  # noqa: UP007 - built from a runtime tuple; no | spelling
    return annotation, False


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _list_item(tp: Any) -> Any | None:
    if typing.get_origin(tp) in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        return _strip(args[0])[0] if args else Any
    return None


_SCALARS = {int: "integer", float: "number", bool: "boolean", str: "string", Path: "path"}


def _doc(model: type[BaseModel]) -> str:
    """The class's own docstring as one markdown paragraph (reST ``code`` becomes `code`)."""
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(line.strip() for line in doc.strip().splitlines() if line.strip()).replace("``", "`")


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _literal(values: tuple[Any, ...]) -> str:
    return ", ".join(f"`{json.dumps(v)}`" for v in values)


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounds(field: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in field.metadata:
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            value = getattr(m, attr, None)
            if value is not None:
                out[attr] = value
    return out


def _unit(field: FieldInfo) -> str | None:
    extra = field.json_schema_extra
    return extra.get("unit") if isinstance(extra, dict) else None  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Configuration reference


@dataclass
class Section:
    path: str            # e.g. "door.relays", "buttons[].unit"
    header: str          # how it appears in TOML
    model: type[BaseModel]
    field: FieldInfo | None
    array: bool


def _sections(model: type[BaseModel], prefix: str = "", in_array: bool = False) -> Iterator[Section]:
    for name, field in model.model_fields.items():
        tp, _ = _strip(field.annotation)
        item = _list_item(tp)
        path = f"{prefix}.{name}" if prefix else name
        if _is_model(tp):
            header = f"`{name}` table in each `[[{prefix.removesuffix('[]')}]]`" if in_array else f"`[{path}]`"
            yield Section(path, header, tp, field, False)
            yield from _sections(tp, path, in_array)
        elif item is not None and _is_model(item):
            header = f"`{name}` tables in each `[[{prefix.removesuffix('[]')}]]`" if in_array else f"`[[{path}]]`"
            yield Section(path, header, item, field, True)
            yield from _sections(item, f"{path}[]", True)


def _config_type(name: str, field: FieldInfo) -> str:
    if name == "pin":
        return "pin"
    tp, _ = _strip(field.annotation)
    item = _list_item(tp)
    if typing.get_origin(tp) is Literal:
        return "string" if all(isinstance(v, str) for v in typing.get_args(tp)) else "value"
    if _is_model(tp):
        return "table"
    if item is not None:
        return "array of tables" if _is_model(item) else f"array of {_SCALARS.get(item, 'values')}s"
    return _SCALARS.get(tp, str(tp))


def _config_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "defaults below"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, (int, float)):
        return f"`{_num(value)}`"
    if isinstance(value, (str, Path)):
        return f"`{json.dumps(str(value))}`"
    if isinstance(value, list) and not value:
        return "none"
    return f"`{value!r}`"


def _config_allowed(name: str, field: FieldInfo) -> str:
    if name == "pin":
        return "see [Pins](#pins)"
    tp, _ = _strip(field.annotation)
    if typing.get_origin(tp) is Literal:
        return _literal(typing.get_args(tp))
    b = _bounds(field)
    unit = _unit(field)
    suffix = f" {unit}" if unit else ""
    lo = b.get("ge", b.get("gt"))
    hi = b.get("le", b.get("lt"))
    parts: list[str] = []
    if _list_item(tp) is not None:
        if "min_length" in b:
            parts.append(f"at least {b['min_length']} entr{'y' if b['min_length'] == 1 else 'ies'}")
    elif lo is not None and hi is not None:
        parts.append(f"{_num(lo)} to {_num(hi)}{suffix}")
    elif lo is not None:
        parts.append(f"at least {_num(lo)}{suffix}")
    elif hi is not None:
        parts.append(f"at most {_num(hi)}{suffix}")
    elif unit:
        parts.append(unit)
    if b.get("pattern") == SLUG_PATTERN:
        parts.append("lower-case letters, digits, `-`, `_`; 1 to 64, starting with a letter or digit")
    elif "pattern" in b:
        parts.append(f"matches `{b['pattern']}`")
    elif _list_item(tp) is None and "max_length" in b:
        parts.append(f"{b.get('min_length', 0)} to {b['max_length']} characters")
    elif _list_item(tp) is None and "min_length" in b:
        parts.append(f"at least {b['min_length']} characters")
    if tp is bool:
        parts.append("`true`, `false`")
    return "; ".join(parts)


APPLY_WORDS = {"live": "live", "restart": "restart", "local-only": "**local only**"}


def _config_apply(model: type[BaseModel], name: str, path: str, table: bool) -> str:
    """When a change to the key takes effect; a table without its own classification: per key."""
    if table and name not in getattr(model, "APPLY", {}):
        return "per key"
    apply = declared_apply(path)
    return APPLY_WORDS[apply] if apply is not None else "?"


def _key_table(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | type | default | allowed | description | changes |", "|---|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        tp, _ = _strip(field.annotation)
        item = _list_item(tp)
        desc = field.description or ""
        path = f"{prefix}.{name}" if prefix else name
        table = _is_model(tp) or (item is not None and _is_model(item))
        if table:
            sub = path + ("[]" if item is not None else "")
            desc = (desc + "; " if desc else "") + f"keys: [{sub}](#{_anchor(sub)})"
        rows.append(f"| `{name}` | {_config_type(name, field)} | {_config_default(field)} | "
                    f"{_cell(_config_allowed(name, field))} | {_cell(desc)} | "
                    f"{_config_apply(model, name, path, table)} |")
    return rows


def _anchor(path: str) -> str:
    return "cfg-" + path.replace("[]", "").replace(".", "-").replace("_", "-")


# Functions a pin loses when the interface is enabled (raspi-config, /boot/firmware/config.txt).
ALT_FUNCTIONS = {
    2: "I2C1 SDA", 3: "I2C1 SCL", 4: "1-Wire (when enabled)", 7: "SPI0 CE1", 8: "SPI0 CE0",
    9: "SPI0 MISO", 10: "SPI0 MOSI", 11: "SPI0 SCLK", 14: "UART TX", 15: "UART RX",
    12: "PWM0", 13: "PWM1", 18: "I2S/PCM CLK (audio HATs)", 19: "I2S/PCM FS (audio HATs)",
    20: "I2S/PCM DIN (audio HATs)", 21: "I2S/PCM DOUT (audio HATs)",
}


def _pin_section() -> list[str]:
    reserved = ", ".join(f"GPIO{p} ({what})" for p, what in sorted(RESERVED_PINS.items()))
    fixed = ", ".join(f"GPIO{p}" for p in sorted(FIXED_PULLUP_PINS))
    up = sorted(BOOT_PULLED_UP)
    lines = [
        '<a id="pins"></a>',
        "## Pins",
        "",
        "Every `pin` key takes a BCM GPIO number (`17`), a name (`\"GPIO17\"`, `\"BCM17\"`) or a header "
        "position (`\"BOARD11\"`). Valid: GPIO0 to GPIO27. Refused everywhere: " + reserved + ". "
        "Every device needs its own pin.",
        "",
        "Relay pins are also checked against the level the pin has at power-on, before any software runs "
        f"(GPIO{up[0]}-{up[-1]} pulled up, GPIO{up[-1] + 1}-27 pulled down; {fixed} have fixed pull-ups):",
        "",
        "- `active = \"high\"` relay: a pin pulled down at power-on.",
        "- `active = \"low\"` relay: a pin pulled up at power-on (not " + fixed + ").",
        "- Any other pin only with an external resistor that holds the coil off while the Pi boots, and "
        "`boot_pull_verified = true`. See [hardware/README.md](../hardware/README.md).",
        "",
        "| header pin | BCM | at power-on | relay active-high | relay active-low | also used by |",
        "|---|---|---|---|---|---|",
    ]
    for board, bcm in sorted(BOARD_TO_BCM.items()):
        if bcm in RESERVED_PINS:
            pull, high, low = "HAT EEPROM", "reserved", "reserved"
        elif bcm in FIXED_PULLUP_PINS:
            pull, high, low = "fixed 1.8 kΩ pull-up", "no", "no"
        elif bcm in BOOT_PULLED_UP:
            pull, high, low = "pulled up", "needs external pull-down", "yes"
        else:
            pull, high, low = "pulled down", "yes", "needs external pull-up"
        lines.append(f"| {board} | GPIO{bcm} | {pull} | {high} | {low} | {ALT_FUNCTIONS.get(bcm, '')} |")
    return lines


def _example_errors() -> list[str]:
    """Real validator output for a few typical mistakes in the shipped example."""
    example = ROOT / "config" / "panel.example.toml"
    try:
        data = tomllib.loads(example.read_text(encoding="utf-8"))
    except OSError:
        return []
    bad = copy.deepcopy(data)
    bad["door"]["relays"][0]["hold_s"] = -1
    bad["door"]["relays"][0]["lock"] = "magnetic"
    bad["buttons"][0]["pinn"] = 17
    bad["door"]["relays"][0]["pin"] = 5
    try:
        parse_config(bad, source="/etc/panel/panel.toml")
    except ConfigError as e:
        problems = e.problems
    else:  # pragma: no cover - the validator accepting these is a bug the docs test will show
        problems = ["(the validator accepted this config)"]
    return [
        "## What a mistake looks like",
        "",
        "`panel config check` names every bad key (dotted path), the bad value and what is allowed, and exits 3. "
        "Output for the example with four mistakes (`hold_s = -1`, `lock = \"magnetic\"`, a misspelt `pin`, "
        "an active-high relay on GPIO5):",
        "",
        "```text",
        f"config /etc/panel/panel.toml: {len(problems)} problem(s):",
        *[f"  {p}" for p in problems],
        "```",
    ]


def _secrets_section() -> list[str]:
    from .auth import ENV_PREFIX, Secrets

    lines = [
        '<a id="secrets-file"></a>',
        "## Secrets file",
        "",
        "Secrets never go in the main config. They live in the TOML file named by `secrets.file` (mode 0600, "
        "owned by the service user; the panel refuses to start otherwise) or in environment variables, "
        "which win over the file. A secret that is not set leaves its feature off; there are no defaults. "
        "A panel outside simulation refuses to start with a secret that is published (the examples in this "
        "project's README, docs and config files, and the OSDP default key: `panel/auth/_published.py`), "
        "naming the key: make every secret of your own.",
        "",
        "| key | environment variable | type | allowed | description |",
        "|---|---|---|---|---|",
    ]
    for name, field in Secrets.model_fields.items():
        tp, _ = _strip(field.annotation)
        item = _list_item(tp)
        kind = f"array of {_SCALARS.get(item, 'values')}s" if item is not None else _SCALARS.get(tp, "value")
        env = f"`{ENV_PREFIX}{name.upper()}`" + (" (comma-separated)" if item is not None else "")
        lines.append(f"| `{name}` | {env} | {kind} | {_cell(_config_allowed(name, field))} | "
                     f"{_cell(field.description or '')} |")
    return lines


def render_configuration() -> str:
    out: list[str] = [
        "# Configuration reference",
        "",
        GENERATED_NOTE.format(source="`panel/platform/_config.py` and `panel/auth/_secrets.py`"),
        "",
        "The panel reads one TOML file: `panel run --config /etc/panel/panel.toml`. Start from "
        "[config/panel.example.toml](../config/panel.example.toml) or your board's profile in "
        "[config/profiles/](../config/profiles/), then run `panel config check PATH`.",
        "",
        "- Unknown keys are errors, never ignored.",
        "- Relative paths are relative to the config file's folder.",
        "- Times are in the unit named in the table (seconds unless it says otherwise).",
        "- The *changes* column says what a change to the key through `PATCH /api/v1/config` (or the installer "
        "page) does: **live** takes effect at once in every part of the panel that uses it; **restart** is saved "
        "and takes effect at the next start (`restart_required` lists it); **local only** is refused over the API "
        "(`403 config_local_only`, nothing changed) and changed only by editing the file on the panel itself: GPIO "
        "wiring and levels, the tamper switch, door contact and exit button, identities and broker, signing "
        "requirements, URLs, storage and history bounds, and anything that widens access. A local-only table "
        "makes every key in it local only; adding or removing a list entry (a button, a relay, a light) is wiring, "
        "so local only too.",
        "",
        "## Sections",
        "",
        "| section | required | description |",
        "|---|---|---|",
    ]
    for name, field in Config.model_fields.items():
        tp, _ = _strip(field.annotation)
        item = _list_item(tp)
        header = f"`[[{name}]]`" if item is not None else f"`[{name}]`"
        required = "yes" if field.is_required() else "no"
        desc = _sentence(field.description or _doc(tp if item is None else item))
        out.append(f"| [{header}](#{_anchor(name)}) | {required} | {_cell(desc)} |")
    out.append("")
    for sec in _sections(Config):
        out += [f'<a id="{_anchor(sec.path)}"></a>', f"### {sec.header}", ""]
        intro = [_sentence(t) for t in ((sec.field.description if sec.field else None), _doc(sec.model)) if t]
        if sec.field is not None and not sec.field.is_required() and sec.field.default is None:
            intro.append("Optional: leave the table out if there is none.")
        if intro:
            out += [" ".join(intro), ""]
        out += _key_table(sec.model, sec.path)
        out.append("")
    out += _pin_section()
    out.append("")
    out += _secrets_section()
    out.append("")
    out += _example_errors()
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Event catalogue


def _event_type(tp_raw: Any) -> str:
    tp, optional = _strip(tp_raw)
    item = _list_item(tp)
    if typing.get_origin(tp) is Literal:
        text = "one of " + _literal(typing.get_args(tp))
    elif _is_model(tp):
        text = "object"
    elif item is not None:
        text = f"array of {_event_type(item)}"
    elif typing.get_origin(tp) is dict or tp is dict:
        text = "object"
    elif typing.get_origin(tp) in (typing.Union, types.UnionType):
        text = " or ".join(_event_type(a) for a in typing.get_args(tp))
    else:
        text = {int: "integer", float: "number", bool: "boolean", str: "string"}.get(tp, "value")
    return text + (" or null" if optional else "")


def _event_rows(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        yield f"| `{prefix}{name}` | {_cell(_event_type(field.annotation))} | {_cell(field.description or '')} |"
        tp, _ = _strip(field.annotation)
        item = _list_item(tp)
        if _is_model(tp):
            yield from _event_rows(tp, f"{prefix}{name}.")
        elif item is not None and _is_model(item):
            yield from _event_rows(item, f"{prefix}{name}[].")


# Example values by field name, so examples read like real events. Unknown names get a value
# derived from their type; a model field's own ``examples`` always wins.
_EXAMPLE_STRINGS = {
    "access_id": "5f0c1b8e-3d3a-4c8e-9a57-2b1f4d6e7a90",
    "call_guid": "c1a9e2d4-7b3f-4e21-8f6a-0d5c3b2a1e98",
    "guid": "c1a9e2d4-7b3f-4e21-8f6a-0d5c3b2a1e98",
    "boot": "0b8e3f5a-91c2-4d7e-a6b4-3c2d1e0f9a87",
    "relay": "main",
    "actor": "backend",
    "button": "b303",
    "unit_id": "303",
    "unit_label": "303",
    "label": "303",
    "input": "button:b303",
    "version": "0.1.0",
    "reason": "SIGTERM",
    "code": "tamper_blocked",
    "message": "remote unlocks are blocked since the tamper switch tripped",
    "panel_id": "lobby-1",
}
_EXAMPLE_NUMBERS = {
    "duration_s": 5.0, "on_s": 4.2, "open_s": 31.0, "limit_s": 30.0, "active_s": 61.0,
    "since_last_release_s": 42.0, "uptime_s": 3600.0,
}


def _example_value(name: str, field: FieldInfo | None, tp_raw: Any) -> Any:
    if field is not None and field.examples:
        return field.examples[0]
    if name.endswith("_at") and str in _flat(tp_raw):
        return EXAMPLE_TIME
    if (name == "who" or name.endswith("_by")) and str in _flat(tp_raw):
        return "resident-17"
    tp, _ = _strip(tp_raw)
    item = _list_item(tp)
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)[0]
    if _is_model(tp):
        return example_data(tp)
    if item is not None:
        return [_example_value(name, None, item)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _example_value(name, None, typing.get_args(tp)[0])
    if tp is bool:
        return True
    if tp is int:
        return int(_EXAMPLE_NUMBERS.get(name, 1))
    if tp is float:
        return _EXAMPLE_NUMBERS.get(name, 1.5)
    if tp is str:
        return _EXAMPLE_STRINGS.get(name, name.replace("_", "-"))
    if typing.get_origin(tp) is dict or tp is dict:
        return {}
    return None


EXAMPLE_TIME = "2025-03-14T09:26:53.589Z"


def _flat(tp_raw: Any) -> list[Any]:
    tp, _ = _strip(tp_raw)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return list(typing.get_args(tp))
    return [tp]


def example_data(model: type[BaseModel]) -> dict[str, Any]:
    """A valid instance of ``model`` as JSON data.

    The model's own example wins (``model_config = ConfigDict(json_schema_extra={"examples": [...]})``);
    otherwise every field is filled in from its name and type.
    """
    extra = model.model_config.get("json_schema_extra")
    if isinstance(extra, dict) and extra.get("examples"):
        data = cast(list[Any], extra["examples"])[0]
    else:
        data = {name: _example_value(name, field, field.annotation) for name, field in model.model_fields.items()}
    return model.model_validate(data).model_dump(mode="json")


def render_events() -> str:
    from .events import EVENT_MODELS

    out = [
        "# Event catalogue",
        "",
        GENERATED_NOTE.format(source="`panel/events.py` (`EVENT_MODELS`)"),
        "",
        "Every event is committed to the panel's database (SQLite, `synchronous=FULL`) before anything acts "
        "on it, then delivered to the backend from the outbox and published to in-process subscribers. "
        "Each stored event has a stable `id` (UUID, the de-duplication key), its `type`, the wall-clock "
        "`time` it was recorded, and the `data` described here. Every field is present in `data` (`null` "
        "when it does not apply), and `data` also carries `panel: {id, name}`, added by the journal. "
        "How events travel: [webhooks.md](webhooks.md), [mqtt.md](mqtt.md).",
        "",
        "| type | description |",
        "|---|---|",
    ]
    for type_, model in EVENT_MODELS.items():
        first = _doc(model).split(". ")[0].rstrip(".")
        out.append(f"| [`{type_}`](#{type_}) | {_cell(first)} |")
    out.append("")
    for type_, model in EVENT_MODELS.items():
        out += [f'<a id="{type_}"></a>', f"## {type_}", ""]
        doc = _doc(model)
        if doc:
            out += [doc, ""]
        out += ["| field | type | description |", "|---|---|---|"]
        out += list(_event_rows(model))
        out.append("| `panel` | object | `{id, name}` of this panel, added by the journal |")
        example = example_data(model)
        example["panel"] = {"id": "lobby-1", "name": "Main entrance"}
        out += ["", "Example `data`:", "", "```json", json.dumps(example, indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# OpenAPI


def render_openapi() -> str:
    from .api.app import openapi_document

    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Board profiles: the board's own sections are written by hand; everything else is copied from the
# example, so a section added to the example reaches every profile with the next scripts/gen-docs.

BOARD_SECTIONS = frozenset({"panel", "gpio", "buttons", "door", "tamper", "lights"})
PROFILE_MARKER = ("# ---- Everything below is copied from config/panel.example.toml by scripts/gen-docs. "
                  "Edit the example, not this. ----")
_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_-]+)")


def toml_sections(text: str) -> list[tuple[str, str]]:
    """Split TOML text into (top-level key, text) blocks at table headers.

    A comment paragraph directly above a header belongs to that header's block; text before the first
    header is returned under the key "".
    """
    blocks: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            prev = blocks[-1][1]
            lead: list[str] = []
            while prev and prev[-1].startswith("#"):
                lead.insert(0, prev.pop())
            blocks.append((m.group(1), [*lead, line]))
        else:
            blocks[-1][1].append(line)
    return [(key, "\n".join(lines).strip("\n")) for key, lines in blocks if "\n".join(lines).strip()]


def render_profile(profile: Path, example: Path | None = None) -> str:
    example = example or ROOT / "config" / "panel.example.toml"
    text = profile.read_text(encoding="utf-8")
    if PROFILE_MARKER not in text:
        raise ValueError(f"{profile} lacks the line {PROFILE_MARKER!r}; put it after the board's own sections")
    head = text.split(PROFILE_MARKER, 1)[0].rstrip("\n")
    shared = [block for key, block in toml_sections(example.read_text(encoding="utf-8"))
              if key and key not in BOARD_SECTIONS]
    return "\n\n".join([head, PROFILE_MARKER, *shared]) + "\n"


def _profile_renderer(path: Path) -> Any:
    return lambda: render_profile(path)


# ---------------------------------------------------------------------------------------------

GENERATED: dict[str, Any] = {
    "docs/configuration.md": render_configuration,
    "docs/events.md": render_events,
    "docs/openapi.json": render_openapi,
    **{f"config/profiles/{p.name}": _profile_renderer(p) for p in sorted((ROOT / "config" / "profiles").glob("*.toml"))},
}


def render_all() -> dict[str, str]:
    return {rel: fn() for rel, fn in GENERATED.items()}


def stale(root: Path = ROOT) -> list[str]:
    """The generated files whose content on disk differs from what the code generates now."""
    out = []
    for rel, text in render_all().items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gen-docs", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date; write nothing")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = p.parse_args(argv)
    if args.check:
        bad = stale(args.root)
        for rel in bad:
            print(f"{rel} is out of date; run scripts/gen-docs", file=sys.stderr)
        return 1 if bad else 0
    for rel, text in render_all().items():
        path = args.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")
        else:
            print(f"{rel} up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
