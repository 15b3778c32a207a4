"""The panel's configuration: one TOML file validated into typed, frozen models.

Validation is strict (unknown keys are errors) and every problem is reported as one line naming the
dotted path of the bad key, the bad value and what would be right, e.g.
``door.relays[0].hold_s: -1 is not allowed; expected a number of seconds between 0.5 and 60``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from .errors import ConfigError

Level = Literal["high", "low"]
Pull = Literal["up", "down", "none"]

# The 40-pin header's physical numbering mapped to BCM GPIO numbers.
BOARD_TO_BCM: dict[int, int] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}
# At power-on, before any software runs, the SoC pulls GPIO0-8 up and GPIO9-27 down.
BOOT_PULLED_UP = frozenset(range(0, 9))
# GPIO0/1 carry the HAT ID EEPROM bus; GPIO2/3 have fixed 1.8 kOhm pull-ups on the board.
RESERVED_PINS = {0: "the HAT ID EEPROM (ID_SD)", 1: "the HAT ID EEPROM (ID_SC)"}
FIXED_PULLUP_PINS = frozenset({2, 3})

_PIN_RE = re.compile(r"^(?:(?P<bcm>GPIO|BCM)(?P<n>\d+)|(?:BOARD|J8:)(?P<board>\d+))$", re.IGNORECASE)
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _seconds(lo: float, hi: float, default: float, doc: str) -> Any:
    return Field(default, ge=lo, le=hi, description=doc, json_schema_extra={"unit": "seconds"})


def parse_pin(value: Any) -> int:
    """Accept a BCM number (17), ``"GPIO17"``/``"BCM17"`` or a header position ``"BOARD11"``."""
    if isinstance(value, bool):
        raise PydanticCustomError("pin", "expected a BCM GPIO number 0-27 or a name like \"GPIO17\" or \"BOARD11\"")
    if isinstance(value, int):
        bcm = value
    elif isinstance(value, str) and (m := _PIN_RE.match(value.strip())):
        if m.group("board") is not None:
            board = int(m.group("board"))
            if board not in BOARD_TO_BCM:
                raise PydanticCustomError(
                    "pin", "header pin {board} is power, ground or not a GPIO; expected one of {pins}",
                    {"board": board, "pins": ", ".join(map(str, sorted(BOARD_TO_BCM)))},
                )
            bcm = BOARD_TO_BCM[board]
        else:
            bcm = int(m.group("n"))
    else:
        raise PydanticCustomError("pin", "expected a BCM GPIO number 0-27 or a name like \"GPIO17\" or \"BOARD11\"")
    if not 0 <= bcm <= 27:
        raise PydanticCustomError("pin", "expected a BCM GPIO number between 0 and 27")
    if bcm in RESERVED_PINS:
        raise PydanticCustomError(
            "pin", "GPIO{bcm} is reserved for {what}; choose another pin",
            {"bcm": bcm, "what": RESERVED_PINS[bcm]},
        )
    return bcm


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UnitConfig(Model):
    id: str = Field(min_length=1, max_length=64, description="the unit's id in the backend")
    label: str = Field(min_length=1, max_length=64, description="what the visitor and the resident see, e.g. \"303\"")


class InputConfig(Model):
    pin: int = Field(description="BCM GPIO number or \"GPIOn\"/\"BOARDn\"")
    pull: Pull = Field("up", description="the Pi's internal pull resistor")
    active: Level = Field("low", description="the electrical level that means pressed/open/tampered")
    debounce_ms: int = Field(30, ge=0, le=1000, description="how long a level must be steady to count",
                             json_schema_extra={"unit": "milliseconds"})
    stuck_s: float | None = Field(None, ge=1, le=86_400, json_schema_extra={"unit": "seconds"},
                                  description="active longer than this is reported stuck and ignored")

    _pin = field_validator("pin", mode="before")(classmethod(lambda cls, v: parse_pin(v)))


class ButtonConfig(InputConfig):
    id: str = Field(pattern=_SLUG, description="a short name for the button, e.g. \"b303\"")
    unit: UnitConfig
    stuck_s: float | None = Field(60.0, ge=1, le=86_400, json_schema_extra={"unit": "seconds"},
                                  description="held longer than this is reported stuck and ignored")


class RelayConfig(Model):
    id: str = Field(pattern=_SLUG, description="a short name for the relay, e.g. \"main\"")
    active: Level = Field("high", description="the level that energises the relay coil")
    pin: int = Field(description="BCM GPIO number or \"GPIOn\"/\"BOARDn\"")
    mode: Literal["monostable", "bistable"] = Field(
        "monostable", description="monostable: pulse for hold_s; bistable: hold until released")
    hold_s: float = _seconds(0.5, 60, 5.0, "how long a monostable release keeps the lock open")
    max_on_s: float = _seconds(1, 43_200, 15.0, "hard limit on any energised period, whatever asked")
    lock: Literal["fail-secure", "fail-safe"] = Field(
        "fail-secure", description="fail-secure strike on the NO contact; fail-safe maglock on the NC contact")
    boot_pull_verified: bool = Field(
        False, description="true once an external resistor holds the coil off while the Pi boots")

    @field_validator("pin", mode="before")
    @classmethod
    def _pin_is_safe(cls, v: Any, info: Any) -> int:
        bcm = parse_pin(v)
        if info.data.get("boot_pull_verified"):
            return bcm
        active = info.data.get("active", "high")
        if bcm in FIXED_PULLUP_PINS:
            raise PydanticCustomError(
                "pin", "GPIO{bcm} has a fixed pull-up on the board and would energise an active-{a} relay "
                "while the Pi boots; choose a pin from GPIO9-27", {"bcm": bcm, "a": active})
        if active == "high" and bcm in BOOT_PULLED_UP:
            raise PydanticCustomError(
                "pin", "GPIO{bcm} is pulled up at power-on, so an active-high relay on it would energise "
                "while the Pi boots; choose a pin from GPIO9-27 (pulled down at power-on), or fit an "
                "external pull-down and set boot_pull_verified = true", {"bcm": bcm})
        if active == "low" and bcm not in BOOT_PULLED_UP:
            raise PydanticCustomError(
                "pin", "GPIO{bcm} is pulled down at power-on, so an active-low relay on it would energise "
                "while the Pi boots; choose a pin from GPIO4-8 (pulled up at power-on), or fit an "
                "external pull-up and set boot_pull_verified = true", {"bcm": bcm})
        return bcm


class DoorConfig(Model):
    relays: list[RelayConfig] = Field(min_length=1, description="the first relay releases the door")
    contact: InputConfig | None = Field(None, description="door contact; active means open")
    exit_button: InputConfig | None = Field(None, description="request-to-exit button inside")
    held_open_s: float = _seconds(3, 3600, 30.0, "door open longer than this raises door.held_open")
    open_grace_s: float = _seconds(0, 60, 3.0, "an opening this soon after a release still counts as authorised")
    relock_on_open: bool = Field(True, description="de-energise the relay as soon as the door opens")
    exit_button_overrides_tamper: bool = Field(
        True, description="the exit button still opens the door while a tamper block is active")


class LightConfig(Model):
    id: str = Field(pattern=_SLUG)
    pin: int
    active: Level = "high"
    role: Literal["status", "call", "door"] = Field(
        description="status: lit while running; call: blinks while ringing; door: lit while released")

    _pin = field_validator("pin", mode="before")(classmethod(lambda cls, v: parse_pin(v)))


class PanelInfo(Model):
    id: str = Field(pattern=_SLUG, description="unique per panel; also its MQTT client id")
    name: str = Field(min_length=1, max_length=64, description="what the backend shows, e.g. \"Main entrance\"")
    board: str | None = Field(None, description="board revision, e.g. \"pi4-relayhat-v1\" (see hardware/)")


class GpioConfig(Model):
    pin_factory: Literal["lgpio", "rpigpio", "native", "mock"] = Field(
        "lgpio", description="lgpio on a Pi; mock for simulation (panel run --simulate forces it)")


class StorageConfig(Model):
    dir: Path = Field(Path("/var/lib/panel"), description="database and snapshots live here")
    outbox_max_events: int = Field(100_000, ge=100, le=10_000_000,
                                   description="undelivered events kept before the oldest heartbeats are shed")
    history_max_rows: int = Field(50_000, ge=100, le=10_000_000,
                                  description="rows kept in the call log and in the access log each")


class ApiConfig(Model):
    listen: str = Field("127.0.0.1:8080", description="host:port of the local HTTP API")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise PydanticCustomError("listen", "expected host:port, e.g. \"0.0.0.0:8443\" or \"127.0.0.1:8080\"")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class SecretsConfig(Model):
    file: Path | None = Field(None, description="TOML file with the secrets, mode 0600, owned by the service user")


class LogConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class CallsConfig(Model):
    call_type: Literal["audio", "video"] = Field("video", description="what a press starts; audio calls can switch to video")
    ring_timeout_s: float = _seconds(5, 600, 45.0, "ringing longer than this ends the call as missed")
    max_call_s: float = _seconds(10, 7200, 300.0, "a call is ended after this long, whatever its state")
    same_button_during_call: Literal["ignore", "cancel"] = Field(
        "ignore", description="pressing the ringing unit's button again: ignore it, or cancel the call")
    other_button_during_call: Literal["reject", "replace"] = Field(
        "reject", description="another unit's button during a call: refuse it (busy), or end the call and ring the new unit")


class WebhooksConfig(Model):
    url: str | None = Field(None, description="the backend's webhook endpoint; https:// unless on loopback")
    timeout_s: float = _seconds(1, 60, 10.0, "per-request timeout")
    max_backoff_s: float = _seconds(1, 3600, 300.0, "retries back off exponentially up to this interval")
    heartbeat_s: float = _seconds(10, 86_400, 300.0, "interval of panel.heartbeat events")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = re.match(r"^(https?)://([^/:]+|\[[^\]]+\])(:\d+)?(/.*)?$", v)
        if not m:
            raise PydanticCustomError("url", "expected an URL like \"https://backend.example/hooks/panel\"")
        if m.group(1) == "http" and m.group(2) not in ("127.0.0.1", "localhost", "[::1]"):
            raise PydanticCustomError("url", "webhooks carry call and door events; use https:// (plain http:// "
                                      "is allowed on loopback only)")
        return v


class MqttConfig(Model):
    host: str | None = Field(None, description="the backend's MQTT broker; unset disables the control channel")
    port: int = Field(8883, ge=1, le=65535)
    tls: bool = Field(True, description="TLS with server verification; plain TCP only for loopback tests")
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (per-device identity)")
    key_file: Path | None = Field(None, description="client key, mode 0600")
    username: str | None = Field(None, description="per-device user name (password in the secrets file)")
    client_id: str | None = Field(None, description="defaults to panel.id")
    topic_prefix: str = Field("panels", description="topics are <topic_prefix>/<panel.id>/...")
    keepalive_s: int = Field(30, ge=5, le=3600, json_schema_extra={"unit": "seconds"})
    reconnect_max_s: float = _seconds(1, 600, 60.0, "reconnect backoff cap")
    require_signed_commands: bool = Field(False, description="refuse commands without a valid signature (command_key)")
    command_max_age_s: float = _seconds(1, 3600, 30.0, "a command older than this is refused as expired")
    homeassistant_discovery: bool = Field(False, description="publish Home Assistant MQTT discovery")
    discovery_prefix: str = Field("homeassistant")


class Config(Model):
    panel: PanelInfo
    gpio: GpioConfig = GpioConfig()
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    buttons: list[ButtonConfig] = Field(min_length=1, description="call buttons, each ringing one unit")
    door: DoorConfig
    tamper: InputConfig | None = Field(None, description="housing tamper switch; active means tampered")
    lights: list[LightConfig] = []
    calls: CallsConfig = CallsConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    mqtt: MqttConfig = MqttConfig()
    secrets: SecretsConfig = SecretsConfig()
    log: LogConfig = LogConfig()

    def button(self, button_id: str) -> ButtonConfig:
        for b in self.buttons:
            if b.id == button_id:
                return b
        raise KeyError(button_id)

    def relay(self, relay_id: str) -> RelayConfig:
        for r in self.door.relays:
            if r.id == relay_id:
                return r
        raise KeyError(relay_id)


# ---------------------------------------------------------------------------------------------
# Loading and error reporting


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"file not found; copy config/panel.example.toml to {path} and edit it"], str(path))
    except OSError as e:
        raise ConfigError([f"cannot read the file ({e.strerror})"], str(path))
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text; save the file as UTF-8"], str(path))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"TOML syntax error: {e}"], str(path))
    cfg = parse_config(data, source=str(path))
    return resolve_paths(cfg, path.parent)


def resolve_paths(cfg: Config, base: Path) -> Config:
    """Relative paths in the config are relative to the config file's folder."""
    storage = cfg.storage.model_copy(update={"dir": (base / cfg.storage.dir).absolute()})
    secrets = cfg.secrets
    if secrets.file is not None and not secrets.file.is_absolute():
        secrets = secrets.model_copy(update={"file": (base / secrets.file).absolute()})
    return cfg.model_copy(update={"storage": storage, "secrets": secrets})


