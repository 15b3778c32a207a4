"""The event catalogue: the one definition of every event's ``data`` on the wire.

Events are journalled in the durable store, delivered to the backend (webhooks), published to
in-process subscribers (MQTT state, the API's event pull) and documented from these models.
Every event's data also carries ``panel: {id, name}``, added by the journal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# pin, code, qr, card: a release asked for at the door with a credential (panel/access), no call.
Cause = Literal["call", "remote", "exit_button", "installer", "pin", "code", "qr", "card"]
Method = Literal["mqtt", "api", "exit_button", "data_channel", "sim", "pin", "code", "qr", "card"]
AccessMethod = Literal["pin", "code", "qr", "card"]
LockReason = Literal["timeout", "relock_on_open", "released", "max_on", "tamper", "shutdown", "error", "restart"]
PressOutcome = Literal["ignored", "busy"]


class EventData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GrantInfo(EventData):
    access_id: str = Field(description="the access-log entry of this release")
    relay: str
    cause: Cause
    actor: str = Field(description="who asked: a resident id, 'backend', 'exit_button', an installer")
    method: Method
    call_guid: str | None = Field(None, description="the call this release belongs to, if any")


class DoorUnlocked(GrantInfo):
    """The panel released the lock (energised the relay). Written before the relay moves."""

    duration_s: float = Field(description="how long the relay will stay energised at most")
    mode: Literal["monostable", "bistable"]


class DoorUnlockRefused(EventData):
    """An unlock was asked for and refused; nothing moved."""

    relay: str | None
    cause: Cause
    actor: str
    method: Method
    call_guid: str | None = None
    code: str = Field(description="stable reason code, e.g. tamper_blocked, bad_duration")
    message: str


class DoorLocked(EventData):
    """The relay de-energised."""

    relay: str
    reason: LockReason = Field(description="why; restart: the release was in force when the panel's process died, "
                               "journalled at its next start (on_s is then an estimate: the time since the release, "
                               "at most its duration)")
    access_id: str | None = Field(None, description="the release that ended, if any")
    on_s: float = Field(description="how long the relay was energised")


class DoorOpened(EventData):
    """The door contact reports open. ``grant`` names the release that authorised it."""

    authorised: bool
    grant: GrantInfo | None = None


class DoorClosed(EventData):
    """The door contact reports closed again."""

    open_s: float


class DoorHeldOpen(EventData):
    """The door has stayed open past ``door.held_open_s``."""

    open_s: float
    limit_s: float


class DoorForcedOpen(EventData):
    """The door opened with no release in force (or within its grace period)."""

    since_last_release_s: float | None = Field(None, description="seconds since the last release ended, if any")


class PanelTamper(EventData):
    """The tamper switch changed. While a block is active, remote unlocks are refused."""

    active: bool
    blocked: bool


class PanelTamperCleared(EventData):
    """An installer cleared the tamper block; remote unlocks are allowed again."""

    actor: str


class InputStuck(EventData):
    """An input stayed active past its stuck_s; it is ignored until it goes inactive again."""

    input: str
    active_s: float


class InputRecovered(EventData):
    """A stuck input went inactive again and counts again."""

    input: str


class ButtonPressed(EventData):
    """A call button press that did not start a call (a press that does is ``call.created``)."""

    button: str
    unit_id: str
    unit_label: str
    outcome: PressOutcome | None = Field(None, description="what the press did; see docs/calls.md")
    call_guid: str | None = Field(None, description="the call in progress that the press met")


CallState = Literal["calling", "ringing", "connecting", "connected", "ended", "declined", "canceled", "missed",
                    "failed"]
CallType = Literal["audio", "video"]


class UnitRef(EventData):
    id: str
    label: str


class CallTimes(EventData):
    """Wall-clock times (ISO 8601, UTC) for the record; the panel decides nothing by them."""

    created_at: str
    answered_at: str | None = None
    connected_at: str | None = None
    ended_at: str | None = None


class CallCreated(EventData):
    """A visitor pressed a button: a new call exists, in ``calling`` until the backend acknowledges it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "guid": "7e342936-f47c-4814-ac4a-c56a0ef749a6", "unit": {"id": "158", "label": "303"}, "button": "b303",
        "call_type": "video", "status": "calling", "created_at": "2025-03-14T09:26:53.589Z"}]})

    guid: str
    unit: UnitRef
    button: str
    call_type: CallType
    status: CallState
    created_at: str = Field(description="ISO 8601 UTC wall-clock time of the press")


