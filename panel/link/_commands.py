"""The backend's commands over MQTT: the one definition of their wire format, and their signature.

A command is one JSON object on ``<prefix>/<panel>/commands`` (docs/mqtt.md). Every command carries
an ``id`` (single-use), and freshness proof: ``exp`` (absolute expiry) and/or the panel's current
``nonce`` (panel/link/_freshness.py). With ``mqtt.require_signed_commands`` it also carries ``sig``, an
HMAC-SHA256 with ``secrets.command_key`` over the canonical form defined below.

Every command gets exactly one reply, success and refusal alike: ``{code, message, id, cmd, ...}``
with a stable ``code`` from ``REFUSALS`` (or ``ok``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from typing import Annotated, Any, Literal

import rfc8785
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticSerializationError

from ..directory import AddResidentFields, Name, ResidentId, UnitId
from ..door import OpenFields
from ..errors import PanelError
from ..sdp import SdpRefused, offer_lines
from ..update import UPDATE_ERRORS, VERSION_PATTERN
from ..wire import DuplicateKey, LoneSurrogate, TooDeep, loads_unique

log = logging.getLogger(__name__)

MAX_PAYLOAD = 4096
# An offer carries a WebRTC offer: a few KB from a browser, bounded at 64 KiB; with JSON escaping, ICE
# servers and the envelope it fits 96 KiB. The panel asks the broker (MQTT 5 Maximum Packet Size) not to
# deliver anything past MAX_PACKET at all, so a huge message never reaches its memory.
MAX_OFFER_PAYLOAD = 96 * 1024
MAX_PACKET = 128 * 1024
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,127}$"
# What the panel publishes (hex) and what it signs (version, comma, base64): ASCII only, so a
# comparison never meets text it cannot compare in constant time.
NONCE_PATTERN = r"^[A-Za-z0-9_-]+$"
SIG_PATTERN = r"^[A-Za-z0-9]+,[A-Za-z0-9+/=_-]+$"
SIG_CONTEXT = b"panel-command.v1"
SIG_VERSION = "v1"

# Every refusal code a reply may carry, with what it means (docs/mqtt.md is checked against this).
REFUSALS: dict[str, str] = {
    "malformed": "not a JSON object, too large, or a field is missing or wrong; the message names the field",
    "unsupported_command": "the cmd (or Sensorberg action/value) is not one this panel knows",
    "retained": "the command was published with the retain flag; a retained command is stale by definition",
    "bad_response_topic": "the response topic is not under <prefix>/<panel>/replies/, where the panel may publish",
    "unsigned": "mqtt.require_signed_commands is on and the command has no sig",
    "bad_signature": "sig does not verify with the panel's command_key",
    "cannot_verify": "the command is signed but the panel has no command_key to check it",
    "clock_unsynced": "the panel's clock is not synchronised yet and the command has no nonce",
    "stale_nonce": "the nonce is not the panel's current or previous one",
    "missing_expiry": "the command has neither exp nor nonce",
    "expired": "exp is in the past",
    "expiry_too_far": "exp is further ahead than mqtt.command_max_age_s (+5 s skew)",
    "replayed": "a command with this id was already accepted (ids are single-use, remembered across restarts)",
    "tamper_blocked": "remote unlocks are blocked since the tamper switch tripped",
    "bad_duration": "duration_s is longer than the relay's max_on_s (below 0.5 s or above 43200 s: malformed)",
    "unknown_relay": "there is no relay with that id",
    "no_call": "there is no call in progress",
    "already_answered": "the call was answered already (the message names by whom)",
    "call_over": "the call named has ended",
    "unknown_call": "there is no call with that guid",
    "not_answered": "the door can be opened for a call only once it is answered",
    "busy": "the panel is busy with another call",
    "invalid_actor": "who/actor is empty, too long or not printable",
    "calls_unavailable": "this panel runs without the call manager",
    "bad_sdp": "the offer's sdp is not a usable SDP offer (or is larger than 64 KiB); the message says what is wrong",
    "bad_ice_servers": "ice_servers names a server the panel cannot use (not stun:/turn:, unsupported, or TURN "
                       "without username and credential)",
    "media_unavailable": "this panel runs without media (no [media] section, or its devices or packages failed)",
    "media_stopping": "the panel is stopping; no new media sessions",
    "monitor_disabled": "live view outside a call is off on this panel (media.monitor = false)",
    "too_many_sessions": "the panel has media.max_sessions media sessions open already",
    "no_common_codec": "the offer has no codec the panel can send (H.264 constrained baseline or VP8, and Opus)",
    "media_refused": "the media layer refused the session for another reason; the message names it",
    "unknown_session": "there is no media session with that id (it ended already, or never existed)",
    "ha_open_disabled": "a Home Assistant OPEN arrived but mqtt.homeassistant_allow_open is off",
    "internal_error": "the panel failed to carry the command out (e.g. its disk failed); see its log",
    "access_unavailable": "access (PINs, codes, cards) is not running on this panel yet",
    "code_too_short": "the PIN or code has fewer digits than access.min_code_length",
    "code_too_long": "the PIN or code has more than 12 digits",
    "code_not_digits": "a PIN or code may hold only the digits 0-9",
    "code_unavailable": "the PIN or code cannot be used (choose another; whose it is is not said)",
    "bad_window": "valid_until is not after valid_from, or is in the past",
    "bad_uses": "max_uses is outside 1 to 10000",
    "unknown_door": "doors names a relay this panel does not have",
    "bad_card": "the card number is not 4 to 64 hex digits",
    "card_enrolled": "the card is enrolled already (to this owner or another)",
    "unknown_credential": "there is no live credential with that id",
    # the directory (panel/directory): units from the button map, residents kept on the panel
    "unknown_unit": "there is no unit with that id on the button map (buttons[].unit.id)",
    "unknown_resident": "there is no resident with that id in the panel's directory (removed, or never added)",
    "directory_unavailable": "the panel's credentials are starting (sign-in links need them); retry shortly",
    "too_many_residents": "the panel's directory holds 5000 residents; remove some first",
    "publish_unavailable": "this panel publishes to no SFU (media.publish.targets is empty, or media is not running)",
    "unknown_publish_target": "there is no publish target with that id (media.publish.targets[].id)",
    # update (panel/update, docs/updates.md): refused before anything is downloaded
    **UPDATE_ERRORS,
}


class CommandRefused(PanelError):
    """A command was refused; nothing moved. ``code`` is one of ``REFUSALS``."""

    def __init__(self, code: str, message: str, partial: Any = None) -> None:
        assert code in REFUSALS, code
        self.code = code
        # What could be read of a refused payload anyway (a duplicate key's last value wins here),
        # only to echo its id and cmd in the reply and journal a refused open: never acted on.
        self.partial = partial
        super().__init__(message)


# -- commands --------------------------------------------------------------------------------------


class Strict(BaseModel):
    # strict: "1" is not a number and true is not one either, in the envelope as in the command's fields.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Actor = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Envelope(Strict):
    """What every command carries besides its own fields."""

    id: str = Field(pattern=ID_PATTERN, description="unique per command, e.g. a UUID; never reuse one, even "
                    "for a retry (8-128 characters: letters, digits, . _ : -)")
    exp: float | None = Field(None, gt=0, lt=1e11, description="absolute expiry, Unix seconds; checked once the "
                              "panel's clock is synchronised")
    nonce: str | None = Field(None, min_length=8, max_length=64, pattern=NONCE_PATTERN, description="the panel's "
                              "current nonce from the retained state/freshness topic; required while its clock is "
                              "unsynchronised")
    sig: str | None = Field(None, max_length=200, pattern=SIG_PATTERN, description="\"v1,\" + base64 HMAC-SHA256 of "
                            "the canonical form; required with mqtt.require_signed_commands")


class OpenCommand(Envelope, OpenFields):
    """Release the door (energise a relay). Its fields are ``POST /api/v1/door/open``'s body
    (panel/door/_wire.py), so both channels refuse the same payloads."""

    cmd: Literal["open"]


class AnswerCommand(Envelope):
    """A resident answers the ringing call; the first answer wins."""

    cmd: Literal["answer"]
    who: Actor = Field(description="the resident answering, e.g. a resident id")
    call_guid: str | None = Field(None, max_length=64, description="default: the call in progress")


class DeclineCommand(Envelope):
    """A resident declines the ringing call (before anyone answered)."""

    cmd: Literal["decline"]
    who: Actor = "backend"
    call_guid: str | None = Field(None, max_length=64)


class EndCommand(Envelope):
    """End the call in progress (hang up)."""

    cmd: Literal["end"]
    who: Actor = "backend"
    call_guid: str | None = Field(None, max_length=64)


class StatusCommand(Envelope):
    """Ask for the panel's state (door, call, tamper, freshness) in the reply."""

    cmd: Literal["status"]


