"""A real OSDP reader: libosdp's peripheral (PD) mode on one end of a pseudo-terminal pair, the panel's
control panel on the other, secure channel on. Cards and reader keys go through access into the door."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from panel.auth import Secrets
from panel.errors import HardwareError

from .access_support import ADDRESS, SCBK, PtyReader, access_rig, service
from .api_support import STATIC_TOKEN, bearer, served, token
from .eventually import eventually
from .rig import Rig

pytest.importorskip("osdp")


@pytest.fixture
def reader() -> Iterator[PtyReader]:
    r = PtyReader()
    yield r
    r.close()




async def osdp_rig(tmp_path: Path, device: str, scbk: str | None = SCBK) -> Rig:
    rig = await access_rig(tmp_path, access={"osdp": {"device": device, "address": ADDRESS}, "max_failures": 3},
                           secrets=Secrets(installer_token=STATIC_TOKEN, osdp_scbk=scbk))
    assert rig.panel.osdp is not None
    await eventually(lambda: rig.panel.osdp is not None and rig.panel.osdp.cp is not None
                and rig.panel.osdp.status()["secure_channel"], 10, "the secure channel never came up")
    return rig


@pytest.fixture
async def rig(tmp_path: Path, reader: PtyReader) -> AsyncIterator[Rig]:
    r = await osdp_rig(tmp_path, reader.device)
    yield r
    await r.close()


async def test_enrolled_card_opens_over_the_secure_channel_unknown_card_does_not(rig: Rig, reader: PtyReader) -> None:
    assert rig.panel.osdp is not None and rig.panel.osdp.status() == {"online": True, "secure_channel": True}
    await service(rig).enrol_card(owner="alice", number="04:A2:2B:91", label="blue fob", by="installer")
    reader.present("deadbeef")
    await eventually(lambda: bool(rig.events("access.denied")), 5, "the unknown card was not refused")
    assert not rig.relay_on()
    reader.present("04a22b91")
    await eventually(rig.relay_on, 5, "the enrolled card did not open")
    await eventually(lambda: bool(rig.events("access.granted")), 5, "no access.granted")
    [granted] = rig.events("access.granted")
    assert (granted["method"], granted["owner"], granted["label"], granted["source"]) == \
        ("card", "alice", "blue fob", f"osdp:{ADDRESS}")
    [denied] = rig.events("access.denied")
    assert (denied["method"], denied["reason"], denied["source"]) == ("card", "unknown_credential", f"osdp:{ADDRESS}")
    [row] = rig.access_log()
    assert (row["method"], row["actor"], row["label"]) == ("card", "alice", "blue fob")
    # The reader answered the card holder itself: red for the refusal, then green for the release.
    colours = []
    while (cmd := reader.pd.get_command(timeout=2)) is not None and len(colours) < 2:
        if cmd["command"] == reader.osdp.Command.LED:
            colours.append(cmd["on_color"])
    assert colours == [reader.osdp.CommandLEDColor.Red, reader.osdp.CommandLEDColor.Green]
    assert rig.panel.osdp is not None and rig.panel.osdp.status()["online"], "the reader stays online"


async def test_revoked_card_is_refused(rig: Rig, reader: PtyReader) -> None:
    cred = await service(rig).enrol_card(owner="alice", number="04a22b91", label="lost fob", by="installer")
    await service(rig).revoke(cred.id)
    reader.present("04a22b91")
    await eventually(lambda: bool(rig.events("access.denied")), 5, "the revoked card was not refused")
    assert not rig.relay_on()


async def test_the_readers_keypad_feeds_the_same_entry_rules(rig: Rig, reader: PtyReader) -> None:
    await service(rig).set_pin(owner="bob", pin="1357", by="installer")
    reader.keys(b"99\x7f1357\x0d")  # OSDP keypad: 0x7F is *, 0x0D is #
    await eventually(rig.relay_on, 5, "the PIN typed on the reader did not open")
    [granted] = rig.events("access.granted")
    assert (granted["method"], granted["owner"], granted["source"]) == ("pin", "bob", f"osdp:{ADDRESS}")


async def test_installer_learns_a_card_by_presenting_it(rig: Rig, reader: PtyReader) -> None:
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        learning = asyncio.create_task(c.post("/api/v1/access/cards/learn", headers=installer,
                                              json={"owner": "carol", "label": "red card", "timeout_s": 10}))
        await eventually(lambda: service(rig)._learning is not None, 5, "the panel never started learning")
        reader.present("1a2b3c4d")
        r = await learning
        assert r.status_code == 201, r.text
        assert (r.json()["credential"]["owner"], r.json()["credential"]["kind"]) == ("carol", "card")
        assert not rig.relay_on(), "a card presented to be learnt does not open the door"
        r = await c.post("/api/v1/access/cards/learn", headers=installer,
                         json={"owner": "dave", "timeout_s": 0.2})
        assert (r.status_code, r.json()["code"]) == (408, "no_card")
    reader.present("1a2b3c4d")
    await eventually(rig.relay_on, 5, "the learnt card did not open")


async def test_secure_channel_without_a_key_stops_the_start(tmp_path: Path, reader: PtyReader) -> None:
    with pytest.raises(HardwareError, match="osdp_scbk"):
        await access_rig(tmp_path, access={"osdp": {"device": reader.device, "address": ADDRESS}})