class CallStatusUpdated(EventData):
    """A call changed state. ``who`` is whoever caused this change (absent for timeouts)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "guid": "7e342936-f47c-4814-ac4a-c56a0ef749a6", "unit": {"id": "158", "label": "303"}, "button": "b303",
        "call_type": "video", "status": "connecting", "previous_status": "ringing", "who": "resident-17",
        "answered_by": "resident-17", "declined_by": None, "ended_by": None, "reason": "answered",
        "times": {"created_at": "2025-03-14T09:26:53.589Z", "answered_at": "2025-03-14T09:27:01.204Z",
                  "connected_at": None, "ended_at": None},
        "duration_s": 7.615}]})

    guid: str
    unit: UnitRef
    button: str
    call_type: CallType
    status: CallState
    previous_status: CallState
    who: str | None = Field(None, description="a resident id, 'backend', 'visitor' or 'panel'")
    answered_by: str | None = Field(None, description="who answered (once answered, on every later update)")
    declined_by: str | None = None
    ended_by: str | None = Field(None, description="who ended it (ended, canceled, failed)")
    reason: str = Field(description="why, stably: answered, ring_timeout, max_call_s, shutdown, restart, ...")
    times: CallTimes
    duration_s: float | None = Field(None, description="seconds since the press (monotonic); None after a restart")


class CallSnapshot(EventData):
    """The picture of the visitor taken at the press is stored with the call (docs/media.md, Snapshots).

    Recorded after ``call.created`` (never delaying it) once the JPEG is on disk; the call log's
    ``snapshot`` column names the same file. ``url`` works without any other credential until
    ``expires_at``; installers and call credentials can fetch it at any time while it is kept.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "guid": "7e342936-f47c-4814-ac4a-c56a0ef749a6",
        "url": "/api/v1/calls/7e342936-f47c-4814-ac4a-c56a0ef749a6/snapshot.jpg?exp=1741944413&sig=9c1f...",
        "expires_at": "2025-03-15T09:26:53.000Z", "taken_at": "2025-03-14T09:26:53.601Z", "offset_ms": 12.0,
        "width": 640, "height": 480, "bytes": 31877, "pre_press": 10}]})

    guid: str
    url: str = Field(description="the JPEG on the panel's local API, signed; absolute when "
                                 "media.snapshots.base_url is set, else a path")
    expires_at: str = Field(description="ISO 8601 UTC time after which the signature in url is refused")
    taken_at: str = Field(description="ISO 8601 UTC capture time of the picture")
    offset_ms: float = Field(description="capture time minus press time: negative is before the press")
    width: int
    height: int
    bytes: int
    pre_press: int = Field(0, description="pictures from before the press stored with it "
                                          "(GET /api/v1/calls/{guid}/snapshots lists them)")


ParticipantKind = Literal["resident", "guest"]


class Participant(EventData):
    """Someone in a call: the resident who answered, or a guest who joined through a call link."""

    id: str = Field(description="stable within the call: res:<resident id> or a link participant's id")
    name: str = Field(description="display name (plain text: 1-40 printable characters, shown as text, never markup)")
    kind: ParticipantKind
    via: Literal["answer", "link"] = Field(description="how they are in the call")


