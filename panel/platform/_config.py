"""The panel's configuration: one TOML file validated into typed, frozen models.

Validation is strict (unknown keys are errors) and every problem is reported as one line naming the
dotted path of the bad key, the bad value and what would be right, e.g.
``door.relays[0].hold_s: -1 is not allowed; expected a number of seconds between 0.5 and 60``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from ..errors import ConfigError

Level = Literal["high", "low"]
# When a changed key takes effect: at once (live), at the next start (restart), or only when edited in
# the file on the panel itself (local-only: wiring, identities, security and anything that widens access).
Apply = Literal["live", "restart", "local-only"]
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
_HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


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
    # Strict: TOML values are typed, so "yes" for a bool or "30" for a number is a mistake to report.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    # Key -> when a change to it takes effect (see ``key_apply``). A table-valued key may be left out:
    # its keys carry their own; one that is listed is a floor for every key beneath it.
    APPLY: ClassVar[dict[str, Apply]] = {}


class UnitConfig(Model):
    """The unit a button rings: a flat or an office, a ring group of residents in the backend."""

    # Which relays a unit's residents may open widens access: only in the file on the panel.
    APPLY: ClassVar[dict[str, Apply]] = {"relays": "local-only"}

    id: str = Field(min_length=1, max_length=64, description="the unit's id in the backend")
    label: str = Field(min_length=1, max_length=64, description="what the visitor and the resident see, e.g. \"303\"")
    relays: list[Annotated[str, Field(pattern=_SLUG)]] | None = Field(
        None, min_length=1, max_length=8, description="the door relays a resident who answered this unit's call may "
        "open (ids from door.relays), the first by default; absent: the door's first relay")


class InputConfig(Model):
    """A switch on a GPIO input, debounced by the panel (gpiozero's own debounce is off)."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "pin": "local-only", "pull": "local-only", "active": "local-only", "debounce_ms": "restart",
        "stuck_s": "restart",
    }

    pin: int = Field(description="BCM GPIO number or \"GPIOn\"/\"BOARDn\"")
    pull: Pull = Field("up", description="the Pi's internal pull resistor")
    active: Level = Field("low", description="the electrical level that means pressed/open/tampered")
    debounce_ms: int = Field(30, ge=0, le=1000, description="how long a level must be steady to count",
                             json_schema_extra={"unit": "milliseconds"})
    stuck_s: float | None = Field(None, ge=1, le=86_400, json_schema_extra={"unit": "seconds"},
                                  description="active longer than this is reported stuck and ignored")

    _pin = field_validator("pin", mode="before")(classmethod(lambda cls, v: parse_pin(v)))


class ButtonConfig(InputConfig):
    """A call button: a debounced press calls one unit."""

    # ``unit`` is a floor of "live" for its keys (UnitConfig's own keys are the backend's id and label); a
    # key added there that widens access (which relays a unit may open) must be listed as local-only here.
    APPLY: ClassVar[dict[str, Apply]] = {**InputConfig.APPLY, "id": "restart", "unit": "live"}

    id: str = Field(pattern=_SLUG, description="a short name for the button, e.g. \"b303\"")
    unit: UnitConfig
    # A call button's latency is the visitor's first impression (press -> ring in < 20 ms); the
    # trailing debounce still rejects any bounce, it only waits 10 ms after the last one.
    debounce_ms: int = Field(10, ge=0, le=1000, description="how long a level must be steady to count",
                             json_schema_extra={"unit": "milliseconds"})
    stuck_s: float | None = Field(60.0, ge=1, le=86_400, json_schema_extra={"unit": "seconds"},
                                  description="held longer than this is reported stuck and ignored")


class RelayConfig(Model):
    """A relay that releases a lock.

    Energised always means released, whatever the lock type: wire a fail-secure strike to the
    relay's NO contact and a fail-safe maglock to its NC contact, so a relay at rest keeps the door
    locked either way.
    """

    # Only the hold time is live: max_on_s is the safety cap on any energised period (raising it lets a
    # remote hold keep the door open longer), and the rest is wiring.
    APPLY: ClassVar[dict[str, Apply]] = {
        "id": "local-only", "active": "local-only", "boot_pull_verified": "local-only", "pin": "local-only",
        "mode": "local-only", "hold_s": "live", "max_on_s": "local-only", "lock": "local-only",
    }

    id: str = Field(pattern=_SLUG, description="a short name for the relay, e.g. \"main\"")
    active: Level = Field("high", description="the level that energises the relay coil")
    # Declared before ``pin``: pydantic validates in declaration order and the pin check reads it.
    boot_pull_verified: bool = Field(
        False, description="true once an external resistor holds the coil off while the Pi boots")
    pin: int = Field(description="BCM GPIO number or \"GPIOn\"/\"BOARDn\"")
    mode: Literal["monostable", "bistable"] = Field(
        "monostable", description="monostable: pulse for hold_s; bistable: hold until released")
    hold_s: float = _seconds(0.5, 60, 5.0, "how long a monostable release keeps the lock open")
    max_on_s: float = _seconds(1, 43_200, 15.0, "hard limit on any energised period, whatever asked")
    lock: Literal["fail-secure", "fail-safe"] = Field(
        "fail-secure", description="fail-secure strike on the NO contact; fail-safe maglock on the NC contact")

    @field_validator("pin", mode="before")
    @classmethod
    def _pin_is_safe(cls, v: Any, info: Any) -> int:
        bcm = parse_pin(v)
        active = info.data.get("active", "high")
        if bcm in FIXED_PULLUP_PINS and active == "high":
            # No external pull-down can win against the board's 1.8 kOhm pull-up, verified or not.
            raise PydanticCustomError(
                "pin", "GPIO{bcm} has a fixed 1.8 kOhm pull-up on the board, so an active-high relay on it "
                "would energise while the Pi boots; choose a pin from GPIO9-27", {"bcm": bcm})
        if info.data.get("boot_pull_verified"):
            return bcm
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
    """The door: the relays that release it, its contact, the exit button, and when to raise door events."""

    # The exit button's tamper override opens the door while the housing reports an attack: local-only.
    APPLY: ClassVar[dict[str, Apply]] = {
        "contact": "local-only", "exit_button": "local-only", "held_open_s": "live", "open_grace_s": "live",
        "relock_on_open": "live", "exit_button_overrides_tamper": "local-only",
    }

    relays: list[RelayConfig] = Field(min_length=1, description="the first relay releases the door")
    contact: InputConfig | None = Field(None, description="door contact; active means open")
    exit_button: InputConfig | None = Field(None, description="request-to-exit button inside")
    held_open_s: float = _seconds(3, 3600, 30.0, "door open longer than this raises door.held_open")
    open_grace_s: float = _seconds(0, 60, 3.0, "an opening this soon after a release still counts as authorised")
    relock_on_open: bool = Field(True, description="de-energise the relay as soon as the door opens")
    exit_button_overrides_tamper: bool = Field(
        True, description="the exit button still opens the door while a tamper block is active")


