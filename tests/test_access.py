"""Doors without a call: PINs, duress PINs, temporary codes and cards through the access service and
a matrix keypad scanned on gpiozero's MockFactory, into the real door (mock relay pins, fake clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from panel.errors import AccessError

from .access_support import access_rig, keys, scans, service, type_keys
from .rig import Rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = await access_rig(tmp_path)
    yield r
    await r.close()


async def test_pin_typed_on_the_matrix_opens_the_door_and_logs_owner_and_method(rig: Rig) -> None:
    await service(rig).set_pin(owner="alice", pin="1234", by="installer")
    await type_keys(rig, "1234")
    assert not rig.relay_on(), "digits alone must not open: # submits"
    await type_keys(rig, "#")
    assert rig.relay_on()
    [granted] = rig.events("access.granted")
    assert (granted["owner"], granted["label"], granted["method"], granted["source"], granted["relay"]) == \
        ("alice", "PIN", "pin", "keypad", "main")
    [row] = rig.access_log()
    assert (row["cause"], row["actor"], row["method"], row["label"], row["id"]) == \
        ("pin", "alice", "pin", "PIN", granted["access_id"])
    assert row["credential_id"] == service(rig).creds.live(owner="alice")[0].id


async def test_star_clears_and_the_inter_key_timeout_forgets_a_half_entry(rig: Rig) -> None:
    await service(rig).set_pin(owner="alice", pin="1234", by="installer")
    await type_keys(rig, "99*1234#")
    assert rig.relay_on(), "* must clear the 99 typed before"
    await rig.advance(3)
    assert not rig.relay_on()
    await type_keys(rig, "12")
    await rig.advance(5.5)  # past key_timeout_s: "12" is forgotten
    await type_keys(rig, "34#")
    assert not rig.relay_on()
    [denied] = rig.events("access.denied")
    assert denied["reason"] == "too_short" and denied["owner"] is None


async def test_a_held_key_counts_once_and_bounces_shorter_than_the_debounce_do_not_count(rig: Rig) -> None:
    got: list[str] = []
    assert rig.panel.keypad is not None
    rig.panel.keypad.on_key = got.append
    m = keys(rig)
    m.press("5")
    await scans(rig, 20)  # held for 200 ms: one key
    m.release("5")
    await scans(rig, 3)
    m.press("7")
    await scans(rig, 1)  # one scan only: a bounce
    m.release("7")
    await scans(rig, 3)
    m.press("#")
    await scans(rig, 3)
    m.release("#")
    await scans(rig, 3)
    assert got == ["5", "#"]


async def test_wrong_codes_block_the_keypad_with_an_event_then_it_works_again(rig: Rig) -> None:
    await service(rig).set_pin(owner="alice", pin="1234", by="installer")
    for _ in range(3):
        await type_keys(rig, "0000#")
    [blocked] = rig.events("access.blocked")
    assert (blocked["source"], blocked["failures"], blocked["block_s"]) == ("keypad", 3, 30)
    await type_keys(rig, "1234#")
    assert not rig.relay_on(), "the right PIN is refused while blocked"
    assert rig.events("access.denied")[-1]["reason"] == "blocked"
    assert rig.panel.access_feedback is not None and rig.panel.access_feedback.shown == "blocked"
    blocked = (await rig.panel.state())["access"]["blocked"]
    assert list(blocked) == ["keypad"] and 29 < blocked["keypad"] <= 30
    await rig.advance(30)
    assert rig.panel.access_feedback.shown is None, "the light is steady again when the block ends"
    await type_keys(rig, "1234#")
    assert rig.relay_on()
    reasons = [e["reason"] for e in rig.events("access.denied")]
    assert reasons == ["unknown_credential", "unknown_credential", "unknown_credential", "blocked"]
    assert [e["failures"] for e in rig.events("access.denied")][:3] == [1, 2, 3]


async def test_tamper_block_refuses_codes_without_looking_at_them(rig: Rig) -> None:
    await service(rig).set_pin(owner="alice", pin="1234", by="installer")
    await rig.drive(rig.cfg.tamper, True)
    await rig.drive(rig.cfg.tamper, False)
    assert rig.door.tamper_blocked
    for _ in range(4):
        await type_keys(rig, "1234#")
    assert not rig.relay_on()
    assert {e["reason"] for e in rig.events("access.denied")} == {"tamper_blocked"}
    assert rig.events("access.blocked") == [], "refusals during a tamper block are not guesses"
    await rig.door.clear_tamper("installer")
    await type_keys(rig, "1234#")
    assert rig.relay_on()


async def test_duress_pin_opens_like_the_pin_and_tells_only_the_backend(rig: Rig) -> None:
    svc = service(rig)
    await svc.set_pin(owner="alice", pin="1234", by="alice")
    await svc.set_pin(owner="alice", pin="4321", by="alice", duress=True)
    await type_keys(rig, "1234#")
    await rig.advance(3)
    await type_keys(rig, "4321#")
    assert rig.relay_on()
    normal, duress = rig.events("access.granted")
    strip = ("access_id",)
    assert {k: v for k, v in normal.items() if k not in strip} == {k: v for k, v in duress.items() if k not in strip}
    [alarm] = rig.events("access.duress")
    assert alarm["owner"] == "alice" and alarm["access_id"] == duress["access_id"]
    rows = rig.access_log()
    pin_id = svc.creds.live(owner="alice", kind="pin")[0].id
    assert [(r["method"], r["label"], r["credential_id"]) for r in rows] == [("pin", "PIN", pin_id)] * 2
    with pytest.raises(AccessError) as e:
        await svc.set_pin(owner="alice", pin="1234", by="alice", duress=True)
    assert e.value.code == "code_unavailable"


async def test_temporary_code_window_use_count_and_doors(rig: Rig) -> None:
    svc = service(rig)
    now = rig.clock.wall()
    cred, code = await svc.create_code(owner="alice", by="alice", label="DHL Tuesday", valid_from=now + 60,
                                       valid_until=now + 3600, max_uses=2)
    assert len(code) == 6 and code.isdigit()
    await type_keys(rig, code + "#")
    assert not rig.relay_on()
    await rig.advance(60)
    for _ in range(2):
        await type_keys(rig, code + "#")
        assert rig.relay_on()
        await rig.advance(3)
    await type_keys(rig, code + "#")
    assert not rig.relay_on()
    assert [e["reason"] for e in rig.events("access.denied")] == ["not_yet_valid", "used_up"]
    assert [e["uses_left"] for e in rig.events("access.granted")] == [1, 0]
    assert [(r["method"], r["actor"], r["label"]) for r in rig.access_log()] == [("code", "alice", "DHL Tuesday")] * 2
    stored = rig.store.read_sync(lambda c: c.execute("SELECT uses FROM access_credentials WHERE id=?",
                                                     (cred.id,)).fetchone()[0])
    assert stored == 2
    _other, code2 = await svc.create_code(owner="bob", by="installer", label="cleaner", doors=["main"],
                                         valid_until=now + 7200)
    await rig.advance(3600)
    await type_keys(rig, code2 + "#")
    assert rig.relay_on()


async def test_secrets_are_never_stored_logged_or_evented(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    svc = service(rig)
    await svc.set_pin(owner="alice", pin="86420", by="installer")
    _, _code = await svc.create_code(owner="alice", by="alice", label="guest", code="97531")
    await type_keys(rig, "86420#")
    await rig.advance(3)
    await type_keys(rig, "97531#")
    await type_keys(rig, "11111#")
    dump = "\n".join(rig.store.read_sync(lambda c: [str(tuple(r)) for t in (
        "events", "access_log", "access_credentials", "kv") for r in c.execute(f"SELECT * FROM {t}")]))
    for secret in ("86420", "97531", "11111"):
        assert secret not in dump and secret not in caplog.text
    assert len(rig.events("access.granted")) == 2


async def test_bad_input_gets_a_specific_error_and_changes_nothing(rig: Rig) -> None:
    svc = service(rig)
    now = rig.clock.wall()
    await svc.enrol_card(owner="alice", number="04:A2:2B:91", label="blue fob", by="installer")
    cases = [
        (svc.set_pin(owner="bob", pin="12", by="bob"), "code_too_short"),
        (svc.set_pin(owner="bob", pin="12ab", by="bob"), "code_not_digits"),
        (svc.create_code(owner="bob", by="bob", label="x", valid_from=now + 100, valid_until=now + 50), "bad_window"),
        (svc.create_code(owner="bob", by="bob", label="x", max_uses=0), "bad_uses"),
        (svc.create_code(owner="bob", by="bob", label="x", doors=["garage"]), "unknown_door"),
        (svc.enrol_card(owner="bob", number="04a22b91", label="stolen", by="installer"), "card_enrolled"),
        (svc.revoke("nope"), "unknown_credential"),
    ]
    before = rig.store.read_sync(lambda c: c.execute("SELECT count(*) FROM access_credentials").fetchone()[0])
    for coro, code in cases:
        with pytest.raises(AccessError) as e:
            await coro
        assert e.value.code == code
    after = rig.store.read_sync(lambda c: c.execute("SELECT count(*) FROM access_credentials").fetchone()[0])
    assert before == after == 1
    [card] = svc.creds.live(kind="card")
    with pytest.raises(AccessError):
        await svc.revoke(card.id, owner="bob")  # a resident revokes only their own
    assert svc.creds.get(card.id) is not None


async def test_new_pin_replaces_the_old_and_revoked_codes_stop_working(rig: Rig) -> None:
    svc = service(rig)
    await svc.set_pin(owner="alice", pin="1234", by="alice")
    await svc.set_pin(owner="alice", pin="5678", by="alice")
    await type_keys(rig, "1234#")
    assert not rig.relay_on()
    await type_keys(rig, "5678#")
    assert rig.relay_on()
    await rig.advance(3)
    cred, code = await svc.create_code(owner="alice", by="alice", label="guest")
    await svc.revoke(cred.id, owner="alice")
    await type_keys(rig, code + "#")
    assert not rig.relay_on()
    assert [e["reason"] for e in rig.events("access.denied")] == ["unknown_credential"] * 2


async def test_credentials_survive_a_restart(tmp_path: Path) -> None:
    rig = await access_rig(tmp_path)
    await service(rig).set_pin(owner="alice", pin="2468", by="alice")
    await rig.close()
    rig = await access_rig(tmp_path)
    try:
        await type_keys(rig, "2468#")
        assert rig.relay_on()
    finally:
        await rig.close()


def test_keypad_config_is_checked_against_the_other_pins_and_relays(tmp_path: Path) -> None:
    from panel.errors import ConfigError
    from panel.platform import parse_config

    from .support import config_dict

    ok = parse_config(config_dict(access={"keypad": {"rows": ["GPIO5", 6, "BOARD32", 13], "cols": [16, 19, 21]}}))
    assert ok.access.keypad is not None and ok.access.keypad.rows == [5, 6, 12, 13]
    bad = config_dict(access={"keypad": {"rows": [5, 6, 12, 17], "cols": [16, 19], "relay": "garage"},
                              "osdp": {"device": "/dev/ttyUSB0", "relay": "nope"}})
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    text = str(e.value)
    assert "access.keypad.rows[3]: GPIO17 is already used by buttons[0].pin" in text
    assert "access.keypad.keys: 4 row(s) of legends for 4 rows and 2 columns" in text
    assert "access.keypad.relay: 'garage' is not a relay" in text and "access.osdp.relay: 'nope'" in text


async def test_a_recognised_but_expired_code_does_not_reset_the_guess_count(rig: Rig) -> None:
    svc = service(rig)
    now = rig.clock.wall()
    _, expired = await svc.create_code(owner="alice", by="alice", label="old", code="555000", valid_until=now + 1)
    await rig.advance(2)
    await type_keys(rig, "0000#")
    await type_keys(rig, "1111#")
    await type_keys(rig, expired + "#")  # recognised, expired: neither counts nor resets
    await type_keys(rig, "2222#")
    [blocked] = rig.events("access.blocked")
    assert blocked["failures"] == 3
    assert [e["reason"] for e in rig.events("access.denied")] == ["unknown_credential", "unknown_credential",
                                                                  "expired", "unknown_credential"]


async def test_an_idle_keypad_is_not_scanned_and_a_key_wakes_it(rig: Rig) -> None:
    from panel.access._keypad import IDLE_AFTER_SCANS

    keypad = rig.panel.keypad
    assert keypad is not None
    steps: list[int] = []
    real_step = keypad.step

    def counting_step() -> None:
        steps.append(1)
        real_step()

    keypad.step = counting_step  # type: ignore[method-assign]
    got: list[str] = []
    keypad.on_key = got.append
    await scans(rig, IDLE_AFTER_SCANS + 5)
    settled = len(steps)
    await scans(rig, 50)
    assert len(steps) == settled, "an idle keypad must not be scanned"
    assert all(not p.state for p in keys(rig).row_pins), "at rest every row is driven low, waiting for an edge"
    await type_keys(rig, "9")
    assert got == ["9"] and len(steps) > settled
