"""The panel's one exception tree and the one table from error code to HTTP status and MQTT reply.

Every error the panel raises on purpose is a ``PanelError`` with a stable ``code``; its message tells the
installer (or the API client) what to do next. Domain code never decides an HTTP status: the API's single
handler and every route look the status up in ``CODES``, the MQTT control replies ``{"code", "message"}``
with the same code, and docs/errors.md is generated from this table. A code that is not in the table is a
bug the test suite finds (tests/test_errors.py scans the code for them).

```text
PanelError
├── ConfigError        config_invalid (the problems name each bad key)
├── SecretsError       secrets_invalid
│   └── WebhookSecretError
├── HardwareError      hardware_error
├── StoreError         store_error
├── UnlockRefused      a release refused: tamper_blocked, unknown_relay, bad_duration, not_your_call, ...
├── CallError          a call command refused: no_call, already_answered, call_over, unknown_call, ...
├── CredentialError    weak_password, common_password, credential_unreadable
├── CommandRefused     an MQTT command refused before it reached a service: malformed, replayed, ...
├── DirectoryError     a resident or sign-in refused: unknown_unit, unknown_resident, signin_code_used, ...
├── LinkRefused        a call-link request refused: invalid_link, link_expired, too_many_links, ...
├── EnrolError         enrolment failed, nothing applied: enrol_code_wrong, enrol_broker_refused, ... (panel/enrol)
└── MediaError         media_error
    ├── DeviceError    media_device_error
    ├── SessionRefused invalid_sdp, too_many_sessions, no_common_codec, ...
    └── TokenRefused   unauthenticated, invalid_token, token_revoked, token_expired, ...
```
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """What a code means, the HTTP status it is answered with, and whether an MQTT reply can carry it."""

    status: int
    meaning: str
    mqtt: bool = False


def _c(status: int, meaning: str, mqtt: bool = False) -> Code:
    return Code(status, meaning, mqtt)


# The one table. Sorted by status, then code.
CODES: dict[str, Code] = {
    # 400: the request itself is unusable
    "bad_request": _c(400, "the HTTP request is malformed"),
    "host_not_allowed": _c(400, "the Host header names a host this panel does not serve (api.allowed_hosts)"),
    "invalid_ice_servers": _c(400, "ice_servers names a server the panel cannot use"),
    "invalid_message": _c(400, "a data-channel or session message is not one the panel understands"),
    "invalid_sdp": _c(400, "the SDP offer is not usable (empty, too large, no media, or refused by the WebRTC stack)"),
    # 401: no usable credential
    "invalid_credentials": _c(401, "wrong installer password"),
    "invalid_link": _c(401, "the call link is not one this panel issued"),
    "invalid_subscription": _c(401, "the call-link subscription is unknown or ended"),
    "invalid_token": _c(401, "the credential is not one this panel issued"),
    "link_expired": _c(401, "the call link has expired"),
    "link_revoked": _c(401, "the call link was revoked"),
    "signin_code_expired": _c(401, "the sign-in link has expired; ask the installer (or the backend) for a new one"),
    "signin_code_invalid": _c(401, "the sign-in link is not one this panel issued (mistyped or cut off)"),
    "signin_code_used": _c(401, "the sign-in link was used already (each works once); ask for a new one"),
    "resident_revoked": _c(401, "the resident was removed from the directory; their links no longer work"),
    "signature_invalid": _c(401, "the picture URL's signature is not valid for this call"),
    "signature_missing": _c(401, "the signed picture URL needs both exp and sig"),
    "token_expired": _c(401, "the credential has expired"),
    "token_revoked": _c(401, "the credential was revoked"),
    "unauthenticated": _c(401, "no credential was given"),
    # 403: the credential may not do this
    "acting_as_other": _c(403, "only the backend names someone else as the actor"),
    "forbidden": _c(403, "the credential's role or scope does not allow this"),
    "signature_expired": _c(403, "the signed picture URL expired"),
    "links_disabled": _c(403, "call links are off on this panel (links.enabled = false)"),
    "live_view_not_allowed": _c(403, "the credential's role sees the camera only at the moments media.live_view "
                                     "names (e.g. during a call of its own unit)"),
    "live_view_other_call": _c(403, "another unit's call is in progress: live view would show its visitor "
                                    "(media.live_view.into_other_calls)"),
    "config_local_only": _c(403, "the key can be changed only in the config file on the panel; errors names the keys"),
    "locked_key": _c(403, "this configuration key can be changed only in the file on the panel"),
    "monitor_disabled": _c(403, "live view outside a call is off on this panel (media.monitor = false)", mqtt=True),
    "not_allowed_for_role": _c(403, "the credential's role may not do this", mqtt=True),
    "not_issuable": _c(403, "the credential may not issue a credential of that role"),
    "not_your_call": _c(403, "the call was answered by someone else", mqtt=True),
    "not_your_session": _c(403, "the media session belongs to another credential"),
    "not_your_unit": _c(403, "the call rings another unit"),
    "relay_not_allowed": _c(403, "a resident opens only the relays of the unit whose call they answered"),
    "not_your_credential": _c(403, "residents manage only their own PINs, codes and cards"),
    "route_not_authorised": _c(403, "no role may call this route"),
    # 404: the thing named does not exist
    "no_snapshot": _c(404, "no snapshot for that call"),
    "not_configured": _c(404, "the feature is not configured on this panel"),
    "not_found": _c(404, "no such route or resource"),
    "unknown_button": _c(404, "there is no button with that id"),
    "unknown_call": _c(404, "there is no call with that guid", mqtt=True),
    "unknown_event": _c(404, "there is no event with that id"),
    "unknown_link": _c(404, "there is no call link with that id"),
    "unknown_publish_target": _c(404, "there is no publish target with that id (media.publish.targets[].id)",
                                 mqtt=True),
    "unknown_relay": _c(404, "there is no relay with that id", mqtt=True),
    "unknown_session": _c(404, "there is no media session with that id (it ended already, or never existed)",
                          mqtt=True),
    "unknown_credential": _c(404, "there is no such PIN, code or card (of yours)"),
    "unknown_resident": _c(404, "there is no resident with that id in the panel's directory", mqtt=True),
    "unknown_unit": _c(404, "there is no unit with that id on the button map (buttons[].unit.id)", mqtt=True),
    "unknown_token": _c(404, "there is no credential with that id"),
    # 405, 413, 415
    "method_not_allowed": _c(405, "the route does not take that method"),
    "trickle_not_supported": _c(405, "trickle ICE is not supported: send the complete offer"),
    "body_too_large": _c(413, "the request body is larger than api.max_body_bytes"),
    "unsupported_media_type": _c(415, "the body's content type is not the one the route takes"),
    # 409: the request is fine but the panel's state forbids it
    "already_answered": _c(409, "the call was answered already (the message names by whom)", mqtt=True),
    "already_joined": _c(409, "the call link was used to join already"),
    "busy": _c(409, "the panel is busy with another call", mqtt=True),
    "call_in_progress": _c(409, "a call is in progress; try again when it is over"),
    "call_over": _c(409, "the call named has ended", mqtt=True),
    "component_exists": _c(409, "a component of that name runs already"),
    "config_read_only": _c(409, "the panel was started without a writable config file"),
    "config_unreadable": _c(409, "the config file on the panel cannot be read"),
    "invalid_transition": _c(409, "the call cannot move to that state from the one it is in"),
    "no_call": _c(409, "there is no call in progress", mqtt=True),
    "no_config_file": _c(409, "the panel was started without a config file"),
    "not_answered": _c(409, "the door can be opened for a call only once it is answered", mqtt=True),
    "static_credential": _c(409, "the secrets file's credential cannot be revoked over the API"),
    "tamper_active": _c(409, "the tamper switch still reads tampered"),
    "tamper_blocked": _c(409, "remote unlocks are blocked since the tamper switch tripped", mqtt=True),
    "card_enrolled": _c(409, "the card is enrolled to someone already"),
    "code_unavailable": _c(409, "that code is taken (or too close to one that is)"),
    "learning_busy": _c(409, "a card is being learnt already"),
    "tone_playing": _c(409, "a test tone is playing"),
    "too_many_links": _c(409, "the call has as many links as links.max_per_call"),
    "too_many_participants": _c(409, "the call has as many guests as it may"),
    "too_many_residents": _c(409, "the panel's directory holds as many residents as it may", mqtt=True),
    "too_many_tokens": _c(409, "the issuer holds as many credentials as it may"),
    "issuer_quota_reached": _c(409, "the issuer holds api.tokens_per_issuer live credentials; revoke some or let "
                                    "them expire"),
    # 422: a field is wrong (the message names it)
    "bad_duration": _c(422, "duration_s is outside 0.5 s to the relay's max_on_s", mqtt=True),
    "config_invalid": _c(422, "the configuration is not valid; every bad key is named"),
    "invalid_actor": _c(422, "who/actor is empty, too long or not printable", mqtt=True),
    "invalid_mute": _c(422, "a mute names neither audio nor video"),
    "invalid_name": _c(422, "the display name is empty or too long"),
    "invitee_in_call": _c(422, "the invitee answered or takes part in the call already"),
    "reserved_subject": _c(422, "the name is one the panel's own actors use"),
    "invalid_query": _c(422, "a query parameter is wrong"),
    "invalid_request": _c(422, "a field of the request is missing or wrong; the message names it"),
    "bad_card": _c(422, "the card number is not one a reader reports"),
    "bad_uses": _c(422, "max_uses must be at least 1"),
    "bad_window": _c(422, "the validity window ends before it starts (or has ended)"),
    "code_not_digits": _c(422, "a code is digits only"),
    "code_too_long": _c(422, "the code is longer than the panel takes"),
    "unknown_door": _c(422, "a code names a relay the panel does not have"),
    "code_too_short": _c(422, "the code is shorter than access.min_code_length"),
    "owner_required": _c(422, "the credential needs an owner"),
    "weak_password": _c(422, "the password is too short or too repetitive"),
    "common_password": _c(422, "the password is a common one, or is made from one (zxcvbn's lists and patterns)"),
    # 429: too much
    "login_in_progress": _c(429, "a login from this address is being checked; wait for it"),
    "login_locked": _c(429, "too many failed logins from this address; wait Retry-After seconds"),
    "rate_limited": _c(429, "too many requests from this address; wait Retry-After seconds"),
    "too_many_previews": _c(429, "too many call-link previews are open"),
    "streams_reserved": _c(429, "the free event streams are kept for the installer and residents "
                                "(api.streams.reserved_*)"),
    "too_many_sessions_for_credential": _c(429, "the credential holds media.max_sessions_per_credential media "
                                                "sessions already", mqtt=True),
    "too_many_sessions_from_address": _c(429, "the address holds media.max_sessions_per_address media sessions "
                                              "already"),
    "too_many_streams": _c(429, "too many event streams and long-polls are open"),
    "too_many_streams_for_credential": _c(429, "the credential holds api.streams.per_credential streams already"),
    "too_many_streams_from_address": _c(429, "the address holds api.streams.per_address streams already"),
    "too_many_viewers_for_credential": _c(429, "the credential holds media.mjpeg.max_viewers_per_credential MJPEG "
                                               "viewers already"),
    "too_many_viewers_from_address": _c(429, "the address holds media.mjpeg.max_viewers_per_address MJPEG viewers "
                                             "already"),
    # 500: the panel failed
    "credential_error": _c(500, "the installer credential could not be read or written"),
    "credential_unreadable": _c(500, "the installer credential file is unreadable or damaged"),
    "no_card": _c(408, "no card was presented to the reader in time"),
    "hardware_error": _c(500, "a GPIO device could not be set up"),
    "internal_error": _c(500, "the panel failed to carry the request out; see its log", mqtt=True),
    "panel_error": _c(500, "the panel failed"),
    "secrets_invalid": _c(500, "the secrets file is missing, unreadable or readable by others"),
    "snapshot_error": _c(500, "the visitor's picture could not be stored"),
    "tls_invalid": _c(500, "the API's certificate or key is unusable"),
    "store_error": _c(500, "the durable store failed (disk full, corrupt, read-only)"),
    # 503: a part is not running
    "canceled": _c(503, "the picture was not taken: the panel is stopping"),
    "media_device_error": _c(503, "a capture or playback device failed; it is retried"),
    "media_error": _c(503, "the media layer failed"),
    "media_refused": _c(503, "the media layer refused the session for another reason; the message names it",
                        mqtt=True),
    "media_stopping": _c(503, "the panel is stopping; no new media sessions", mqtt=True),
    "media_unavailable": _c(503, "this panel runs without media (no [media] section, or its devices or packages "
                                 "failed)", mqtt=True),
    "mjpeg_disabled": _c(503, "MJPEG is off on this panel"),
    "no_camera": _c(503, "this panel has no camera"),
    "no_microphone": _c(503, "this panel has no microphone"),
    "publish_unavailable": _c(503, "this panel publishes to no SFU (media.publish.targets is empty, or media is "
                                   "not running)", mqtt=True),
    "no_sound": _c(503, "no sound was measured"),
    "no_picture": _c(503, "the camera gave no picture in time"),
    "access_unavailable": _c(503, "this panel runs without door codes and cards (no [access] section)"),
    "directory_unavailable": _c(503, "the directory of residents is starting; try again shortly", mqtt=True),
    "not_ready": _c(503, "the part is starting; try again shortly"),
    "sessions_reserved": _c(503, "the free media sessions are kept for the installer and residents "
                                 "(media.sessions_reserved)", mqtt=True),
    "too_many_sessions": _c(503, "the panel has media.max_sessions media sessions open already", mqtt=True),
    "too_many_viewers": _c(503, "the MJPEG stream has as many viewers as media.mjpeg.max_viewers"),
    "viewers_reserved": _c(503, "the free MJPEG viewers are kept for the installer, residents and calls "
                                "(media.mjpeg.viewers_reserved)"),
    # updates (panel/update, docs/updates.md): refused before the running release is touched
    "update_disabled": _c(409, "this panel has no update root (update.root is not set)", mqtt=True),
    "update_busy": _c(409, "an update is in progress already; one at a time", mqtt=True),
    "update_in_trial": _c(409, "the running release is on trial (not committed yet); wait for its health "
                               "check", mqtt=True),
    "update_not_newer": _c(409, "the version is not newer than the running one (send force to reinstall or "
                                "downgrade)", mqtt=True),
    "update_untrusted_key": _c(422, "the signature names a key this panel does not trust", mqtt=True),
    "update_bad_signature": _c(422, "the signature does not verify with the panel's pinned keys", mqtt=True),
    "update_bad_rotation": _c(422, "the key rotation is not signed by a key the panel trusts", mqtt=True),
    "update_too_large": _c(422, "the release is larger than update.max_size_mb, or the server sent more than "
                                "size", mqtt=True),
    "update_download_failed": _c(422, "the download failed after its retries (the message names the last "
                                      "error)", mqtt=True),
    "update_size_mismatch": _c(422, "the download is not the signed size", mqtt=True),
    "update_hash_mismatch": _c(422, "the download's SHA-256 is not the signed one", mqtt=True),
    "update_bad_release": _c(422, "the archive is not a release (no release.json, another version, unsafe "
                                  "paths)", mqtt=True),
    "update_install_failed": _c(422, "the release could not be written to the inactive slot (disk full, I/O "
                                     "error)", mqtt=True),
    "update_interrupted": _c(422, "the panel stopped (power cut, crash, kill) before the switch; it runs the release "
                                  "it ran", mqtt=True),
    # enrolment (panel/enrol, docs/enrolment.md): every failure leaves the panel as it was
    "enrol_not_redeemed": _c(409, "the backend has not redeemed the enrolment code yet; redeem it in the backend "
                                  "account (the panel asks again by itself)"),
    "enrol_pending": _c(409, "the backend holds the certificate request for approval (EST 202); the panel asks "
                             "again by itself"),
    "already_enrolled": _c(409, "the panel is enrolled; Enrol again (POST /api/v1/enrol/again) shows a new code"),
    "enrol_code_wrong": _c(502, "the backend holds a different code for this panel id (mistyped); redeem the code "
                                "shown again"),
    "enrol_code_expired": _c(502, "the backend's redemption of the code expired or was used; redeem the code shown "
                                  "again"),
    "enrol_csr_refused": _c(502, "the backend refused the certificate request; the message quotes its reason"),
    "enrol_wrong_identity": _c(502, "the certificate issued is for another panel id or key, or not valid now; "
                                    "nothing was applied"),
    "enrol_broker_refused": _c(502, "the broker did not accept the new certificate (TLS, CONNACK or ACL); nothing "
                                    "was applied"),
    "enrol_bad_response": _c(502, "the EST endpoint's answer is not what docs/enrolment.md specifies"),
    "enrol_renew_refused": _c(502, "the backend refused to renew the certificate (revoked or unknown); enrol "
                                   "again with a new code"),
    "enrol_unreachable": _c(503, "the EST endpoint cannot be reached (network, TLS, enrol.ca_file); the panel "
                                 "tries again by itself"),
    # MQTT-only refusals (the command never reached a service); the status is what HTTP would say
    "bad_ice_servers": _c(422, "ice_servers names a server the panel cannot use (not stun:/turn:, unsupported, or "
                               "TURN without username and credential)", mqtt=True),
    "bad_response_topic": _c(403, "the response topic is not under <prefix>/<panel>/replies/, where the panel may "
                                  "publish", mqtt=True),
    "bad_sdp": _c(400, "the offer's sdp is not a usable SDP offer (or is larger than 64 KiB); the message says "
                       "what is wrong", mqtt=True),
    "bad_signature": _c(401, "sig does not verify with the panel's command_key", mqtt=True),
    "links_unavailable": _c(503, "call links are not set up on this panel"),
    "calls_unavailable": _c(409, "this panel runs without the call manager", mqtt=True),
    "cannot_verify": _c(503, "the command is signed but the panel has no command_key to check it", mqtt=True),
    "clock_unsynced": _c(401, "the panel's clock is not synchronised yet and the command has no nonce", mqtt=True),
    "expired": _c(401, "exp is in the past", mqtt=True),
    "expiry_too_far": _c(401, "exp is further ahead than mqtt.command_max_age_s (+5 s skew)", mqtt=True),
    "ha_open_disabled": _c(403, "a Home Assistant OPEN arrived but mqtt.homeassistant_allow_open is off", mqtt=True),
    "malformed": _c(422, "not a JSON object, too large, or a field is missing or wrong; the message names the field",
                    mqtt=True),
    "missing_expiry": _c(401, "the command has neither exp nor nonce", mqtt=True),
    "no_common_codec": _c(400, "the offer has no codec the panel can send (H.264 constrained baseline or VP8, and "
                               "Opus)", mqtt=True),
    "replayed": _c(409, "a command with this id was already accepted (ids are single-use, remembered across "
                        "restarts)", mqtt=True),
    "retained": _c(400, "the command was published with the retain flag; a retained command is stale by definition",
                   mqtt=True),
    "stale_nonce": _c(401, "the nonce is not the panel's current or previous one", mqtt=True),
    "unsigned": _c(401, "mqtt.require_signed_commands is on and the command has no sig", mqtt=True),
    "unsupported_command": _c(400, "the cmd (or Sensorberg action/value) is not one this panel knows", mqtt=True),
}


def http_status(code: str) -> int:
    """The HTTP status of ``code``; 500 for a code missing from the table (a bug the tests catch)."""
    entry = CODES.get(code)
    return entry.status if entry is not None else 500


class PanelError(Exception):
    """Base class for every error the panel raises on purpose."""

    code = "panel_error"


class ConfigError(PanelError):
    """The configuration is unusable. ``problems`` holds one line per bad key."""

    code = "config_invalid"

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


class SecretsError(PanelError):
    """The secrets file is missing, unreadable, or readable by others, or holds a published example."""

    code = "secrets_invalid"


class HardwareError(PanelError):
    """A GPIO device could not be set up (pin busy, no GPIO chip, wrong pin name)."""

    code = "hardware_error"


class UnlockRefused(PanelError):
    """An unlock request was refused; nothing moved. ``code`` says why, stably."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class CallError(PanelError):
    """A call command could not be carried out; nothing changed. ``code`` says why, stably:
    no_call, already_answered, call_over, unknown_call, busy, not_answered, invalid_actor."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class StoreError(PanelError):
    """The durable store failed (disk full, corrupt database, read-only file system)."""

    code = "store_error"


class ConfigChangeRefused(PanelError):
    """A configuration change was refused; nothing was written or applied. ``code`` says why, stably:
    config_local_only (a key only the file on the panel may change; ``keys`` names them), invalid_request
    (a key path that is not one), no_config_file, config_unreadable, config_read_only."""

    def __init__(self, code: str, message: str, keys: list[str] | None = None) -> None:
        self.code = code
        self.keys = keys or []
        super().__init__(message)


class AccessError(PanelError):
    """A credential could not be created, changed or revoked; nothing changed. ``code`` says why, stably:
    code_too_short, code_not_digits, bad_window, bad_uses, unknown_door, code_unavailable, card_enrolled,
    unknown_credential, not_your_credential, not_configured."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class DirectoryError(PanelError):
    """The directory refused a change or a sign-in; nothing changed. ``code`` says why, stably: unknown_unit,
    unknown_resident, signin_code_invalid, signin_code_expired, signin_code_used, resident_revoked,
    too_many_residents, directory_unavailable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