class LightConfig(Model):
    """A status light (an LED with its series resistor, or a lamp through a driver)."""

    APPLY: ClassVar[dict[str, Apply]] = {"id": "restart", "pin": "local-only", "active": "local-only", "role": "live"}

    id: str = Field(pattern=_SLUG, description="a short name for the light, e.g. \"status\"")
    pin: int = Field(description="BCM GPIO number or \"GPIOn\"/\"BOARDn\"")
    active: Level = Field("high", description="the level that lights it")
    role: Literal["status", "call", "door"] = Field(
        description="status: lit while running; call: the call's state (blinks while ringing, steady when "
                    "connected, flashes when nobody answered; see panel/door/_feedback.py); door: lit while released")

    _pin = field_validator("pin", mode="before")(classmethod(lambda cls, v: parse_pin(v)))


class PanelInfo(Model):
    """Who this panel is."""

    APPLY: ClassVar[dict[str, Apply]] = {"id": "local-only", "name": "live", "board": "live"}

    id: str = Field(pattern=_SLUG, description="unique per panel; also its MQTT client id")
    name: str = Field(min_length=1, max_length=64, description="what the backend shows, e.g. \"Main entrance\"")
    board: str | None = Field(None, description="board revision, e.g. \"pi4-relayhat-v1\" (see hardware/)")


class GpioConfig(Model):
    """How the panel reaches the GPIO pins."""

    APPLY: ClassVar[dict[str, Apply]] = {"pin_factory": "local-only"}

    pin_factory: Literal["lgpio", "rpigpio", "native", "mock"] = Field(
        "lgpio", description="lgpio on a Pi; mock for simulation (panel run --simulate forces it)")


class StorageConfig(Model):
    """The durable store: one SQLite database (WAL, synchronous=FULL) and the snapshots."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "dir": "local-only", "outbox_max_events": "local-only", "history_max_rows": "local-only",
    }

    dir: Path = Field(Path("/var/lib/panel"), strict=False, description="database and snapshots live here")
    outbox_max_events: int = Field(100_000, ge=100, le=10_000_000,
                                   description="undelivered events kept before the oldest heartbeats are shed")
    history_max_rows: int = Field(50_000, ge=100, le=10_000_000,
                                  description="rows kept in each of the call log, the access log and the delivered event history")


class StreamsConfig(Model):
    """Event streams and long-polls (GET /api/v1/events/stream, /api/v1/events?wait_s=): bounded in total, per
    credential and per address, with slots no viewer or backend can take, so a resident's page keeps ringing
    and the installer gets in while others hold the rest (docs/api.md, Event streams)."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "total": "restart", "per_credential": "restart", "per_address": "restart", "reserved_installer": "restart",
        "reserved_residents": "restart",
    }

    total: int = Field(64, ge=4, le=1024, description="event streams and long-polls open at once, all clients")
    per_credential: int = Field(4, ge=1, le=1024, description="streams one credential may hold (the installer: "
                                "only the total applies)")
    per_address: int = Field(16, ge=1, le=1024, description="streams one client address may hold (the installer: "
                             "only the total applies)")
    reserved_installer: int = Field(4, ge=0, le=64, description="slots only the installer may take")
    reserved_residents: int = Field(16, ge=0, le=512, description="further slots only residents (and the installer) "
                                    "may take; viewers, guests and backends share the rest")


def _network(v: str) -> str:
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise PydanticCustomError("network", "expected an address or a network, e.g. \"127.0.0.1\" or "
                                  "\"10.0.0.0/24\"") from None
    return v


def _host_name(v: str) -> str:
    if v != "*" and not _HOST_NAME.fullmatch(v):
        raise PydanticCustomError("host_name", "expected a host name, e.g. \"panel.example.com\" (no scheme, port "
                                  "or path), or \"*\"")
    return v.lower().rstrip(".")


class ApiConfig(Model):
    """The panel's local HTTP API."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "listen": "local-only", "tls": "local-only", "allow_plain_http": "local-only", "cert_file": "local-only",
        "key_file": "local-only", "session_ttl_s": "live", "login_backoff_s": "live", "login_lockout_after": "live",
        "mutations_per_minute": "live", "max_body_bytes": "restart", "max_connections": "restart",
        "max_connections_per_client": "restart", "header_timeout_s": "restart", "idle_timeout_s": "restart",
        "fd_reserve": "restart", "trusted_proxies": "local-only", "allowed_hosts": "local-only",
        "tokens_per_issuer": "live",
    }

    listen: str = Field("127.0.0.1:8080", description="host:port of the local HTTP API")
    tls: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: HTTPS with the panel's own certificate unless listen is a loopback address; "
        "on: always HTTPS; off: plain HTTP (only on loopback, or with allow_plain_http)")
    allow_plain_http: bool = Field(
        False, description="allow tls = \"off\" on a non-loopback address; passwords and door commands then cross "
        "the LAN unencrypted, so only for a closed test network")
    cert_file: Path | None = Field(None, strict=False, description="a certificate (PEM, chain included) to serve "
                                   "instead of the one the panel generates at first start")
    key_file: Path | None = Field(None, strict=False, description="the key of cert_file (PEM, mode 0600)")
    session_ttl_s: float = _seconds(60, 604_800, 28_800.0, "how long an installer login session lasts")
    login_backoff_s: float = _seconds(0.05, 10, 0.5, "delay after the first failed login from an address; it "
                                      "doubles with each further failure")
    login_lockout_after: int = Field(5, ge=1, le=100, description="failed logins from one address after which "
                                     "further attempts are refused (429) until the delay has passed")
    mutations_per_minute: int = Field(120, ge=10, le=100_000, description="sustained rate of changing requests "
                                      "(POST, PUT, PATCH, DELETE) per client address; bursts of a quarter of it "
                                      "pass at once; more gets 429")
    max_body_bytes: int = Field(65_536, ge=1024, le=10_485_760, description="larger request bodies get 413")
    # The door must never depend on the API's resources (docs/api.md, Connections): every one of these
    # bounds what one client, or all of them together, can hold.
    max_connections: int = Field(256, ge=8, le=65_536, description="open API connections, all clients "
                                 "together; fewer when the process's file-descriptor limit (LimitNOFILE) minus "
                                 "fd_reserve leaves less room. At the limit new connections wait in the kernel's "
                                 "queue")
    max_connections_per_client: int = Field(32, ge=2, le=4096, description="open API connections from one client "
                                            "address (an IPv6 client: its /64); more are closed at once. A trusted "
                                            "proxy's connections count only toward max_connections")
    header_timeout_s: float = _seconds(0.5, 120, 10.0, "a connection that has not sent a whole request head "
                                       "(after its TLS handshake, which has as long) this long after it opened, "
                                       "or after the first byte of its next request, is closed")
    idle_timeout_s: float = _seconds(0.5, 600, 5.0, "a kept-alive connection with no request in progress is "
                                     "closed after this long without a byte")
    fd_reserve: int = Field(256, ge=32, le=16_384, description="file descriptors the API never takes, whatever "
                            "arrives: kept for the store, webhooks, MQTT, snapshots and media")
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = Field(
        [], max_length=32, description="addresses or networks (CIDR) of reverse proxies in front of the API: only "
        "their X-Forwarded-For and X-Forwarded-Proto are believed (the login throttle and rate limits then count "
        "the forwarded client). Empty: these headers are ignored")
    allowed_hosts: list[Annotated[str, AfterValidator(_host_name)]] = Field(
        [], max_length=32, description="names clients may reach the API by (the Host header), besides localhost, "
        "this machine's hostname and <hostname>.local, the names in links.base_url, media.snapshots.base_url and "
        "api.cert_file, and any IP address; any other name is refused (host_not_allowed), which stops "
        "DNS-rebinding pages. \"*\" accepts every name")
    tokens_per_issuer: int = Field(2_000, ge=10, le=10_000, description="live credentials one issuer (the installer, "
                                   "one backend credential) may hold of the panel's 10,000; installer login "
                                   "sessions count apart and never against it")
    streams: StreamsConfig = StreamsConfig()

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

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @property
    def https(self) -> bool:
        """Whether the API is served over TLS (``auto``: everywhere but loopback)."""
        return self.tls == "on" or (self.tls == "auto" and not self.loopback)


class UpdateConfig(Model):
    """Signed updates into two application slots with automatic rollback (docs/updates.md)."""

    root: Path | None = Field(None, strict=False, description="the update root holding slots/a, slots/b, current "
                              "and the update state (/opt/panel as the Debian package installs it); unset: no "
                              "updates (a panel run from a source tree)")
    keys_dir: Path = Field(Path("/usr/share/panel/update-keys"), strict=False, description="the vendor's pinned "
                           "Ed25519 public keys, one *.pub file each (base64 of the 32 raw bytes)")
    ca_file: Path | None = Field(None, strict=False, description="CA bundle for the release server; default: the "
                                 "system's")
    max_size_mb: float = Field(200.0, ge=1, le=4096, description="the largest release the panel downloads",
                               json_schema_extra={"unit": "MiB"})
    health_deadline_s: float = _seconds(5, 3600, 120.0, "a new release that has not passed its health check this "
                                        "long after its start is rolled back")
    commit_after_s: float = _seconds(0, 600, 10.0, "a new release must run at least this long, healthy, before it "
                                     "commits (a crash soon after the start still rolls back)")
    max_boots: int = Field(2, ge=1, le=10, description="starts a new release gets to pass its health check; the "
                           "next start goes back to the previous release")


class SecretsConfig(Model):
    """Where the secrets are; the keys of the secrets file are listed under Secrets file below."""

    APPLY: ClassVar[dict[str, Apply]] = {"file": "local-only"}

    file: Path | None = Field(None, strict=False, description="TOML file with the secrets, mode 0600, owned by the service user")


class LogConfig(Model):
    """Logs go to stderr, which systemd hands to journald."""

    APPLY: ClassVar[dict[str, Apply]] = {"level": "live", "format": "restart"}

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="the least severe level logged")
    format: Literal["json", "text"] = Field("json", description="json: one object per line, for journald; text: for a terminal")


class CallsConfig(Model):
    """What a press starts and how long a call may last; the rules are in docs/calls.md."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "call_type": "live", "ring_timeout_s": "live", "max_call_s": "live", "same_button_during_call": "live",
        "other_button_during_call": "live",
    }

    call_type: Literal["audio", "video"] = Field("video", description="what a press starts; audio calls can switch to video")
    ring_timeout_s: float = _seconds(5, 600, 45.0, "unanswered this long after the press, the call is missed")
    max_call_s: float = _seconds(10, 7200, 300.0, "a call is ended this long after the press, whatever its state")
    same_button_during_call: Literal["ignore", "cancel"] = Field(
        "ignore", description="pressing the ringing unit's button again: ignore it, or cancel the call "
        "(an answered call is never canceled by a press)")
    other_button_during_call: Literal["reject", "replace"] = Field(
        "reject", description="another unit's button during a call: refuse it (busy), or cancel the call and ring "
        "the new unit (an answered call is never replaced: the press is refused as busy)")