IceUrl = Annotated[str, Field(min_length=5, max_length=512)]


class IceServer(Strict):
    """One STUN/TURN server, as in the W3C ``RTCIceServer`` dictionary a browser is configured with."""

    urls: IceUrl | Annotated[list[IceUrl], Field(min_length=1, max_length=8)] = Field(
        description="stun:host:port or turn:host:port?transport=udp|tcp (or turns:), one or a list")
    username: str | None = Field(None, max_length=512, description="TURN user name")
    credential: str | None = Field(None, max_length=512, description="TURN password (e.g. a short-lived TURN REST "
                                   "credential the backend made for this call)")


class OfferCommand(Envelope):
    """A resident's WebRTC offer, relayed by the backend; the reply carries the panel's answer SDP.

    ``mode: "answer"`` answers the call (two-way audio and the camera; the first answer wins);
    ``mode: "monitor"`` is a view-only live view, outside a call too (if ``media.monitor`` allows)."""

    cmd: Literal["offer"]
    who: Actor = Field(description="the resident answering (or watching), e.g. a resident id")
    sdp: str = Field(description="the offer SDP with all its ICE candidates (no trickle), at most 64 KiB")
    mode: Literal["answer", "monitor"] = Field("answer", description="answer: talk to the visitor (the call's "
                                               "answer); monitor: live view, view-only")
    call_guid: str | None = Field(None, max_length=64, description="answer only; default: the call in progress")
    ice_servers: list[IceServer] | None = Field(None, max_length=8, description="STUN/TURN for this session in place "
                                                "of media.ice_servers; [] for none (host candidates only)")


