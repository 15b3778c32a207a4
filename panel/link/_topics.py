"""The panel's MQTT topic tree: one place that names every topic (docs/mqtt.md shows it).

Everything lives under ``<topic_prefix>/<panel id>/`` so that one broker ACL pattern per direction
confines a panel to its own topics (``pattern write panels/%u/#``-style rules; see docs/mqtt.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ONLINE = "online"
OFFLINE = "offline"


@dataclass(frozen=True)
class Topics:
    prefix: str
    panel_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.panel_id}"

    # -- panel -> broker ----------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """Retained ``online``/``offline``; ``offline`` is also the last will."""
        return f"{self.base}/status"

    def state(self, name: str) -> str:
        """Retained JSON state: ``call``, ``door``, ``tamper``, ``freshness``."""
        return f"{self.base}/state/{name}"

    def event(self, type_: str) -> str:
        """A live copy of each journal event (not retained; webhooks are the durable channel)."""
        return f"{self.base}/events/{type_}"

    @property
    def doorbell(self) -> str:
        """``{"event_type": "ring", ...}`` when a call starts: Home Assistant's doorbell event entity."""
        return f"{self.base}/doorbell"

    @property
    def call_outcome(self) -> str:
        """``{"event_type": "answered"|"declined"|"missed"|"ended"|..., ...}`` when a call is answered or
        over: Home Assistant's call event entity reads it (automations on "missed", ...)."""
        return f"{self.base}/call_outcome"

    @property
    def replies(self) -> str:
        """Replies go to the command's response topic, which must lie under this one."""
        return f"{self.base}/replies"

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.panel_id}/{object_id}/config"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth and will (``online``/``offline``): at ``online`` the panel publishes
        its discovery again (a Home Assistant that lost its retained copy learns the device anew)."""
        return f"{self.discovery_prefix}/status"

    # -- broker -> panel ----------------------------------------------------------------------------
    @property
    def commands(self) -> str:
        return f"{self.base}/commands"

    @property
    def ha_lock_set(self) -> str:
        """Home Assistant's lock command topic (plain ``OPEN``/``UNLOCK``/``LOCK``)."""
        return f"{self.base}/ha/lock/set"

    def is_reply_topic(self, topic: str) -> bool:
        if "+" in topic or "#" in topic:
            return False
        return topic == self.replies or topic.startswith(self.replies + "/")


# -- what the panel publishes (the one definition of these payloads) --------------------------------


class Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RelayStateMsg(Msg):
    energised: bool
    mode: Literal["monostable", "bistable"]


class DoorStateMsg(Msg):
    """``state/door`` (retained)."""

    open: bool | None = Field(description="door contact reads open; null without a contact")
    held_open: bool
    released: bool = Field(description="the door's relay (the first) is energised")
    relays: dict[str, RelayStateMsg]


class TamperStateMsg(Msg):
    """``state/tamper`` (retained). While ``blocked``, remote unlocks are refused."""

    active: bool
    blocked: bool


class CallStateMsg(Msg):
    """``state/call`` (retained): ``status`` is ``idle`` or the call's state; ``call`` as in the API,
    except that a live call's ``duration_s`` is ``null`` (it would change the payload every few seconds
    without anything having happened; ``created_at`` gives the same)."""

    status: str
    call: dict[str, Any] | None


class FreshnessStateMsg(Msg):
    """``state/freshness`` (retained): what a command needs to be fresh (docs/mqtt.md, Freshness)."""

    clock_synced: bool = Field(description="false: commands must echo nonce; true: exp is checked too")
    nonce: str = Field(description="echo it as the command's nonce; rotates every period_s and at restart")
    period_s: float
    max_age_s: float = Field(description="exp may be at most this far ahead (+5 s skew)")
    boot: str


class EventMsg(Msg):
    """``events/<type>`` (not retained): a live copy of a journal event; webhooks deliver them durably."""

    id: str
    type: str
    timestamp: str
    data: dict[str, Any]


class DoorbellMsg(Msg):
    """``doorbell`` (not retained): a call started. Home Assistant's doorbell event entity reads it."""

    event_type: Literal["ring"] = "ring"
    call_guid: str | None
    unit: dict[str, str]
    button: str


# A call's outcome, by the call state it is read from (the state machine in panel/calls/_service.py).
CALL_OUTCOMES: dict[str, str] = {"connecting": "answered", "declined": "declined", "missed": "missed",
                                 "ended": "ended", "canceled": "canceled", "failed": "failed"}


class CallOutcomeMsg(Msg):
    """``call_outcome`` (not retained): a call was answered, or is over and how. Home Assistant's call
    event entity reads it; ``event_type`` is one of ``CALL_OUTCOMES``' values."""

    event_type: Literal["answered", "declined", "missed", "ended", "canceled", "failed"]
    call_guid: str
    unit: dict[str, str | None]
    button: str
    who: str | None = Field(description="who answered, declined or ended it; null for a timeout")
    reason: str