class WebhooksConfig(Model):
    """Signed events to the backend (Standard Webhooks), from the durable outbox: docs/webhooks.md."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "url": "local-only", "timeout_s": "restart", "max_backoff_s": "restart", "heartbeat_s": "restart",
        "max_in_flight": "restart",
    }

    url: str | None = Field(None, description="the backend's webhook endpoint; https:// unless on loopback")
    timeout_s: float = _seconds(1, 60, 10.0, "per-request timeout")
    max_backoff_s: float = _seconds(1, 3600, 300.0, "retries back off exponentially up to this interval")
    heartbeat_s: float = _seconds(10, 86_400, 300.0, "interval of panel.heartbeat events")
    max_in_flight: int = Field(4, ge=1, le=32, description="deliveries in flight at once, each for a different "
                               "call (or door/panel); one key's events always go one at a time, in order")

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
    # Broker, identity and topics say who may command the door; signing, command age and Home Assistant's
    # unsigned OPEN say how: all local-only. Only timings and the discovery switches wait for a restart.
    APPLY: ClassVar[dict[str, Apply]] = {
        "host": "local-only", "port": "local-only", "tls": "local-only", "ca_file": "local-only",
        "cert_file": "local-only", "key_file": "local-only", "username": "local-only", "client_id": "local-only",
        "topic_prefix": "local-only", "keepalive_s": "restart", "reconnect_max_s": "restart",
        "require_signed_commands": "local-only", "command_max_age_s": "local-only",
        "homeassistant_discovery": "restart", "discovery_prefix": "restart", "homeassistant_allow_open": "local-only",
    }

    host: str | None = Field(None, description="the backend's MQTT broker; unset disables the control channel")
    port: int = Field(8883, ge=1, le=65535)
    tls: bool = Field(True, description="TLS with server verification; plain TCP only for loopback tests")
    ca_file: Path | None = Field(None, strict=False, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(None, strict=False, description="client certificate (per-device identity)")
    key_file: Path | None = Field(None, strict=False, description="client key, mode 0600")
    username: str | None = Field(None, description="per-device user name (password in the secrets file)")
    client_id: str | None = Field(None, description="defaults to panel.id")
    topic_prefix: str = Field("panels", description="topics are <topic_prefix>/<panel.id>/...")
    keepalive_s: int = Field(30, ge=5, le=3600, json_schema_extra={"unit": "seconds"})
    reconnect_max_s: float = _seconds(1, 600, 60.0, "reconnect backoff cap")
    # On unless the config says otherwise (issue 9): a broker credential alone must not open the door.
    require_signed_commands: bool = Field(True, description="refuse commands without a valid signature (command_key); "
                                          "turn off only where the broker's ACL is the whole protection you want")
    command_max_age_s: float = _seconds(1, 3600, 30.0, "a command older than this is refused as expired")
    homeassistant_discovery: bool = Field(False, description="publish Home Assistant MQTT discovery")
    discovery_prefix: str = Field("homeassistant")
    homeassistant_allow_open: bool = Field(
        False, description="let Home Assistant's lock entity open the door with plain OPEN/UNLOCK payloads; "
        "these cannot be signed or replay-protected, so only the broker's ACL guards them (docs/mqtt.md)")


class EnrolConfig(Model):
    """Enrolment to the backend by code (docs/enrolment.md): the panel makes its own key, gets its client
    certificate from the backend's EST endpoint (RFC 7030) and, with it, its broker and webhook secret."""

    # Where the panel enrols (and whom it trusts for it) decides who may command the door: local-only.
    APPLY: ClassVar[dict[str, Apply]] = {
        "est_url": "local-only", "ca_file": "local-only", "code_ttl_s": "restart", "retry_s": "restart",
        "renew_margin_s": "restart", "timeout_s": "restart",
    }

    est_url: str | None = Field(None, description="the backend's EST base URL, e.g. "
                                "\"https://backend.example/.well-known/est\" (simpleenroll, simplereenroll and "
                                "panelconfig are under it); unset: no enrolment, the broker and webhooks come from "
                                "[mqtt] and [webhooks]")
    ca_file: Path | None = Field(None, strict=False, description="CA bundle that signed the EST server's certificate "
                                 "(and the broker's, unless the backend sends its own); default: the system's")
    code_ttl_s: float = _seconds(300, 2_592_000, 86_400.0, "an enrolment code nobody used is replaced by a new one "
                                 "this long after it was made")
    retry_s: float = _seconds(0.1, 600, 5.0, "while the code waits to be redeemed (or after a failed renewal), the "
                              "panel asks the backend again this often")
    renew_margin_s: float = _seconds(60, 31_536_000, 1_209_600.0, "re-enrol (simplereenroll) this long before the "
                                     "client certificate expires")
    timeout_s: float = _seconds(1, 120, 15.0, "per-request timeout towards the EST endpoint and the broker check")

    @field_validator("est_url")
    @classmethod
    def _est_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https://([^/:\s]+|\[[^\]]+\])(:\d+)?(/[^\s?#]*)?$", v):
            raise PydanticCustomError("url", "expected an https:// URL without query, like "
                                      "\"https://backend.example/.well-known/est\" (EST runs over TLS only)")
        return v.rstrip("/") if v is not None else v


