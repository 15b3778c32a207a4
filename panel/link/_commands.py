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

from ..door import OpenFields
from ..errors import PanelError
from ..update import UPDATE_ERRORS, VERSION_PATTERN
from ..wire import DuplicateKey, loads_unique

MAX_PAYLOAD = 4096
# An offer carries a WebRTC offer: a few KB from a browser, bounded at 64 KiB; with JSON escaping, ICE
# servers and the envelope it fits 96 KiB. The panel asks the broker (MQTT 5 Maximum Packet Size) not to
# deliver anything past MAX_PACKET at all, so a huge message never reaches its memory.
MAX_OFFER_PAYLOAD = 96 * 1024
MAX_SDP_BYTES = 64 * 1024
MAX_PACKET = 128 * 1024
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,127}$"
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
    nonce: str | None = Field(None, min_length=8, max_length=64, description="the panel's current nonce from "
                              "the retained state/freshness topic; required while its clock is unsynchronised")
    sig: str | None = Field(None, max_length=200, description="\"v1,\" + base64 HMAC-SHA256 of the canonical "
                            "form; required with mqtt.require_signed_commands")


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
Command = Annotated[
    OpenCommand | AnswerCommand | DeclineCommand | EndCommand | StatusCommand | OfferCommand | HangupCommand
    | AccessCodeCommand | AccessPinCommand | AccessCardCommand | AccessRevokeCommand | AccessListCommand
    | UpdateCommand | PublishCommand,
    Field(discriminator="cmd"),
]
COMMAND_MODELS: dict[str, type[Envelope]] = {
    "open": OpenCommand, "answer": AnswerCommand, "decline": DeclineCommand, "end": EndCommand,
    "status": StatusCommand, "offer": OfferCommand, "hangup": HangupCommand,
    "access_code": AccessCodeCommand, "access_pin": AccessPinCommand, "access_card": AccessCardCommand,
    "access_revoke": AccessRevokeCommand, "access_list": AccessListCommand, "update": UpdateCommand,
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
              | AccessCommand | UpdateCommand | PublishCommand)


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
                                        "update": UpdateReply, "publish": PublishReply}


# -- parsing ---------------------------------------------------------------------------------------


def _too_large(size: int) -> CommandRefused:
    return CommandRefused("malformed", f"the payload is {size} bytes; at most {MAX_PAYLOAD} are allowed "
                          f"({MAX_OFFER_PAYLOAD} for an offer)")


def decode(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object, or ``CommandRefused("malformed")``."""
    if len(payload) > MAX_OFFER_PAYLOAD:
        raise _too_large(len(payload))
    try:
        obj = loads_unique(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise CommandRefused("malformed", "the payload is not UTF-8 text") from None
    except DuplicateKey as e:
        raise CommandRefused("malformed", str(e), partial=json.loads(payload)) from None
    except RecursionError:
        raise CommandRefused("malformed", "the payload is not JSON (nested too deeply)") from None
    except ValueError as e:
        raise CommandRefused("malformed", f"the payload is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CommandRefused("malformed", f"expected a JSON object, got {type(obj).__name__}")
    if len(payload) > MAX_PAYLOAD and obj.get("cmd") != "offer":
        raise _too_large(len(payload))
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


_SDP_LINE = re.compile(r"^[a-zA-Z]=[^\x00-\x08\x0a-\x1f\x7f]*$")


def check_sdp(text: str) -> None:
    """Refuse (``bad_sdp``) what is not an SDP offer, before any of it reaches the WebRTC stack.

    The syntax of RFC 8866 (``v=0`` first, then ``<type>=<value>`` lines) plus the least an offer
    needs: an origin, a session name and an audio or video section. The media layer then checks ICE
    credentials, fingerprints and codecs (also ``bad_sdp``, ``no_common_codec``)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise CommandRefused("bad_sdp", "the SDP contains an unpaired UTF-16 surrogate; SDP is UTF-8 text") from None
    if not text.strip():
        raise CommandRefused("bad_sdp", "sdp is empty; send the resident's offer (pc.localDescription.sdp)")
    if size > MAX_SDP_BYTES:
        raise CommandRefused("bad_sdp", f"the SDP is {size} bytes; at most {MAX_SDP_BYTES} are allowed")
    lines = text.split("\n")
    if lines[-1] in ("", "\r"):
        lines.pop()  # the line break that ends the last line
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if lines[0] != "v=0":
        raise CommandRefused("bad_sdp", f"an SDP starts with the line \"v=0\", this one with {lines[0][:40]!r}")
    for n, line in enumerate(lines, 1):
        if not _SDP_LINE.match(line):
            raise CommandRefused("bad_sdp", f"SDP line {n} is not <type>=<value> (one letter, '=', printable text): "
                                 f"{line[:40]!r}")
    first_media = next((i for i, line in enumerate(lines) if line.startswith("m=")), len(lines))
    session = {line[0] for line in lines[:first_media]}
    for kind, what in (("o", "origin (o=)"), ("s", "session name (s=)")):
        if kind not in session:
            raise CommandRefused("bad_sdp", f"the SDP has no {what} line before its first m= section")
    if not any(line.startswith(("m=audio ", "m=video ")) for line in lines[first_media:]):
        raise CommandRefused("bad_sdp", "the SDP has no audio or video section (m=audio / m=video)")


def best_effort_ids(obj: Any) -> tuple[str | None, str | None]:
    """``(id, cmd)`` for a refusal's reply, from whatever could be decoded."""
    if not isinstance(obj, dict):
        return None, None
    cid = obj.get("id") if isinstance(obj.get("id"), str) and len(obj["id"]) <= 128 else None
    cmd = obj.get("cmd") if isinstance(obj.get("cmd"), str) and len(obj["cmd"]) <= 32 else None
    if cmd is None and isinstance(obj.get("action"), str) and len(obj["action"]) <= 32:
        cmd = obj["action"]
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
    return hmac.compare_digest(given.encode(), expected.encode())