def parse_config(data: dict[str, Any], source: str | None = None) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_errors(e, Config), source) from None
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _cross_checks(cfg: Config) -> list[str]:
    problems: list[str] = []
    pins: dict[int, str] = {}

    def claim(pin: int, where: str) -> None:
        if pin in pins:
            problems.append(f"{where}: GPIO{pin} is already used by {pins[pin]}; every device needs its own pin")
        else:
            pins[pin] = where

    seen_ids: dict[str, str] = {}
    for i, b in enumerate(cfg.buttons):
        claim(b.pin, f"buttons[{i}].pin")
        if b.id in seen_ids:
            problems.append(f"buttons[{i}].id: {b.id!r} is already used by {seen_ids[b.id]}; ids must be unique")
        else:
            seen_ids[b.id] = f"buttons[{i}]"
    relay_ids: set[str] = set()
    for i, r in enumerate(cfg.door.relays):
        claim(r.pin, f"door.relays[{i}].pin")
        if r.id in relay_ids:
            problems.append(f"door.relays[{i}].id: {r.id!r} is already used; relay ids must be unique")
        relay_ids.add(r.id)
        if r.max_on_s < r.hold_s:
            problems.append(f"door.relays[{i}].max_on_s: {_fmt(r.max_on_s)} is not allowed; expected at least "
                            f"hold_s ({_fmt(r.hold_s)}), the limit must not cut every normal release short")
    for name in ("contact", "exit_button"):
        inp = getattr(cfg.door, name)
        if inp is not None:
            claim(inp.pin, f"door.{name}.pin")
    if cfg.tamper is not None:
        claim(cfg.tamper.pin, "tamper.pin")
    light_ids: set[str] = set()
    for i, light in enumerate(cfg.lights):
        claim(light.pin, f"lights[{i}].pin")
        if light.id in light_ids:
            problems.append(f"lights[{i}].id: {light.id!r} is already used; light ids must be unique")
        light_ids.add(light.id)
    return problems


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated/list."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(annotation) for t in _unwrap(a)]
    if origin in (list, tuple):
        return [t for a in typing.get_args(annotation) for t in _unwrap(a)]
    return [annotation]


