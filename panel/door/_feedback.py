"""What the visitor hears and sees, per call state and door release: the one table of feedback.

The visitor has no screen, so the panel tells them what is happening with tones from the speaker
(``panel/media/tones.py`` makes them) and with the status lights (``panel/door/_lights.py`` drives them).
Both follow the journal: feedback never decides anything, it shows what was decided.

| call state            | tone (speaker)                      | call light                      |
|-----------------------|-------------------------------------|---------------------------------|
| calling, ringing      | ringback, repeating                 | slow blink (0.5 s on, 0.5 s off)|
| connecting (answered) | answered: rising three notes, once  | fast blink (0.15 s / 0.15 s)    |
| connected             | (the answered tone plays out)       | steady on                       |
| missed, declined      | unanswered: falling three notes     | quick flashes for 3 s, then off |
| ended, canceled, failed | silence                           | off                             |
| door released (main relay) | door: three short high beeps   | door light on while released; call light flashes 0.1 s / 0.1 s |
| code or card refused (``access.denied``) | refused: two low buzzes | the status light flashes three times (panel/access) |
| keypad or reader blocked (``access.blocked``) | blocked: one long low buzz | the status light blinks until the block ends |

A release by the exit button (someone inside leaving) plays no tone outside.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from ..platform import EventRow

log = logging.getLogger(__name__)

ToneName = Literal["ringback", "answered", "door", "unanswered", "refused", "blocked"]
LightPattern = Literal["off", "slow_blink", "fast_blink", "steady", "flash", "door"]

# call state -> (tone to start, or "stop", or None to leave the current one; call-light pattern)
CALL_FEEDBACK: dict[str, tuple[ToneName | Literal["stop"] | None, LightPattern]] = {
    "calling": ("ringback", "slow_blink"),
    "ringing": ("ringback", "slow_blink"),
    "connecting": ("answered", "fast_blink"),
    "connected": (None, "steady"),
    "missed": ("unanswered", "flash"),
    "declined": ("unanswered", "flash"),
    "ended": ("stop", "off"),
    "canceled": ("stop", "off"),
    "failed": ("stop", "off"),
}
# pin, code, qr, card: the person at the keypad, camera or reader hears that the door is open.
DOOR_TONE_CAUSES = frozenset({"call", "remote", "installer", "pin", "code", "qr", "card"})


def call_light_pattern(status: str | None) -> LightPattern:
    return CALL_FEEDBACK.get(str(status), (None, "off"))[1]


class ToneOutput(Protocol):
    """What plays tones (``panel.media.tones.TonePlayer``)."""

    playing: ToneName | None

    def play(self, name: ToneName) -> None: ...

    def stop(self) -> None: ...


class ToneFeedback:
    """Journal subscriber that plays the call's tones on one player and the door's on another, so a
    door release during a call mixes its beeps over whatever the call plays."""

    def __init__(self, call_tones: ToneOutput, door_tones: ToneOutput, main_relay: str) -> None:
        self.call_tones = call_tones
        self.door_tones = door_tones
        self.main_relay = main_relay

    def on_event(self, ev: EventRow) -> None:
        try:
            self._apply(ev)
        except Exception:  # a speaker problem must never disturb the journal's other subscribers
            log.exception("feedback tone for %s failed", ev.type)

    def _apply(self, ev: EventRow) -> None:
        if ev.type in ("call.created", "call.status_updated"):
            tone = CALL_FEEDBACK.get(str(ev.data.get("status")), ("stop", "off"))[0]
            if tone == "stop":
                self.call_tones.stop()
            elif tone is not None and self.call_tones.playing != tone:
                self.call_tones.play(tone)
        elif ev.type == "door.unlocked" and ev.data.get("relay") == self.main_relay \
                and ev.data.get("cause") in DOOR_TONE_CAUSES:
            self.door_tones.play("door")
        elif ev.type == "access.denied" and ev.data.get("reason") != "blocked":
            self.door_tones.play("refused")
        elif ev.type in ("access.blocked",) or (ev.type == "access.denied" and ev.data.get("reason") == "blocked"):
            self.door_tones.play("blocked")
