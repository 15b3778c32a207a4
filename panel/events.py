"""The event catalogue: the one definition of every event's ``data`` on the wire.

Events are journalled in the durable store, delivered to the backend (webhooks), published to
in-process subscribers (MQTT state, the API's event pull) and documented from these models.
Every event's data also carries ``panel: {id, name}``, added by the journal.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Cause = Literal["call", "remote", "exit_button", "installer"]
Method = Literal["mqtt", "api", "exit_button", "data_channel", "sim"]
LockReason = Literal["timeout", "relock_on_open", "released", "max_on", "tamper", "shutdown", "error"]


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
    reason: LockReason
    access_id: str | None = Field(None, description="the release that ended, if any")
    on_s: float = Field(description="how long the relay was energised")


class DoorOpened(EventData):
    """The door contact reports open. ``grant`` names the release that authorised it."""

    authorised: bool
    grant: GrantInfo | None = None


class DoorClosed(EventData):
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
    actor: str


class InputStuck(EventData):
    """An input stayed active past its stuck_s; it is ignored until it goes inactive again."""

    input: str
    active_s: float


class InputRecovered(EventData):
    input: str


class ButtonPressed(EventData):
    button: str
    unit_id: str
    unit_label: str


class PanelStarted(EventData):
    version: str
    boot: str
    simulated: bool


class PanelStopped(EventData):
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
    "input.stuck": InputStuck,
    "input.recovered": InputRecovered,
    "button.pressed": ButtonPressed,
}
EVENT_TYPES: dict[type[EventData], str] = {m: t for t, m in EVENT_MODELS.items()}