def _ice_url(url: str) -> str:
    if not re.match(r"^(stun|stuns|turn|turns):[^\s?]+(\?transport=(udp|tcp))?$", url):
        raise PydanticCustomError("ice_url", "expected a STUN/TURN URL such as \"stun:host:3478\" or "
                                  "\"turn:host:3478?transport=udp\"")
    return url


IceUrl = Annotated[str, AfterValidator(_ice_url)]


class IceServerConfig(Model):
    """A STUN or TURN server handed to WebRTC peers (remote residents behind NAT need TURN)."""

    APPLY: ClassVar[dict[str, Apply]] = {"urls": "local-only", "username": "local-only", "credential_env": "local-only"}

    urls: list[IceUrl] = Field(min_length=1, description="e.g. [\"stun:stun.example.net:3478\"] or "
                            "[\"turn:turn.example.net:3478?transport=udp\"]")
    username: str | None = Field(None, description="TURN user name")
    credential_env: str | None = Field(
        None, pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="name of the environment variable holding the TURN password (kept out of this file; set it "
                    "in the service's EnvironmentFile)")


class VideoConfig(Model):
    """The camera: one capture shared by every viewer, encoded once per stream.

    ``synthetic`` is a moving test pattern with a frame counter and clock; ``v4l2`` a USB webcam
    (MJPEG/YUYV, decoded and encoded once in software; ``input_format = "h264"`` passes a camera's own
    H.264 through); ``h264_pipe`` runs a command printing H.264 Annex-B on stdout (a Pi camera via
    ``rpicam-vid``), passed through without decoding; ``h264_file`` loops an Annex-B ``.h264`` or an
    MPEG-TS file, passed through.
    """

    APPLY: ClassVar[dict[str, Apply]] = {
        "source": "restart", "device": "local-only", "input_format": "restart", "command": "local-only",
        "file": "local-only", "width": "restart", "height": "restart", "fps": "restart", "codec": "restart",
        "bitrate_kbps": "restart", "gop_s": "restart",
    }

    source: Literal["synthetic", "v4l2", "h264_pipe", "h264_file", "none"] = Field(
        "synthetic", description="where the picture comes from; none: audio only")
    device: str = Field("/dev/video0", description="v4l2: the video device node")
    input_format: Literal["mjpeg", "yuyv422", "h264"] = Field(
        "mjpeg", description="v4l2: what to ask the camera for; h264 is passed through without re-encoding")
    command: list[str] | None = Field(
        None, description="h264_pipe: the command and its arguments; default: rpicam-vid at this width, height "
                          "and fps with inline headers and a keyframe every gop_s")
    file: Path | None = Field(None, strict=False, description="h264_file: an Annex-B .h264 or an MPEG-TS file")
    width: int = Field(640, ge=320, le=1920, description="picture width in pixels (even)")
    height: int = Field(480, ge=240, le=1080, description="picture height in pixels (even)")
    fps: int = Field(15, ge=1, le=30, description="frames per second")
    codec: Literal["h264", "vp8"] = Field(
        "h264", description="codec of the software encoder (synthetic and v4l2 mjpeg/yuyv); pass-through is H.264")
    bitrate_kbps: int = Field(800, ge=100, le=8000, description="software encoder target bitrate")
    gop_s: float = _seconds(0.5, 10, 2.0, "a keyframe at least this often (software encoder and the default "
                            "rpicam-vid command); a new viewer gets one at once either way")

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise PydanticCustomError("even", "expected an even number of pixels")
        return v


class EchoConfig(Model):
    """Echo cancellation and noise suppression on the entrance microphone (WebRTC's AEC3 and NS through
    pywebrtc-audio), with exactly what the speaker plays as the reference. How to tune it for a housing:
    docs/media.md, Echo cancellation."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "enabled": "restart", "noise_suppression": "restart", "delay_ms": "restart", "max_delay_ms": "restart",
        "auto_gain": "restart",
    }

    enabled: bool = Field(True, description="cancel the speaker's sound in the microphone, so the resident does "
                                            "not hear themselves back (full duplex); off: the raw microphone")
    noise_suppression: Literal["off", "low", "moderate", "high", "very_high"] = Field(
        "moderate", description="steady noise (traffic, fans, rain) taken out of the microphone: about 6, 12, 18 or "
                                "21 dB; off: none")
    delay_ms: int | None = Field(
        None, ge=0, le=500, description="speaker-to-microphone delay (buffers plus sound path) as a starting hint; "
                                        "absent: estimated from the signals and tracked (the estimate: "
                                        "devices.voice.echo.delay_ms in the installer's media status)")
    max_delay_ms: int = Field(400, ge=60, le=1000, description="how much of the speaker's signal is kept to match "
                                                               "against the microphone: echoes later than this are "
                                                               "not cancelled")
    auto_gain: bool = Field(False, description="automatic gain on the microphone (WebRTC AGC2), for a quiet or "
                                               "distant microphone")


class AudioConfig(Model):
    """Microphone and speaker, chosen by device name (``python -m sounddevice`` lists them)."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "input": "restart", "output": "restart", "tone_hz": "restart", "tone_level": "restart",
        "opus_kbps": "restart",
    }

    input: str = Field("synthetic", min_length=1,
                       description="microphone: a device name (or part of it), \"synthetic\" for a test tone, "
                                   "or \"none\"")
    output: str = Field("record", min_length=1,
                        description="speaker: a device name (or part of it), \"record\" to keep the last seconds "
                                    "in memory (simulation, tests), or \"none\"")
    tone_hz: float = Field(440.0, ge=50, le=8000, description="frequency of the synthetic microphone's tone")
    tone_level: float = Field(0.3, ge=0, le=1, description="amplitude of the synthetic tone, 1 = full scale")
    opus_kbps: int = Field(32, ge=8, le=128, description="the microphone's Opus bitrate; it is encoded once for "
                                                         "every listener")
    echo: EchoConfig = EchoConfig()