class HangupCommand(Envelope):
    """End a media session. The answerer's session takes its call with it (``ended``, by that resident)."""

    cmd: Literal["hangup"]
    session: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="the session id from the offer's reply")


class PublishCommand(Envelope):
    """Start or stop publishing the entrance to SFUs over WHIP (media.publish, docs/media.md). Works whatever
    media.publish.when says; a start also retries at once a target that was refused its token."""

    cmd: Literal["publish"]
    action: Literal["start", "stop"]
    target: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="one target's id; "
                               "default: every target")


Digits = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9]+$")]
CredentialKind = Literal["pin", "duress", "code", "card"]
RelayIds = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=16)]


class AccessCodeCommand(Envelope):
    """Push a temporary code to the panel (e.g. a courier's); the reply carries the code once."""

    cmd: Literal["access_code"]
    owner: Actor = Field(description="on whose behalf, e.g. the resident the parcel is for")
    label: str = Field(min_length=1, max_length=64, description="what it is for, e.g. \"DHL Tuesday\"")
    code: Digits | None = Field(None, description="the code; default: the panel makes one up")
    valid_from: float | None = Field(None, gt=0, lt=1e11, description="Unix seconds; default: now")
    valid_until: float | None = Field(None, gt=0, lt=1e11, description="Unix seconds; default: no end")
    max_uses: int | None = Field(None, description="releases it allows; default: no limit")
    doors: RelayIds | None = Field(None, description="relay ids it opens; default: the door")


