"""Bounded slots shared by many clients: event streams, media sessions.

One credential or one address must not be able to hold every slot, and the people the panel exists
for must still get one when others hold the rest: so besides the total there is a cap per credential
and per address, and a number of slots only the installer (and, in a second tier, residents) may take.
A reserve is a floor, not a partition: slots a tier already holds count towards its reserve, and an
unused reserve is what others cannot take.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

Tier = Literal["installer", "resident", "other"]
Reason = Literal["full", "credential", "address", "reserved"]


@dataclass(frozen=True)
class SlotLimits:
    total: int
    per_credential: int
    per_address: int
    reserved_installer: int = 0  # kept for the installer
    reserved_residents: int = 0  # kept for residents (the installer may take them too)


class SlotRefused(Exception):
    """No slot for this caller; ``reason`` says which bound it hit (the adapter maps it to its code)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Slot:
    credential: str
    address: str | None
    tier: Tier


class Slots:
    def __init__(self, limits: SlotLimits, what: str) -> None:
        self.limits = limits
        self.what = what  # "event streams", "media sessions": for the messages
        self._held: list[Slot] = []

    @property
    def held(self) -> int:
        return len(self._held)

    def count(self, *, credential: str | None = None, address: str | None = None, tier: Tier | None = None) -> int:
        return sum(1 for s in self._held if (credential is None or s.credential == credential)
                   and (address is None or s.address == address) and (tier is None or s.tier == tier))

    def check(self, credential: str, address: str | None, tier: Tier) -> None:
        """Raise ``SlotRefused`` if ``take`` would; changes nothing."""
        lim, what = self.limits, self.what
        free = lim.total - len(self._held)
        if free <= 0:
            raise SlotRefused("full", f"{lim.total} {what} are open, the most this panel allows")
        # The installer is held to the total only: the caps stop others from crowding it out, and it may
        # share an address (a NAT, a proxy) with whoever fills that address's share.
        if tier == "installer":
            return
        if self.count(credential=credential) >= lim.per_credential:
            raise SlotRefused("credential", f"this credential holds {lim.per_credential} {what} already, the most "
                              "one credential may; close one")
        counts = Counter(s.tier for s in self._held)
        keep = max(0, lim.reserved_installer - counts["installer"])
        if tier == "other":
            keep += max(0, lim.reserved_residents - counts["resident"])
        if free <= keep:
            raise SlotRefused("reserved", f"the {free} free {what} are kept for "
                              + ("the installer" if tier == "resident" else "the installer and residents"))
        if address is not None and self.count(address=address) >= lim.per_address:
            raise SlotRefused("address", f"{lim.per_address} {what} are open from {address}, the most one "
                              "address may; close one")

    def take(self, credential: str, address: str | None, tier: Tier) -> Slot:
        self.check(credential, address, tier)
        slot = Slot(credential, address, tier)
        self._held.append(slot)
        return slot

    def release(self, slot: Slot) -> None:
        for i, held in enumerate(self._held):
            if held is slot:
                del self._held[i]
                return