class CallParticipantJoined(EventData):
    """A guest joined a call through a call link (the resident who answered is in it from ``connecting``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "guid": "7e342936-f47c-4814-ac4a-c56a0ef749a6",
        "participant": {"id": "p_Q2xX0f3k", "name": "Maria", "kind": "guest", "via": "link"},
        "participants": [{"id": "res:resident-17", "name": "resident-17", "kind": "resident", "via": "answer"},
                         {"id": "p_Q2xX0f3k", "name": "Maria", "kind": "guest", "via": "link"}],
        "link_id": "c1d2e3f4a5b6"}]})

    guid: str
    participant: Participant
    participants: list[Participant] = Field(description="everyone in the call after this change")
    link_id: str = Field(description="the call link the guest came through")


class CallParticipantLeft(EventData):
    """A guest left a call: left, closed the page, lost the connection, the link was revoked, or the call ended."""

    guid: str
    participant: Participant
    participants: list[Participant] = Field(description="everyone still in the call (empty: the call ended)")
    reason: str = Field(description="left, page_closed, session_ended, link_revoked, call_ended, ...")


class CallLinkCreated(EventData):
    """A call link was made for a live call (the link itself is a secret and is not in the event)."""

    guid: str
    link_id: str
    by: str = Field(description="who asked: the resident who answered, 'backend:<id>' or 'installer'")
    expires_at: str = Field(description="ISO 8601 UTC time after which the link is refused")
    invited: str | None = Field(None, description="set when the link was made by an invite: whom it is for")


class CallLinkRevoked(EventData):
    """A call link was revoked: it is refused from now on and its previews and guests are out of the call."""

    guid: str
    link_id: str
    by: str


class CallInvited(EventData):
    """Someone was invited into a call in progress as a guest: a guest credential for that call (view and
    talk; never the door, ending the call, links or invites) and a call link were issued for them
    (neither secret is in the event)."""

    guid: str
    subject: str = Field(description="the invited resident's id")
    name: str | None = Field(None, description="their display name, if given")
    by: str
    token_id: str = Field(description="the credential issued (revocable: DELETE /api/v1/auth/tokens/{id})")
    link_id: str
    expires_at: str


class CallMuted(EventData):
    """What the panel sends in a call was muted or unmuted (its microphone: the peers hear silence; its
    camera: pictures stop), for every media session of the call."""

    guid: str
    muted: dict[str, bool] = Field(description="what the panel now sends muted in this call: {audio, video}",
                                   examples=[{"audio": True, "video": False}])
    by: str = Field(description="who muted or unmuted")
    media: bool = Field(description="true if it reached a media session; false: recorded only (no media running "
                                    "or no session yet; sessions that join later start muted)")


class PanelStarted(EventData):
    """The daemon started, with every relay driven off and the inputs read."""

    version: str
    boot: str
    simulated: bool


class PanelStopped(EventData):
    """The daemon is stopping in order; the relays are already off."""

    reason: str


class PanelOnline(EventData):
    """The panel's link to the backend started (once per start of the daemon): firmware and uptime."""

    version: str = Field(description="firmware version")
    boot: str = Field(description="the kernel's boot id: changes on every reboot, not on a daemon restart")
    uptime_s: float = Field(description="seconds since the daemon started")
    system_uptime_s: float | None = Field(None, description="seconds since the Pi booted")
    backlog: int = Field(description="events not yet delivered when this one was recorded")


class PanelHeartbeat(EventData):
    """Sent every ``webhooks.heartbeat_s``; the first events shed when the outbox is full."""

    version: str = Field(description="firmware version")
    boot: str = Field(description="the kernel's boot id")
    uptime_s: float = Field(description="seconds since the daemon started")
    system_uptime_s: float | None = Field(None, description="seconds since the Pi booted")
    backlog: int = Field(description="events not yet delivered when this one was recorded")