class AccessPinCommand(Envelope):
    """Set a resident's PIN (or duress PIN); it replaces the old one."""

    cmd: Literal["access_pin"]
    owner: Actor
    pin: Digits
    duress: StrictBool = Field(False, description="the duress PIN: opens like the PIN, raises access.duress")


class AccessCardCommand(Envelope):
    """Enrol a card (its number as the reader reports it) for a resident."""

    cmd: Literal["access_card"]
    owner: Actor
    number: str = Field(min_length=4, max_length=96)
    label: str = Field("card", min_length=1, max_length=64)


class AccessRevokeCommand(Envelope):
    """Revoke a PIN, code or card by its id."""

    cmd: Literal["access_revoke"]
    credential: str = Field(min_length=1, max_length=64, description="the credential's id")


class AccessListCommand(Envelope):
    """List live credentials (never their secrets)."""

    cmd: Literal["access_list"]
    owner: Actor | None = None
    kind: CredentialKind | None = None


class ResidentAddCommand(Envelope, AddResidentFields):
    """Add a resident to a unit; the reply carries their first sign-in link (single use, 15 minutes)."""

    cmd: Literal["resident_add"]


class ResidentRenameCommand(Envelope):
    cmd: Literal["resident_rename"]
    resident: ResidentId
    name: Name


class ResidentRemoveCommand(Envelope):
    """Remove a resident: every device they signed in with is signed out, every link stops working."""

    cmd: Literal["resident_remove"]
    resident: ResidentId


class ResidentLinkCommand(Envelope):
    """A new single-use sign-in link for a resident (a new phone, or the last link expired)."""

    cmd: Literal["resident_link"]
    resident: ResidentId


class DirectoryListCommand(Envelope):
    """Units and their residents, with who is signed in where."""

    cmd: Literal["directory_list"]
    unit_id: UnitId | None = None


class KeyRotation(Strict):
    """A new vendor key, signed by one the panel trusts (docs/updates.md, Keys)."""

    key: str = Field(min_length=40, max_length=64, description="the new Ed25519 public key, base64 of 32 bytes")
    signature: str = Field(min_length=80, max_length=100, description="base64 Ed25519 signature by a trusted key "
                           "over \"panel-key-rotation.v1\" LF key")


class UpdateCommand(Envelope):
    """Install a signed release (docs/updates.md). The reply says whether the update started; the rest is
    reported as ``update.*`` events. An older version is refused here: only an installer can force one."""

    cmd: Literal["update"]
    version: str = Field(pattern=VERSION_PATTERN, description="the release's version, e.g. 1.4.2")
    url: str = Field(min_length=8, max_length=2048, description="https:// URL of the release archive")
    size: int = Field(ge=1, description="its size in bytes")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="its SHA-256, lower-case hex")
    signature: str = Field(min_length=80, max_length=100, description="base64 Ed25519 signature of the manifest")
    key_id: str | None = Field(None, pattern=r"^[0-9a-f]{16}$", description="the signing key's id, if known")
    rotation: KeyRotation | None = Field(None, description="a new vendor key signed by a trusted one")


AccessCommand = AccessCodeCommand | AccessPinCommand | AccessCardCommand | AccessRevokeCommand | AccessListCommand
DirectoryCommand = (ResidentAddCommand | ResidentRenameCommand | ResidentRemoveCommand | ResidentLinkCommand
                    | DirectoryListCommand)
Command = Annotated[
    OpenCommand | AnswerCommand | DeclineCommand | EndCommand | StatusCommand | OfferCommand | HangupCommand
    | AccessCodeCommand | AccessPinCommand | AccessCardCommand | AccessRevokeCommand | AccessListCommand
    | UpdateCommand | ResidentAddCommand | ResidentRenameCommand | ResidentRemoveCommand | ResidentLinkCommand
    | DirectoryListCommand | PublishCommand,
    Field(discriminator="cmd"),
]
COMMAND_MODELS: dict[str, type[Envelope]] = {
    "open": OpenCommand, "answer": AnswerCommand, "decline": DeclineCommand, "end": EndCommand,
    "status": StatusCommand, "offer": OfferCommand, "hangup": HangupCommand,
    "access_code": AccessCodeCommand, "access_pin": AccessPinCommand, "access_card": AccessCardCommand,
    "access_revoke": AccessRevokeCommand, "access_list": AccessListCommand, "update": UpdateCommand,
    "resident_add": ResidentAddCommand, "resident_rename": ResidentRenameCommand,
    "resident_remove": ResidentRemoveCommand, "resident_link": ResidentLinkCommand,
    "directory_list": DirectoryListCommand,
    "publish": PublishCommand,
}
_COMMAND = TypeAdapter(Command)


