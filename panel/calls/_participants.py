"""Who is in each live call, by display name, and the events when guests join and leave.

A call's participants are the resident who answered it (from ``connecting`` on, as the call state
says) and the guests who joined through a call link (panel/calls/_links.py). Guests joining and leaving are
journalled (``call.participant_joined`` / ``call.participant_left``); the answerer's arrival is the
call's own ``connecting`` transition. When the call ends every guest leaves and the list is empty,
which is how a preview learns that the call is over.

Waiters (long-polls of the call-link page, the resident page) sleep on a per-call version number
that grows with every change of the list; nothing polls the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..events import CallParticipantJoined, CallParticipantLeft, Participant

if TYPE_CHECKING:
    from ..platform import EventRow, Journal
    from ._service import CallManager

log = logging.getLogger(__name__)

NAME_MAX = 40
CALL_END_STATES = frozenset({"ended", "declined", "canceled", "missed", "failed"})


class NameRefused(ValueError):
    """A display name that cannot be shown."""


def clean_name(raw: Any) -> str:
    """A display name as others will see it: whitespace collapsed, no control or format characters
    (no bidi overrides, no zero-width tricks), 1 to ``NAME_MAX`` characters. Pages show it as text,
    never as markup, so ``<b>`` stays the four characters it is."""
    if not isinstance(raw, str):
        raise NameRefused("name must be text")
    kept = "".join(" " if ch.isspace() else ch for ch in unicodedata.normalize("NFC", raw)
                   if ch.isspace() or not unicodedata.category(ch).startswith("C"))
    name = " ".join(kept.split())
    if not name:
        raise NameRefused("name is empty once control characters and spaces are removed; give a name others will "
                          "recognise, e.g. \"Maria (flat 12)\"")
    if len(name) > NAME_MAX:
        raise NameRefused(f"name is {len(name)} characters long; at most {NAME_MAX}")
    return name


@dataclass(frozen=True)
class Guest:
    participant: Participant
    link_id: str


class Participants:
    """The participant list of the live call, with change notification."""

    def __init__(self, calls: CallManager, journal: Journal) -> None:
        self.calls = calls
        self.journal = journal
        self._guests: dict[str, dict[str, Guest]] = {}  # call guid -> participant id -> guest
        self._version = 0
        self._changed = asyncio.Event()
        self._unsubscribe = journal.subscribe(self.on_event)


    # -- reading ---------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    def live(self, guid: str) -> bool:
        call = self.calls.current
        return call is not None and call.guid == guid and call.live

    def list(self, guid: str) -> list[Participant]:
        """Everyone in call ``guid`` now; empty when it is not (or no longer) in progress."""
        call = self.calls.current
        if call is None or call.guid != guid or not call.live:
            return []
        out: list[Participant] = []
        if call.answered and call.answered_by:
            out.append(Participant(id=f"res:{call.answered_by}", name=call.answered_by[:NAME_MAX], kind="resident",
                                   via="answer"))
        out.extend(g.participant for g in self._guests.get(guid, {}).values())
        return out

    def guest_links(self, guid: str) -> set[str]:
        """The links the guests now in call ``guid`` joined through."""
        return {g.link_id for g in self._guests.get(guid, {}).values()}

    def guests(self, guid: str) -> int:
        return len(self._guests.get(guid, {}))

    async def wait(self, version: int, timeout_s: float) -> int:
        """Until the version differs from ``version`` (or the timeout); returns the version now."""
        if self._version != version or timeout_s <= 0:
            return self._version
        event = self._changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        return self._version

    def _bump(self) -> None:
        self._version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()  # wakes every waiter of the old version at once

    # -- changing --------------------------------------------------------------------------------------
    def join(self, guid: str, participant: Participant, link_id: str) -> asyncio.Future[EventRow]:
        self._guests.setdefault(guid, {})[participant.id] = Guest(participant, link_id)
        self._bump()
        log.info("call %s: %s joined through link %s", guid, participant.id, link_id,
                 extra={"call": guid, "participant": participant.id, "link_id": link_id})
        return self.journal.record(CallParticipantJoined(guid=guid, participant=participant,
                                                         participants=self.list(guid), link_id=link_id), key=guid)

    def leave(self, guid: str, participant_id: str, reason: str) -> asyncio.Future[EventRow] | None:
        """Idempotent: a guest who is not (or no longer) in the call changes nothing."""
        guests = self._guests.get(guid)
        guest = guests.pop(participant_id, None) if guests is not None else None
        if guest is None:
            return None
        if not guests:
            self._guests.pop(guid, None)
        self._bump()
        log.info("call %s: %s left (%s)", guid, participant_id, reason,
                 extra={"call": guid, "participant": participant_id, "reason": reason})
        return self.journal.record(CallParticipantLeft(guid=guid, participant=guest.participant,
                                                       participants=self.list(guid), reason=reason), key=guid)

    def on_event(self, row: EventRow) -> None:
        """Journal subscriber: the answerer appears at ``connecting``; at the end everybody leaves."""
        if row.type != "call.status_updated":
            return
        guid = str(row.data.get("guid"))
        status = row.data.get("status")
        if status in CALL_END_STATES:
            for pid in list(self._guests.get(guid, {})):
                self.leave(guid, pid, "call_ended")
            self._bump()
        elif status == "connecting":
            self._bump()

    def close(self) -> None:
        self._unsubscribe()
        self._bump()