class OutboxOverflow(EventData):
    """The outbox reached ``storage.outbox_max_events``: what was shed, and what is refused until it drains.

    Only ``panel.heartbeat`` events are ever shed (oldest first); door, call, tamper and every other
    event is kept whatever the bound.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "limit": 100000, "backlog": 100000, "shed": {"panel.heartbeat": 120},
        "shed_from": "2025-03-14T09:26:53.589Z", "shed_to": "2025-03-14T19:21:53.589Z",
        "refusing": ["panel.heartbeat"]}]})

    limit: int = Field(description="storage.outbox_max_events")
    backlog: int = Field(description="undelivered events after shedding")
    shed: dict[str, int] = Field(description="event type -> how many undelivered events of it were deleted")
    shed_from: str | None = Field(None, description="ISO 8601 UTC time of the oldest shed event")
    shed_to: str | None = Field(None, description="ISO 8601 UTC time of the newest shed event")
    refusing: list[str] = Field(description="event types not recorded until the backlog is below the limit again")


MediaDevice = Literal["camera", "microphone", "speaker"]


class MediaDeviceLost(EventData):
    """A camera, microphone or speaker failed (unplugged, busy, gone); the panel retries it with backoff.
    Door and calls keep working; calls go on without that device."""

    device: MediaDevice
    name: str = Field(description="what the config names: a device node, a device name, a command")
    error: str = Field(description="what failed, for the installer")
    retry_s: float = Field(description="seconds until the next attempt")


class MediaDeviceRecovered(EventData):
    """A device reported lost works again."""

    device: MediaDevice
    name: str
    down_s: float = Field(description="how long it was unavailable")


class MediaPublishStarted(EventData):
    """The entrance is being published to an SFU over WHIP (media.publish): the server answered the offer
    (201) and media flows. After a failure, this is the recovery."""

    target: str = Field(description="the target's id (media.publish.targets[].id)")
    setup_ms: float = Field(description="from the POST to the connected session")
    video: str | None = Field(description="the video codec sent (h264, vp8), or null")
    audio: str | None = Field(description="the audio codec sent (opus), or null")


class MediaPublishFailed(EventData):
    """Publishing to a target failed, or its server went away; the panel deletes the session and publishes
    anew after ``retry_s``. Reported once per run of failures (not at every attempt)."""

    target: str
    reason: Literal["unauthorized", "refused", "unreachable", "server_error", "ice_failed", "server_gone",
                    "bad_answer", "panel_error"] = Field(
        description="unauthorized: 401/403, the token is wrong (retried only after media.publish.unauthorized_retry_s "
        "or a publish command); panel_error: the panel failed to make the offer (its log has the details)")
    status: int | None = Field(None, description="the HTTP status, if the server answered")
    error: str = Field(description="what failed, for the installer (never the token)")
    retry_s: float = Field(description="seconds until the next attempt")


class MediaPublishStopped(EventData):
    """Publishing to a target stopped on purpose (the session was deleted on the server, RFC 9725 DELETE)."""

    target: str
    reason: Literal["command", "call_ended", "shutdown"]
    published_s: float | None = Field(description="how long it was published, if it was")


class AccessGranted(EventData):
    """A credential presented at the door (keypad, QR at the camera, card reader) released it.

    The secret itself is never in an event or a log; only its owner and label. A duress PIN's release
    looks exactly like the PIN's (its ``access.duress`` goes to the backend alone)."""

    access_id: str = Field(description="the access-log entry (and door.unlocked) of this release")
    relay: str
    method: AccessMethod
    owner: str = Field(description="whose credential: a resident id, or whoever made a temporary code")
    label: str = Field(description="the credential's label, e.g. \"PIN\", \"DHL Tuesday\", \"blue fob\"")
    source: str = Field(description="where it was presented: keypad, camera, osdp:<address>, sim")
    uses_left: int | None = Field(None, description="a temporary code's remaining uses after this one")


AccessDenyReason = Literal["unknown_credential", "not_yet_valid", "expired", "used_up", "wrong_door", "blocked",
                           "tamper_blocked", "too_short", "door_refused"]


class AccessDenied(EventData):
    """A credential presented at the door was refused; nothing moved."""

    method: AccessMethod
    reason: AccessDenyReason = Field(description="why, stably; unknown_credential for every wrong code or card")
    source: str
    relay: str | None = None
    owner: str | None = Field(None, description="the credential's owner when it was recognised (expired, used up)")
    label: str | None = None
    failures: int = Field(0, description="wrong credentials in a row at this source (counts toward the block)")


class AccessBlocked(EventData):
    """Too many wrong credentials in a row at one source: it refuses everything for ``block_s``."""

    source: str
    failures: int
    block_s: float
    until: str = Field(description="ISO 8601 UTC time the block ends")


class AccessDuress(EventData):
    """A resident opened with their duress PIN: the door opened exactly as with their PIN, and only the
    backend is told. Never shown on the panel (lights, tones, pages)."""

    access_id: str
    relay: str
    owner: str
    source: str


class ResidentChanged(EventData):
    """What every directory event names: the resident and their unit (panel/directory)."""

    resident: str = Field(description="the resident's id in the panel's directory, e.g. r-3f2a9c01b7d4")
    unit_id: str
    name: str = Field(description="the resident's name as the pages show it")


class DirectoryResidentAdded(ResidentChanged):
    """A resident was added to a unit (their first sign-in link was made; the link is never in an event)."""

    by: str = Field(description="who added them: installer, backend:<subject>, demo")


class DirectoryResidentRenamed(ResidentChanged):
    """A resident's name changed; their signed-in devices show the new one at once."""

    by: str


class DirectoryResidentRemoved(ResidentChanged):
    """A resident was removed: every device they signed in with is signed out, their unused links stop working."""

    by: str
    sessions_ended: int


class DirectorySignedIn(ResidentChanged):
    """A resident signed a device in with a sign-in link (the link is spent)."""

    device: str = Field(description="the browser and system, e.g. \"Chrome on Android\"")
    token_id: str = Field(description="the device's credential id (never its secret)")