class SensorbergCommand(Envelope):
    """Sensorberg's SetIoTDeviceState shape, accepted as an alias: ``{action: "open", value: "true"}`` is
    ``open``, ``{action: "call", value: "false"}`` is ``end``. The envelope fields are still required."""

    action: Literal["open", "call"]
    value: Literal["true", "false"] | StrictBool
    actor: Actor = "backend"

    def to_command(self) -> OpenCommand | EndCommand:
        value = self.value if isinstance(self.value, bool) else self.value == "true"
        env: dict[str, Any] = {"id": self.id, "exp": self.exp, "nonce": self.nonce, "sig": self.sig}
        if self.action == "open" and value:
            return OpenCommand(cmd="open", actor=self.actor, **env)
        if self.action == "call" and not value:
            return EndCommand(cmd="end", who=self.actor, **env)
        raise CommandRefused("unsupported_command", f"Sensorberg action {self.action!r} with value "
                             f"{str(value).lower()!r} is not supported; use open/true or call/false")


AnyCommand = (OpenCommand | AnswerCommand | DeclineCommand | EndCommand | StatusCommand | OfferCommand | HangupCommand
              | AccessCommand | UpdateCommand | DirectoryCommand
              | PublishCommand)


# -- replies ---------------------------------------------------------------------------------------


class Reply(BaseModel):
    """Every reply, refusals included. ``code`` is ``ok`` or one of the refusal codes."""

    code: str = Field(description="ok, or a stable refusal code")
    message: str = Field(description="what happened, for a human")
    id: str | None = Field(None, description="the command's id, when it could be read")
    cmd: str | None = Field(None, description="the command, when it could be read")


class OpenReply(Reply):
    access_id: str = Field(description="the access-log entry of this release")
    relay: str
    duration_s: float
    cause: Literal["call", "remote"]
    call_guid: str | None


class CallReply(Reply):
    call: dict[str, Any] = Field(description="the call after the command (as in GET /api/v1/calls/{guid})")


class StatusReply(Reply):
    state: dict[str, Any] = Field(description="door, tamper, call and freshness, as on the state topics")


class OfferReply(Reply):
    sdp: str = Field(description="the panel's answer SDP, with all its candidates: hand it to the resident's "
                     "setRemoteDescription({type: \"answer\", sdp})")
    session: str = Field(description="the media session's id (for hangup, and in the panel's log)")
    call_guid: str | None = Field(description="the call the session answered or joined; null for live view")
    role: Literal["answerer", "viewer"] = Field(description="answerer: two-way audio and camera; viewer: camera "
                                                "only (live view, or a view-only join)")


class HangupReply(Reply):
    session: str
    call_guid: str | None
    call: dict[str, Any] | None = Field(description="the call after the hangup (ended if this was its answerer)")


class AccessReply(Reply):
    credentials: list[dict[str, Any]] = Field(description="the credential(s) made, revoked or listed (id, kind, "
                                              "owner, label, doors, window, uses; never a secret)")
    access_code: str | None = Field(None, description="access_code: the code, this once (give it to the courier)")
    qr_payload: str | None = Field(None, description="access_code: what its QR code carries")


class DirectoryReply(Reply):
    residents: list[dict[str, Any]] = Field(description="the resident(s) added, renamed, removed or listed (id, "
                                            "unit_id, name, sessions: token_id, device, created_at)")
    signin_path: str | None = Field(None, description="resident_add, resident_link: the sign-in link without the "
                                    "panel's address (/resident#signin=<code>); works once, for 15 minutes")