class SnapshotsConfig(Model):
    """JPEG pictures of the visitor: one at every press (stored with the call), on demand, and an optional
    buffer of pictures from just before the press. Stored under ``storage.dir``/snapshots; when a bound
    below is reached the oldest call's pictures are deleted first (docs/media.md, Snapshots)."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "at_press": "live", "max_calls": "live", "max_mb": "live", "min_free_mb": "live", "quality": "restart",
        "prebuffer_s": "restart", "prebuffer_fps": "restart", "prebuffer_max_mb": "restart", "wait_s": "live",
        "url_ttl_s": "restart", "base_url": "local-only",
    }

    at_press: bool = Field(True, description="take a picture at every press and store it with the call")
    max_calls: int = Field(500, ge=1, le=100_000, description="calls whose pictures are kept; the oldest go first")
    max_mb: float = Field(200.0, ge=1, le=100_000, description="the most disk space all stored pictures may use",
                          json_schema_extra={"unit": "MiB"})
    min_free_mb: float = Field(200.0, ge=0, le=100_000, json_schema_extra={"unit": "MiB"},
                               description="never store a picture that would leave less free space than this on "
                                           "the disk (the database needs it more)")
    quality: int = Field(80, ge=10, le=100, description="JPEG quality of snapshots and the MJPEG stream (one "
                                                        "encode serves both)")
    prebuffer_s: float = _seconds(0, 30, 0.0, "keep pictures of the last this many seconds in memory and store them "
                                  "with the call at a press (0: off; on, the camera runs all the time)")
    prebuffer_fps: float = Field(1.0, ge=0.2, le=5, description="pictures per second in the pre-press buffer")
    prebuffer_max_mb: float = Field(16.0, ge=1, le=256, description="memory the pre-press buffer may use",
                                    json_schema_extra={"unit": "MiB"})
    wait_s: float = _seconds(0.5, 10, 3.0, "how long a snapshot waits for a camera that is not running yet")
    url_ttl_s: float = _seconds(60, 30 * 86_400, 7 * 86_400.0,
                                "how long the signed snapshot URL in the call.snapshot event works")
    base_url: str | None = Field(None, description="how the backend reaches the local API, e.g. "
                                                   "\"https://panel-17.example.net:8443\"; makes call.snapshot URLs absolute")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s?#]+$", v):
            raise PydanticCustomError("base_url", "expected scheme and host only, like \"https://panel.example:8443\" "
                                      "(no path, no trailing /)")
        return v


class MjpegConfig(Model):
    """The MJPEG live stream (GET /api/v1/video.mjpeg) for clients that can only show a web view."""

    APPLY: ClassVar[dict[str, Apply]] = {"enabled": "local-only", "max_fps": "restart", "max_viewers": "live",
                                         "max_viewers_per_credential": "live", "max_viewers_per_address": "live",
                                         "viewers_reserved": "live"}

    enabled: bool = Field(True, description="serve the MJPEG stream (with a call or live-view credential)")
    max_fps: float = Field(5.0, ge=0.5, le=30, description="pictures per second at most, whatever the camera does")
    max_viewers: int = Field(4, ge=1, le=32, description="MJPEG viewers at once")
    max_viewers_per_credential: int = Field(2, ge=1, le=32, description="viewers one credential may hold (the "
                                            "installer: only max_viewers applies)")
    max_viewers_per_address: int = Field(3, ge=1, le=32, description="viewers one client address may hold (the "
                                         "installer: only max_viewers applies)")
    viewers_reserved: int = Field(1, ge=0, le=31, description="viewers live views of viewers and backends cannot "
                                  "take: kept for the installer and for residents and calls, at most max_viewers - 1")


class TonesConfig(Model):
    """What the visitor hears from the panel's speaker, generated (not files) and mixed with the resident's voice."""

    APPLY: ClassVar[dict[str, Apply]] = {
        "enabled": "restart", "level": "restart", "ringback_hz": "restart", "ringback_on_s": "restart",
        "ringback_off_s": "restart",
    }

    enabled: bool = Field(True, description="play ringback, answered, door-open and no-answer tones")
    level: float = Field(0.25, ge=0, le=1, description="tone amplitude, 1 = full scale")
    ringback_hz: float = Field(425.0, ge=100, le=4000, description="ringback frequency (425 Hz: the European tone)")
    ringback_on_s: float = _seconds(0.1, 5, 1.0, "ringback tone on")
    ringback_off_s: float = _seconds(0.1, 10, 4.0, "ringback pause")


class LinksConfig(Model):
    """Call links: during a call the resident (or the backend) shares a signed, expiring, revocable link
    that lets someone preview the call and join it from a browser (docs/pages.md)."""

    # Switching links on lets people outside the building into calls: local-only like the base URL.
    APPLY: ClassVar[dict[str, Apply]] = {
        "enabled": "local-only", "ttl_s": "live", "max_participants": "live", "max_previews": "live",
        "idle_s": "live", "base_url": "local-only",
    }

    enabled: bool = Field(True, description="allow call links and invites")
    ttl_s: float = _seconds(60, 86_400, 600.0, "how long a new call link can be opened; it also ends with its call")
    max_participants: int = Field(3, ge=1, le=15, description="people in a call through links at once, besides the "
                                                              "resident who answered (also bounded by media.max_sessions)")
    max_previews: int = Field(16, ge=1, le=64, description="open link previews (subscriptions) per call")
    idle_s: float = _seconds(10, 300, 45.0, "a preview that has not asked for the participant list this long is "
                             "dropped (the page was closed)")
    base_url: str | None = Field(None, description="how residents reach the panel's pages, e.g. "
                                                   "\"https://panel.local:8443\"; makes call links absolute")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s?#]+$", v):
            raise PydanticCustomError("base_url", "expected scheme and host only, like \"https://panel.local:8443\" "
                                      "(no path, no trailing /)")
        return v


LiveViewWhen = Literal["never", "own_call", "any_time"]


class LiveViewConfig(Model):
    """Who sees the camera when, with an API credential (WHEP, MJPEG, a snapshot now); docs/media.md, Who
    may watch. The installer and the backend always may (with media.monitor for WHEP outside a call)."""

    # Each widens who sees the entrance: only in the file on the panel.
    APPLY: ClassVar[dict[str, Apply]] = {"resident": "local-only", "viewer": "local-only",
                                         "into_other_calls": "local-only"}

    resident: Literal["own_call", "any_time"] = Field(
        "own_call", description="own_call: a resident watches only while a call of their unit rings or is answered; "
        "any_time: also when the panel is idle")
    viewer: LiveViewWhen = Field(
        "own_call", description="never, own_call (while a call of the viewer's unit, or their one call, is in "
        "progress) or any_time (also when the panel is idle)")
    into_other_calls: bool = Field(
        False, description="let a resident or viewer allowed any_time watch while another unit's call is in "
        "progress (they would see that unit's visitor)")


class WhipTargetConfig(Model):
    """One SFU the panel publishes the entrance to over WHIP (RFC 9725): camera and microphone, once."""

    APPLY: ClassVar[dict[str, Apply]] = {"id": "local-only", "url": "local-only", "audio": "local-only",
                                         "video": "local-only"}

    id: str = Field(pattern=_SLUG, description="a short name for the target, e.g. \"janus\"; its Bearer token is "
                    "whip_tokens.<id> in the secrets file (none: the POST carries no Authorization)")
    url: str = Field(max_length=2048, description="the WHIP endpoint, e.g. "
                     "\"https://sfu.example.net/whip/endpoint/entrance\" (a redirect is followed; the token goes "
                     "only to this URL's origin)")
    video: bool = Field(True, description="publish the camera (H.264 passed through, or the one shared encode)")
    audio: bool = Field(True, description="publish the entrance microphone (Opus)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+(/[^\s#]*)?$", v):
            raise PydanticCustomError("whip_url", "expected an http:// or https:// URL of a WHIP endpoint")
        return v


class PublishConfig(Model):
    """Publishing the entrance once to media servers that fan it out to many viewers (docs/media.md,
    Publishing to an SFU)."""

    # Where the entrance goes and when: only in the file on the panel. The timings are read at the start.
    APPLY: ClassVar[dict[str, Apply]] = {
        "targets": "local-only", "when": "local-only", "retry_min_s": "restart", "retry_max_s": "restart",
        "unauthorized_retry_s": "restart", "dead_after_s": "restart", "connect_timeout_s": "restart",
    }

    targets: list[WhipTargetConfig] = Field([], max_length=4, description="where to publish; empty: nowhere")
    when: Literal["always", "call", "command"] = Field(
        "command", description="always: from the start; call: from a press until the call ends; command: when the "
        "backend sends the MQTT publish command (it starts and stops publishing in every mode)")
    retry_min_s: float = _seconds(0.2, 60, 1.0, "the first wait before publishing again after a failure; doubled "
                                  "on each failure in a row up to retry_max_s")
    retry_max_s: float = _seconds(1, 3600, 30.0, "the longest wait between two attempts")
    unauthorized_retry_s: float = _seconds(10, 86_400, 600.0, "after a 401/403 (the token is wrong) the next "
                                           "attempt waits this long, or for the next publish command")
    dead_after_s: float = _seconds(2, 60, 6.0, "nothing from the server (RTCP, keepalives) for this long counts as "
                                   "the server gone: the panel deletes the session and publishes anew")
    connect_timeout_s: float = _seconds(2, 60, 10.0, "a session that is not connected this long after the "
                                        "server's answer counts as failed")


class MediaConfig(Model):
    """Camera, microphone, speaker and WebRTC sessions (WHEP on the local API, offers over MQTT).

    Without this section the panel runs without media: door and calls keep working, an answered
    call connects at once. If a device fails the panel keeps running, reports ``media.device_lost``
    and retries.
    """

    # ICE servers point the panel at outside hosts (and name a password variable); live view, its audio
    # and joining a call view-only widen who sees and hears the entrance: all local-only.
    APPLY: ClassVar[dict[str, Apply]] = {
        "max_sessions": "restart", "ice_servers": "local-only", "whep_ice_servers": "restart",
        "ice_gather_budget_s": "restart", "ice_probe_interval_s": "restart", "ice_probe_timeout_s": "restart",
        "token_ttl_s": "restart", "peer_timeout_s": "restart", "monitor": "local-only", "monitor_audio": "local-only",
        "join_view_only": "local-only", "linger_s": "restart", "max_sessions_per_credential": "restart",
        "max_sessions_per_address": "restart", "sessions_reserved": "restart",
    }

    video: VideoConfig = VideoConfig()
    audio: AudioConfig = AudioConfig()
    max_sessions: int = Field(4, ge=1, le=16, description="WebRTC sessions at once (calls and live views)")
    max_sessions_per_credential: int = Field(2, ge=1, le=16, description="sessions one credential may hold (the "
                                             "installer: only max_sessions applies)")
    max_sessions_per_address: int = Field(3, ge=1, le=16, description="WHEP sessions one client address may hold "
                                          "(the installer: only max_sessions applies)")
    sessions_reserved: int = Field(1, ge=0, le=15, description="sessions viewers' and backends' live views cannot "
                                   "take: kept for the installer and residents, at most max_sessions - 1 (a "
                                   "call's answerer also ends the oldest live view when all are taken)")
    ice_servers: list[IceServerConfig] = Field(
        [], description="STUN/TURN for remote residents (MQTT-signalled sessions); LAN WHEP sessions use host "
                        "candidates only, so setting up a session never waits for a STUN server")
    whep_ice_servers: bool = Field(False, description="give ice_servers to WHEP sessions too (WHEP across NAT)")
    ice_gather_budget_s: float = _seconds(
        0.1, 5, 0.5, "the longest a new session waits for STUN/TURN candidates; then it answers with the host "
        "candidates and the server candidates that came in time (aiortc alone waits up to 5 s)")
    ice_probe_interval_s: float = _seconds(
        1, 3600, 30.0, "how often every STUN/TURN server is probed in the background (also at once after a network "
        "change); sessions only get servers whose last probe was answered within ice_gather_budget_s")
    ice_probe_timeout_s: float = _seconds(0.2, 10, 1.5, "a probe that gets no answer within this marks the server "
                                          "unreachable until a later probe is answered")
    token_ttl_s: float = _seconds(10, 86_400, 120.0, "how long a session credential may be used to start a session; "
                                  "a call's credentials end with the call, revoking one ends its session at once")
    peer_timeout_s: float = _seconds(2, 60, 10.0, "a session whose peer sends nothing for this long is closed")
    monitor: bool = Field(True, description="allow live view outside a call (WHEP with the installer token or a "
                                            "monitor credential)")
    monitor_audio: bool = Field(False, description="live view outside a call includes the entrance microphone")
    join_view_only: bool = Field(False, description="during an answered call, other residents may join view-only "
                                                    "instead of being refused")
    linger_s: float = _seconds(0, 60, 5.0, "keep a device open this long after its last viewer left, so the next "
                               "one starts at once")
    live_view: LiveViewConfig = LiveViewConfig()
    snapshots: SnapshotsConfig = SnapshotsConfig()
    mjpeg: MjpegConfig = MjpegConfig()
    tones: TonesConfig = TonesConfig()
    publish: PublishConfig = Field(PublishConfig(), description="publish the entrance once to SFUs over WHIP")


_LOCAL: Any = {"apply": "local"}
_RESTART: Any = {"apply": "restart"}


class KeypadConfig(Model):
    """A matrix keypad on GPIO: rows driven, columns read (pulled up); a key joins its row to its column."""

    rows: list[int] = Field(min_length=1, max_length=8, description="row pins, top to bottom, driven low one at a "
                            "time while scanning", json_schema_extra=_LOCAL)
    cols: list[int] = Field(min_length=1, max_length=8, description="column pins, left to right, read with the "
                            "internal pull-up", json_schema_extra=_LOCAL)
    keys: list[str] = Field(["123", "456", "789", "*0#"], min_length=1, max_length=8,
                            description="the legend: one string per row, one character per column",
                            json_schema_extra=_LOCAL)
    relay: str | None = Field(None, description="the relay this keypad opens; default: the door's first",
                              json_schema_extra=_LOCAL)
    scan_ms: int = Field(10, ge=2, le=100, description="one scan of the matrix this often",
                         json_schema_extra={"unit": "milliseconds", "apply": "restart"})
    debounce_scans: int = Field(2, ge=1, le=10, description="a key counts once seen (or gone) in this many scans "
                                "in a row", json_schema_extra=_RESTART)

    _pins = field_validator("rows", "cols", mode="before")(classmethod(
        lambda cls, v: [parse_pin(p) for p in v] if isinstance(v, list) else v))


class OsdpConfig(Model):
    """An OSDP card reader (with keypad, if it has one) on RS-485; the panel is the control panel (CP)."""

    device: str = Field(description="the RS-485 serial device, e.g. /dev/ttyAMA0 or /dev/ttyUSB0",
                        json_schema_extra=_LOCAL)
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400] = Field(115200, json_schema_extra=_LOCAL)
    address: int = Field(0, ge=0, le=126, description="the reader's OSDP address", json_schema_extra=_LOCAL)
    relay: str | None = Field(None, description="the relay this reader opens; default: the door's first",
                              json_schema_extra=_LOCAL)
    secure_channel: bool = Field(True, description="OSDP secure channel (AES); off only for a reader that "
                                 "cannot, on a bus nobody else can reach", json_schema_extra=_LOCAL)


class AccessConfig(Model):
    """Doors without a call (docs/access.md): PINs and temporary codes on a keypad, QR codes at the camera,
    cards on an OSDP reader, throttled and journalled."""

    keypad: KeypadConfig | None = Field(None, description="a matrix keypad on GPIO; absent: none",
                                        json_schema_extra=_LOCAL)
    osdp: OsdpConfig | None = Field(None, description="an OSDP card reader; absent: none (its secure channel key "
                                    "is osdp_scbk in the secrets file)", json_schema_extra=_LOCAL)
    qr: bool = Field(False, description="read QR codes from the camera while someone is at the panel (a press "
                     "or a keypad touch); needs media", json_schema_extra=_RESTART)
    qr_window_s: float = Field(20.0, ge=2, le=120, description="after a press or a keypad touch, look for QR codes "
                               "this long", json_schema_extra={"unit": "seconds", "apply": "restart"})
    min_code_length: int = Field(4, ge=4, le=12, description="PINs and codes have at least this many digits",
                                 json_schema_extra=_RESTART)
    code_length: int = Field(6, ge=4, le=12, description="digits of a temporary code the panel makes up",
                             json_schema_extra=_RESTART)
    key_timeout_s: float = Field(5.0, ge=1, le=60, description="a keypad entry is forgotten this long after its "
                                 "last key", json_schema_extra={"unit": "seconds", "apply": "restart"})
    max_failures: int = Field(5, ge=1, le=100, description="wrong codes or cards in a row at one source before "
                              "it blocks", json_schema_extra=_RESTART)
    block_s: float = Field(60.0, ge=5, le=3600, description="how long a source stays blocked after max_failures",
                           json_schema_extra={"unit": "seconds", "apply": "restart"})


class Config(Model):
    # Door codes, keypad and reader wiring and their throttles decide who gets in, and the update keys decide
    # which firmware may run: only in the file.
    APPLY: ClassVar[dict[str, Apply]] = {"tamper": "local-only", "access": "local-only", "update": "local-only"}
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
    media: MediaConfig | None = Field(
        None, description="camera, microphone, speaker and WebRTC; absent: no media")
    links: LinksConfig = LinksConfig()
    access: AccessConfig = Field(AccessConfig(), description="keypad, codes, QR and card readers (docs/access.md)",
                                 json_schema_extra=_RESTART)
    update: UpdateConfig = UpdateConfig()
    enrol: EnrolConfig = EnrolConfig()

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
# When a changed key takes effect

_RANK: dict[Apply, int] = {"live": 0, "restart": 1, "local-only": 2}
_INDEX_RE = re.compile(r"\[\d*\]")


def _strictest(found: list[Apply]) -> Apply | None:
    best: Apply | None = None
    for a in found:
        if best is None or _RANK[a] > _RANK[best]:
            best = a
    return best


def _submodel(field: FieldInfo) -> type[Model] | None:
    return next((t for t in _unwrap(field.annotation) if isinstance(t, type) and issubclass(t, Model)), None)


def _subtree_apply(model: type[Model]) -> Apply | None:
    """The strictest classification of any key beneath ``model`` (adding or removing a whole table or list
    entry changes all of them)."""
    found: list[Apply] = []
    for name, field in model.model_fields.items():
        if name in model.APPLY:
            found.append(model.APPLY[name])
        sub = _submodel(field)
        if sub is not None and (below := _subtree_apply(sub)) is not None:
            found.append(below)
    return _strictest(found)


def declared_apply(path: str, root: type[Model] | None = None) -> Apply | None:
    """How a change to the key at ``path`` (``door.relays[0].hold_s`` or ``door.relays[].hold_s``) takes
    effect, from the models' ``APPLY``: the strictest classification along the path (a local-only table
    makes every key in it local-only); for a table or list of tables, also the strictest key beneath it.
    None: the path is not a config key, or nothing along it is classified."""
    model: type[Model] | None = root or Config
    found: list[Apply] = []
    sub: type[Model] | None = None
    for name in _INDEX_RE.sub("", path).split("."):
        if model is None or name not in model.model_fields:
            return None
        if name in model.APPLY:
            found.append(model.APPLY[name])
        sub = _submodel(model.model_fields[name])
        model = sub
    if sub is not None and (below := _subtree_apply(sub)) is not None:
        found.append(below)
    return _strictest(found)


def key_apply(path: str) -> Apply:
    """``declared_apply``, with anything unknown treated as local-only: a key nobody classified is never
    changed from outside by accident."""
    return declared_apply(path) or "local-only"


def leaf_keys(model: type[Model] | None = None, prefix: str = "") -> list[str]:
    """Every key that holds a value rather than a table, as a generic path (``door.relays[].hold_s``)."""
    out: list[str] = []
    for name, field in (model or Config).model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        sub = _submodel(field)
        if sub is None:
            out.append(path)
        else:
            many = any(typing.get_origin(t) is list for t in [field.annotation, *typing.get_args(field.annotation)])
            out += leaf_keys(sub, path + ("[]" if many else ""))
    return out


# ---------------------------------------------------------------------------------------------
# Loading and error reporting


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError([f"file not found; copy config/panel.example.toml to {path} and edit it"], str(path)) from e
    except OSError as e:
        raise ConfigError([f"cannot read the file ({e.strerror})"], str(path)) from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(["not UTF-8 text; save the file as UTF-8"], str(path)) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"TOML syntax error: {e}"], str(path)) from e
    cfg = parse_config(data, source=str(path))
    return resolve_paths(cfg, path.parent)


def resolve_paths(cfg: Config, base: Path) -> Config:
    """Relative paths in the config are relative to the config file's folder."""
    storage = cfg.storage.model_copy(update={"dir": (base / cfg.storage.dir).absolute()})
    secrets = cfg.secrets
    if secrets.file is not None and not secrets.file.is_absolute():
        secrets = secrets.model_copy(update={"file": (base / secrets.file).absolute()})
    mqtt = cfg.mqtt.model_copy(update={
        name: (base / getattr(cfg.mqtt, name)).absolute()
        for name in ("ca_file", "cert_file", "key_file")
        if getattr(cfg.mqtt, name) is not None and not getattr(cfg.mqtt, name).is_absolute()})
    media = cfg.media
    if media is not None and media.video.file is not None and not media.video.file.is_absolute():
        video = media.video.model_copy(update={"file": (base / media.video.file).absolute()})
        media = media.model_copy(update={"video": video})
    api = cfg.api.model_copy(update={
        name: (base / getattr(cfg.api, name)).absolute()
        for name in ("cert_file", "key_file")
        if getattr(cfg.api, name) is not None and not getattr(cfg.api, name).is_absolute()})
    upd = cfg.update.model_copy(update={
        name: (base / getattr(cfg.update, name)).absolute()
        for name in ("root", "keys_dir", "ca_file")
        if getattr(cfg.update, name) is not None and not getattr(cfg.update, name).is_absolute()})
    enrol = cfg.enrol
    if enrol.ca_file is not None and not enrol.ca_file.is_absolute():
        enrol = enrol.model_copy(update={"ca_file": (base / enrol.ca_file).absolute()})
    return cfg.model_copy(update={"storage": storage, "secrets": secrets, "mqtt": mqtt, "media": media, "api": api,
                                  "update": upd, "enrol": enrol})


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
    streams = cfg.api.streams
    if streams.reserved_installer + streams.reserved_residents >= streams.total:
        problems.append(f"api.streams.reserved_residents: {streams.reserved_installer} + {streams.reserved_residents} "
                        f"reserved slots leave none of the {streams.total} (api.streams.total) for viewers, guests "
                        "and backends; expected fewer reserved than total")
    relay_ids: set[str] = set()
    for i, r in enumerate(cfg.door.relays):
        claim(r.pin, f"door.relays[{i}].pin")
        if r.id in relay_ids:
            problems.append(f"door.relays[{i}].id: {r.id!r} is already used; relay ids must be unique")
        relay_ids.add(r.id)
        if r.max_on_s < r.hold_s:
            problems.append(f"door.relays[{i}].max_on_s: {_fmt(r.max_on_s)} is not allowed; expected at least "
                            f"hold_s ({_fmt(r.hold_s)}), the limit must not cut every normal release short")
    for i, b in enumerate(cfg.buttons):
        for j, rid in enumerate(b.unit.relays or []):
            if rid not in relay_ids:
                problems.append(f"buttons[{i}].unit.relays[{j}]: there is no relay {rid!r}; expected one of "
                                + ", ".join(repr(r) for r in sorted(relay_ids)))
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
    kp = cfg.access.keypad
    if kp is not None:
        for kind in ("rows", "cols"):
            for i, pin in enumerate(getattr(kp, kind)):
                claim(pin, f"access.keypad.{kind}[{i}]")
        if len(kp.keys) != len(kp.rows) or any(len(k) != len(kp.cols) for k in kp.keys):
            problems.append(f"access.keypad.keys: {len(kp.keys)} row(s) of legends for {len(kp.rows)} rows and "
                            f"{len(kp.cols)} columns is not allowed; expected one string of {len(kp.cols)} "
                            "characters per row")
    for where, relay in (("keypad", kp.relay if kp else None),
                         ("osdp", cfg.access.osdp.relay if cfg.access.osdp else None)):
        if relay is not None and relay not in relay_ids:
            problems.append(f"access.{where}.relay: {relay!r} is not a relay of this panel; expected one of "
                            f"{', '.join(sorted(relay_ids))}")
    problems += _enrol_checks(cfg)
    problems += _mqtt_checks(cfg.mqtt)
    problems += _api_checks(cfg.api)
    if cfg.media is not None:
        problems += _media_checks(cfg.media)
    return problems