class DirectorySignedOut(ResidentChanged):
    """One of a resident's devices was signed out by the installer or the backend."""

    token_id: str
    by: str


UpdateStage = Literal["request", "verify", "download", "install", "switch"]


class UpdateStarted(EventData):
    """An update was accepted (its signature verified, its version allowed) and its download begins."""

    version: str = Field(description="the release being installed")
    from_version: str = Field(description="the version running now")
    url: str
    size: int = Field(description="the signed size in bytes")
    forced: bool = Field(description="an older (or the same) version, allowed by the installer's force")
    actor: str = Field(description="who asked: 'backend' over MQTT, or an installer")
    method: Literal["mqtt", "api"]


class UpdateVerified(EventData):
    """The download is complete and its size, SHA-256 and Ed25519 signature all match."""

    version: str
    sha256: str
    key_id: str = Field(description="the vendor key that signed it (first 16 hex digits of SHA-256 of the key)")


class UpdateInstalled(EventData):
    """The release is unpacked into the inactive slot and set on trial; the panel restarts into it."""

    version: str
    slot: Literal["a", "b"]
    max_boots: int = Field(description="starts the trial gets to pass its health check before it is rolled back")


class UpdateCommitted(EventData):
    """The new release passed its health check: it is the panel's release now."""

    version: str
    slot: Literal["a", "b"]
    from_version: str
    health_s: float = Field(description="seconds from the trial's start to a passing health check")


class UpdateRolledBack(EventData):
    """The new release failed (health check, or crashes at start) and the panel went back to the previous one."""

    version: str = Field(description="the release that failed")
    slot: str = Field(description="its slot")
    to_version: str = Field(description="the release running again")
    to_slot: str = Field(description="a, b or factory (the Debian package's own)")
    reason: str = Field(description="what failed, for the installer")
    boots: int = Field(description="how many times the failed release started")


class UpdateFailed(EventData):
    """An update was refused or failed before the switch; the running release was never touched."""

    version: str
    stage: UpdateStage
    code: str = Field(description="stable reason code, e.g. update_bad_signature, update_hash_mismatch "
                      "(docs/updates.md)")
    reason: str


EVENT_MODELS: dict[str, type[EventData]] = {
    "door.unlocked": DoorUnlocked,
    "door.unlock_refused": DoorUnlockRefused,
    "door.locked": DoorLocked,
    "door.opened": DoorOpened,
    "door.closed": DoorClosed,
    "door.held_open": DoorHeldOpen,
    "door.forced_open": DoorForcedOpen,
    "panel.tamper": PanelTamper,
    "panel.tamper_cleared": PanelTamperCleared,
    "panel.started": PanelStarted,
    "panel.stopped": PanelStopped,
    "panel.online": PanelOnline,
    "panel.heartbeat": PanelHeartbeat,
    "outbox.overflow": OutboxOverflow,
    "input.stuck": InputStuck,
    "input.recovered": InputRecovered,
    "button.pressed": ButtonPressed,
    "call.created": CallCreated,
    "call.status_updated": CallStatusUpdated,
    "call.snapshot": CallSnapshot,
    "call.participant_joined": CallParticipantJoined,
    "call.participant_left": CallParticipantLeft,
    "call.link_created": CallLinkCreated,
    "call.link_revoked": CallLinkRevoked,
    "call.invited": CallInvited,
    "call.muted": CallMuted,
    "media.device_lost": MediaDeviceLost,
    "media.device_recovered": MediaDeviceRecovered,
    "media.publish_started": MediaPublishStarted,
    "media.publish_failed": MediaPublishFailed,
    "media.publish_stopped": MediaPublishStopped,
    "access.granted": AccessGranted,
    "access.denied": AccessDenied,
    "access.blocked": AccessBlocked,
    "access.duress": AccessDuress,
    "directory.resident_added": DirectoryResidentAdded,
    "directory.resident_renamed": DirectoryResidentRenamed,
    "directory.resident_removed": DirectoryResidentRemoved,
    "directory.signed_in": DirectorySignedIn,
    "directory.signed_out": DirectorySignedOut,
    "update.started": UpdateStarted,
    "update.verified": UpdateVerified,
    "update.installed": UpdateInstalled,
    "update.committed": UpdateCommitted,
    "update.rolled_back": UpdateRolledBack,
    "update.failed": UpdateFailed,
}
EVENT_TYPES: dict[type[EventData], str] = {m: t for t, m in EVENT_MODELS.items()}