class PublishReply(Reply):
    publishing: dict[str, Any] = Field(description="when, and each target's state after the command (state, "
                                       "wanted, attempts, reason, error, published_s, retry_in_s)")


class UpdateReply(Reply):
    update: dict[str, Any] = Field(description="the update agent's state (as GET /api/v1/update)")


REPLY_MODELS: dict[str, type[Reply]] = {"open": OpenReply, "answer": CallReply, "decline": CallReply,
                                        "end": CallReply, "status": StatusReply, "offer": OfferReply,
                                        "hangup": HangupReply, "access_code": AccessReply,
                                        "access_pin": AccessReply, "access_card": AccessReply,
                                        "access_revoke": AccessReply, "access_list": AccessReply,
                                        "update": UpdateReply, "resident_add": DirectoryReply,
                                        "resident_rename": DirectoryReply, "resident_remove": DirectoryReply,
                                        "resident_link": DirectoryReply, "directory_list": DirectoryReply,
                                        "publish": PublishReply}


def reply_bytes(reply: Reply) -> bytes:
    """The reply as it is published: JSON in UTF-8. Every command gets exactly one reply, so one that
    cannot be encoded (text the panel put in it that is not UTF-8: a bug) still goes out, as
    ``internal_error`` with whatever of its id and cmd can be carried."""
    try:
        return reply.model_dump_json().encode("utf-8")
    except (PydanticSerializationError, UnicodeEncodeError) as e:
        log.error("reply %s to command %r could not be encoded: %s", reply.code, reply.id, e)
        return Reply(code="internal_error", message="the panel could not encode its reply; see its log",
                     id=_echo(reply.id, 128), cmd=_echo(reply.cmd, 32)).model_dump_json().encode("utf-8")


# -- parsing ---------------------------------------------------------------------------------------


def _too_large(size: int, partial: Any = None) -> CommandRefused:
    return CommandRefused("malformed", f"the payload is {size} bytes; at most {MAX_PAYLOAD} are allowed "
                          f"({MAX_OFFER_PAYLOAD} for an offer)", partial=partial)