def _media_checks(m: MediaConfig) -> list[str]:
    v = m.video
    if v.source == "h264_file" and v.file is None:
        return ["media.video.file: is required when media.video.source is \"h264_file\" (an Annex-B .h264 or "
                "MPEG-TS file to loop)"]
    if v.source == "h264_pipe" and v.command is not None and not v.command:
        return ["media.video.command: an empty list is not allowed; leave it out for the default rpicam-vid "
                "command, or give the program and its arguments"]
    return []


_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# With enrolment the backend hands these over (docs/enrolment.md); a value in the file would be ignored.
ENROLLED_KEYS = ("mqtt.host", "mqtt.port", "mqtt.cert_file", "mqtt.key_file", "mqtt.username", "webhooks.url")


def _enrol_checks(cfg: Config) -> list[str]:
    if cfg.enrol.est_url is None:
        return []
    problems: list[str] = []
    defaults = Config.model_fields
    for key in ENROLLED_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        default = getattr(defaults[section].default, name)
        if value != default:
            problems.append(f"{key}: {_fmt(value) if not isinstance(value, Path) else _fmt(str(value))} is not "
                            "allowed while enrol.est_url is set; the backend hands it over at enrolment "
                            "(docs/enrolment.md): remove the key, or remove enrol.est_url to set it by hand")
    return problems