def _locate(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Walk ``loc`` through the model tree: the model holding the last key, and that key's field."""
    model: type[BaseModel] | None = root
    field: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return model, None
        field = model.model_fields[part]
        parent = model
        model = next((t for t in _unwrap(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if part == loc[-1]:
            return parent, field
    return model, field


def _bounds(field: FieldInfo) -> tuple[Any, Any]:
    lo = hi = None
    for m in field.metadata:
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        lo = getattr(m, "gt", None) if getattr(m, "gt", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
        hi = getattr(m, "lt", None) if getattr(m, "lt", None) is not None else hi
    return lo, hi


def _expected_range(field: FieldInfo | None, ctx: dict[str, Any]) -> str:
    extra = (field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {})
    unit = extra.get("unit")
    kind = f"a number of {unit}" if unit else "a number"
    lo, hi = _bounds(field) if field is not None else (None, None)
    if lo is None and hi is None:
        lo, hi = ctx.get("ge", ctx.get("gt")), ctx.get("le", ctx.get("lt"))
    if lo is not None and hi is not None:
        return f"expected {kind} between {_fmt(lo)} and {_fmt(hi)}"
    if lo is not None:
        return f"expected {kind} of at least {_fmt(lo)}"
    return f"expected {kind} of at most {_fmt(hi)}"


_TYPE_WORDS = {
    "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a quoted string", "list_type": "a list ([...])",
    "model_type": "a table", "dict_type": "a table", "model_attributes_type": "a table",
    "path_type": "a path string",
}


def format_validation_errors(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # A union (e.g. ``InputConfig | None``) reports the member type in loc; drop those tags.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()))
        path = _dotted(loc)
        kind = err["type"]
        ctx = err.get("ctx") or {}
        value = err.get("input")
        parent, field = _locate(root, loc)
        if kind == "missing":
            doc = f" ({field.description})" if field is not None and field.description else ""
            lines.append(f"{path}: is required{doc}")
        elif kind == "extra_forbidden":
            allowed = sorted(parent.model_fields) if parent is not None else []
            key = str(loc[-1])
            hint = difflib.get_close_matches(key, allowed, n=1)
            did = f"; did you mean {hint[0]!r}?" if hint else ""
            lines.append(f"{path}: unknown key; expected one of {', '.join(allowed)}{did}")
        elif kind == "literal_error":
            lines.append(f"{path}: {_fmt(value)} is not allowed; expected one of {ctx.get('expected')}")
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            lines.append(f"{path}: {_fmt(value)} is not allowed; {_expected_range(field, ctx)}")
        elif kind == "too_short":
            lines.append(f"{path}: needs at least {ctx.get('min_length')} entr{'y' if ctx.get('min_length') == 1 else 'ies'}")
        elif kind in ("string_too_short", "string_too_long"):
            lines.append(f"{path}: {_fmt(value)} is not allowed; expected between "
                         f"{_bounds_len(field)} characters")
        elif kind == "string_pattern_mismatch":
            lines.append(f"{path}: {_fmt(value)} is not allowed; expected lower-case letters, digits, "
                         "'-' or '_' (at most 64, starting with a letter or digit)")
        elif kind in _TYPE_WORDS:
            lines.append(f"{path}: {_fmt(value)} is not allowed; expected {_TYPE_WORDS[kind]}")
        else:
            lines.append(f"{path}: {_fmt(value)} is not allowed; {err['msg']}")
    return lines


def _bounds_len(field: FieldInfo | None) -> str:
    lo = hi = None
    for m in (field.metadata if field is not None else []):
        lo = getattr(m, "min_length", lo)
        hi = getattr(m, "max_length", hi)
    return f"{lo or 0} and {hi or 'any number of'}"