def decode(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object, or ``CommandRefused("malformed")``."""
    if len(payload) > MAX_OFFER_PAYLOAD:
        raise _too_large(len(payload))
    try:
        obj = loads_unique(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise CommandRefused("malformed", "the payload is not UTF-8 text") from None
    except (DuplicateKey, LoneSurrogate) as e:
        raise CommandRefused("malformed", str(e), partial=json.loads(payload)) from None
    except TooDeep as e:
        raise CommandRefused("malformed", str(e)) from None
    except ValueError as e:
        raise CommandRefused("malformed", f"the payload is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CommandRefused("malformed", f"expected a JSON object, got {type(obj).__name__}")
    if len(payload) > MAX_PAYLOAD and obj.get("cmd") != "offer":
        raise _too_large(len(payload), partial=obj)  # it was read, so its reply echoes its id
    return obj


def _problems(e: ValidationError) -> str:
    out = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if p not in COMMAND_MODELS) or "(object)"
        if err["type"] == "extra_forbidden":
            out.append(f"{loc}: unknown field")
        elif err["type"] == "missing":
            out.append(f"{loc}: is required")
        else:
            out.append(f"{loc}: {err['msg']}")
    return "; ".join(out)


def parse(obj: dict[str, Any]) -> AnyCommand:
    """Validate a decoded command (either shape); ``CommandRefused`` names what is wrong."""
    if "cmd" not in obj and "action" in obj:
        try:
            return SensorbergCommand.model_validate(obj).to_command()
        except ValidationError as e:
            if any(err["loc"][:1] in (("action",), ("value",)) and err["type"] == "literal_error"
                   for err in e.errors()):
                raise CommandRefused("unsupported_command", f"unsupported Sensorberg command: {_problems(e)}") from None
            raise CommandRefused("malformed", _problems(e)) from None
    cmd = obj.get("cmd")
    if cmd is None:
        raise CommandRefused("malformed", "cmd: is required (one of " + ", ".join(COMMAND_MODELS) + ")")
    if not isinstance(cmd, str):
        raise CommandRefused("malformed", f"cmd: must be a string (one of {', '.join(COMMAND_MODELS)}), not "
                             f"{type(cmd).__name__}")
    if cmd not in COMMAND_MODELS:
        raise CommandRefused("unsupported_command", f"cmd {cmd!r} is not supported; expected one of "
                             + ", ".join(COMMAND_MODELS))
    try:
        command: AnyCommand = _COMMAND.validate_python(obj)
    except ValidationError as e:
        raise CommandRefused("malformed", _problems(e)) from None
    if isinstance(command, OfferCommand):
        if command.mode == "monitor" and command.call_guid is not None:
            raise CommandRefused("malformed", "call_guid: only an answer names a call; a monitor session is a live "
                                 "view (leave call_guid out, or use mode \"answer\")")
        check_sdp(command.sdp)
    return command


def check_sdp(text: str) -> None:
    """Refuse (``bad_sdp``) what is not an SDP offer, before any of it reaches the WebRTC stack: the
    bounds and syntax of panel/sdp.py. The media layer then checks ICE credentials, fingerprints,
    directions and codecs (also ``bad_sdp``, ``no_common_codec``)."""
    try:
        offer_lines(text)
    except SdpRefused as e:
        raise CommandRefused("bad_sdp", str(e)) from None


_ECHOABLE = re.compile(r"^[^\x00-\x1f\x7f]*$")


def _echo(value: Any, limit: int) -> str | None:
    """``value`` if a reply can carry it back as it came: a short string of printable UTF-8 (a lone
    surrogate from a ``\\ud800`` escape cannot be encoded, so the reply could not be sent at all)."""
    if not isinstance(value, str) or len(value) > limit or not _ECHOABLE.match(value):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def best_effort_ids(obj: Any) -> tuple[str | None, str | None]:
    """``(id, cmd)`` for a refusal's reply, from whatever could be decoded and can be echoed."""
    if not isinstance(obj, dict):
        return None, None
    cid = _echo(obj.get("id"), 128)
    cmd = _echo(obj.get("cmd"), 32)
    if cmd is None:
        cmd = _echo(obj.get("action"), 32)
    return cid, cmd


# -- canonical form and signature ------------------------------------------------------------------


def jcs(value: Any) -> str:
    """RFC 8785 JSON canonicalization (JCS), by the ``rfc8785`` package: sorted keys (UTF-16 order), no
    whitespace, ECMAScript number format. Raises ``rfc8785.CanonicalizationError`` (a ``ValueError``) for
    what JCS cannot represent: NaN, infinities, integers beyond 2**53, unpaired surrogates."""
    return rfc8785.dumps(value).decode("utf-8")


def canonical(panel_id: str, obj: dict[str, Any]) -> bytes:
    """What is signed: ``panel-command.v1`` LF panel id LF JCS(the command without ``sig``).

    The panel id binds a signature to one panel, so a command signed for panel A is refused by B
    even when both share a key."""
    body = {k: v for k, v in obj.items() if k != "sig"}
    try:
        return SIG_CONTEXT + b"\n" + panel_id.encode() + b"\n" + rfc8785.dumps(body)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as e:
        raise CommandRefused("malformed", f"the command cannot be canonicalized (RFC 8785): {e}") from None


def sign(key: str, panel_id: str, obj: dict[str, Any]) -> str:
    mac = hmac.new(key.encode("utf-8"), canonical(panel_id, obj), hashlib.sha256).digest()
    return f"{SIG_VERSION}," + base64.b64encode(mac).decode()


def signed(key: str, panel_id: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its ``sig`` (for backends and tests written in Python)."""
    return {**obj, "sig": sign(key, panel_id, obj)}


def verify(key: str, panel_id: str, obj: dict[str, Any]) -> bool:
    given = obj.get("sig")
    if not isinstance(given, str):
        return False
    expected = sign(key, panel_id, obj)
    # surrogatepass: whatever text arrived compares (unequal) instead of raising
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())