def _api_checks(a: ApiConfig) -> list[str]:
    problems: list[str] = []
    if a.tls == "off" and not a.loopback and not a.allow_plain_http:
        problems.append(f"api.tls: \"off\" is not allowed while api.listen ({_fmt(a.listen)}) is not a loopback "
                        "address; installer passwords and door commands would cross the network unencrypted. Use "
                        "tls = \"auto\", or set allow_plain_http = true on a closed test network")
    if (a.cert_file is None) != (a.key_file is None):
        problems.append("api.cert_file: a certificate of your own needs both cert_file and key_file; set both, or "
                        "neither to use the certificate the panel generates")
    if a.cert_file is not None and not a.https:
        problems.append("api.cert_file: is set but the API is served without TLS (api.tls, api.listen); set "
                        "tls = \"on\" or remove cert_file and key_file")
    return problems


def _mqtt_checks(m: MqttConfig) -> list[str]:
    problems: list[str] = []
    if m.host is None:
        return problems
    if not m.tls and m.host not in _LOOPBACK:
        problems.append("mqtt.tls: false is not allowed for a broker that is not on loopback; commands open the "
                        "door, so the link must be TLS with server verification (set tls = true and ca_file)")
    if (m.cert_file is None) != (m.key_file is None):
        problems.append("mqtt.cert_file: a client certificate needs both cert_file and key_file; set both or "
                        "neither")
    if m.username is None and m.cert_file is None:
        problems.append("mqtt.username: is required (with mqtt_password in the secrets file) unless cert_file and "
                        "key_file give the panel its own client certificate; every panel needs its own identity")
    if m.cert_file is not None and not m.tls:
        problems.append("mqtt.cert_file: a client certificate needs tls = true")
    if m.homeassistant_allow_open and m.require_signed_commands:
        problems.append("mqtt.homeassistant_allow_open: true is not allowed while require_signed_commands is "
                        "true; Home Assistant cannot sign its OPEN payload, so one of the two must go")
    if m.homeassistant_allow_open and not m.homeassistant_discovery:
        problems.append("mqtt.homeassistant_allow_open: true needs homeassistant_discovery = true (it opens "
                        "through the discovered lock entity)")
    for name in ("topic_prefix", "discovery_prefix"):
        value = getattr(m, name)
        if not value or any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
            problems.append(f"mqtt.{name}: {_fmt(value)} is not allowed; expected topic levels without "
                            "wildcards or a leading/trailing '/', e.g. \"panels\"")
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


def format_validation_errors(exc: ValidationError, root: type[BaseModel], *, redact: bool = False) -> list[str]:
    """One line per problem. ``redact`` replaces the bad value by "the value" (for secrets)."""
    _fmt = (lambda v: "the value") if redact else globals()["_fmt"]
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
