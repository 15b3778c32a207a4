"""Command wire format, canonical form and signatures, freshness, replay store, and docs/mqtt.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from panel.link import (
    CLOCK_SKEW_S,
    KernelClockSync,
    Nonces,
    check_fresh,
)
from panel.link._commands import (
    COMMAND_MODELS,
    REFUSALS,
    REPLY_MODELS,
    CommandRefused,
    EndCommand,
    Envelope,
    OpenCommand,
    Reply,
    SensorbergCommand,
    canonical,
    decode,
    jcs,
    parse,
    sign,
    signed,
    verify,
)
from panel.platform import FakeClock

from .mosquitto import acl_text

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "mqtt.md").read_text()


def refused(payload: Any) -> str:
    try:
        parse(decode(payload if isinstance(payload, bytes) else json.dumps(payload).encode()))
    except CommandRefused as e:
        return e.code
    raise AssertionError(f"accepted: {payload!r}")


# -- parsing ---------------------------------------------------------------------------------------


def test_every_command_parses_into_its_model() -> None:
    base = {"id": "abcd-1234-efgh", "exp": 1767225630}
    assert parse({**base, "cmd": "open"}) == OpenCommand(cmd="open", **base)
    assert parse({**base, "cmd": "open", "relay": "gate", "duration_s": 2.5, "actor": "r-1"}).duration_s == 2.5
    assert parse({**base, "cmd": "answer", "who": "alice"}).who == "alice"  # type: ignore[union-attr]
    assert parse({**base, "cmd": "decline"}).who == "backend"  # type: ignore[union-attr]
    assert parse({**base, "cmd": "end", "call_guid": "g-1"}).call_guid == "g-1"  # type: ignore[union-attr]
    assert parse({**base, "cmd": "status"}).cmd == "status"


@pytest.mark.parametrize("value", ["true", True])
def test_sensorberg_open_alias(value: Any) -> None:
    c = parse({"id": "sb-000000001", "nonce": "n" * 32, "action": "open", "value": value})
    assert isinstance(c, OpenCommand) and c.relay is None and c.nonce == "n" * 32


@pytest.mark.parametrize("value", ["false", False])
def test_sensorberg_end_call_alias(value: Any) -> None:
    c = parse({"id": "sb-000000002", "exp": 1767225630, "action": "call", "value": value, "actor": "alice"})
    assert isinstance(c, EndCommand) and c.who == "alice"


@pytest.mark.parametrize("payload, code", [
    (b"", "malformed"),
    (b"\xff\xfe", "malformed"),
    (b"not json", "malformed"),
    (b"[]", "malformed"),
    (b'{"id": "abcd-1234", "cmd": "open", "exp": NaN}', "malformed"),
    (b"{" + b" " * 5000 + b"}", "malformed"),
    ({"cmd": "open", "exp": 1767225630}, "malformed"),  # no id
    ({"id": "short", "cmd": "open", "exp": 1767225630}, "malformed"),
    ({"id": "has spaces in it", "cmd": "open"}, "malformed"),
    ({"id": "abcd-1234", "cmd": "open", "exp": 1767225630000}, "malformed"),  # milliseconds
    ({"id": "abcd-1234", "cmd": "open", "dur": 3}, "malformed"),
    ({"id": "abcd-1234", "cmd": "answer"}, "malformed"),  # who is required
    ({"id": "abcd-1234", "cmd": "answer", "who": ""}, "malformed"),
    ({"id": "abcd-1234", "cmd": "open", "actor": "bad\nactor"}, "malformed"),
    ({"id": "abcd-1234"}, "malformed"),
    ({"id": "abcd-1234", "cmd": "reboot"}, "unsupported_command"),
    ({"id": "abcd-1234", "action": "call", "value": "true"}, "unsupported_command"),
    ({"id": "abcd-1234", "action": "open", "value": "false"}, "unsupported_command"),
    ({"id": "abcd-1234", "action": "light", "value": "true"}, "unsupported_command"),
    ({"id": "abcd-1234", "action": "open", "value": "yes"}, "unsupported_command"),
])
def test_bad_commands_are_refused_with_a_stable_code(payload: Any, code: str) -> None:
    assert refused(payload) == code


def test_malformed_messages_name_the_field() -> None:
    with pytest.raises(CommandRefused, match=r"duration_s: .*number"):
        parse({"id": "abcd-1234", "cmd": "open", "duration_s": "long"})
    with pytest.raises(CommandRefused, match=r"dur: unknown field"):
        parse({"id": "abcd-1234", "cmd": "open", "dur": 3})


@pytest.mark.parametrize("fields, field", [
    ({"id": 12345678901}, "id"),
    ({"exp": "1767225630"}, "exp"),
    ({"exp": True}, "exp"),
    ({"nonce": 1234567890123}, "nonce"),
    ({"sig": 1}, "sig"),
    ({"duration_s": "1"}, "duration_s"),
    ({"duration_s": True}, "duration_s"),
    ({"duration_s": 0.1}, "duration_s"),  # below any relay's floor: the schema's, on every channel
    ({"relay": "Main Door"}, "relay"),
    ({"call_guid": ""}, "call_guid"),
])
def test_the_envelope_and_open_are_strict_and_name_the_field(fields: dict[str, Any], field: str) -> None:
    # Lax validation turned "1" and true into 1.0: an open with them moved the relay.
    with pytest.raises(CommandRefused) as exc:
        parse({"id": "abcd-1234", "cmd": "open", "exp": 1767225630, **fields})
    assert exc.value.code == "malformed" and str(exc.value).startswith(f"{field}: "), str(exc.value)


def test_a_duplicate_key_is_malformed_naming_its_path_whatever_the_command() -> None:
    for payload, path in ((b'{"id": "abcd-1234", "cmd": "open", "relay": "main", "relay": "gate"}', "relay"),
                          (b'{"id": "abcd-1234", "id": "abcd-5678", "cmd": "status"}', "id"),
                          (b'{"id": "abcd-1234", "cmd": "offer", "ice_servers": [{"urls": "a", "urls": "b"}]}',
                           "ice_servers.0.urls")):
        with pytest.raises(CommandRefused) as exc:
            decode(payload)
        assert exc.value.code == "malformed" and str(exc.value).startswith(f"{path}: duplicate key"), str(exc.value)
        assert exc.value.partial["id"]  # still read for the reply's id, never acted on


# -- canonical form and signatures -----------------------------------------------------------------


def test_jcs_matches_rfc_8785() -> None:
    # RFC 8785 section 3.2.2's example, parsed as JSON
    raw = (r'{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
           r' "string": "\u20ac$\u000F\u000aA' + "'" + r'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}')
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert jcs(json.loads(raw)) == expected
    # property sorting by UTF-16 code units (RFC 8785 section 3.2.3)
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    order = json.loads(jcs({k: i for i, k in enumerate(keys)}), object_pairs_hook=lambda kv: [k for k, _ in kv])
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize("value, text", [
    (0, "0"), (-0.0, "0"), (3.0, "3"), (-1.5, "-1.5"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
    (1e-7, "1e-7"), (0.000001, "0.000001"), (123456789012345680000.0, "123456789012345680000"),
    (1767225630.125, "1767225630.125"), (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
])
def test_jcs_numbers_print_like_ecmascript(value: float, text: str) -> None:
    assert jcs(value) == text


def test_the_documented_signature_example_holds() -> None:
    body = json.loads(re.search(r"Worked example.*?```json\n(.*?)\n```", DOC, re.S).group(1))  # type: ignore[union-attr]
    form = re.search(r"```text canonical\n(.*?)\n```", DOC, re.S).group(1)  # type: ignore[union-attr]
    assert canonical("entrance-1", body).decode() == form
    sig = sign("example-command-key-0123456789", "entrance-1", body)
    assert f"Signature: `{sig}`" in DOC


def test_signatures_bind_the_whole_command_and_the_panel() -> None:
    key = "a-command-key-of-some-length"
    body = signed(key, "entrance-1", {"id": "abcd-1234", "cmd": "open", "exp": 1767225630})
    assert verify(key, "entrance-1", body)
    # order and whitespace on the wire do not matter: the decoded object is signed
    assert verify(key, "entrance-1", json.loads(json.dumps(dict(reversed(body.items())), indent=3)))
    assert not verify(key, "entrance-2", body)
    assert not verify(key + "x", "entrance-1", body)
    for field, value in [("exp", 1767225631), ("cmd", "status"), ("relay", "main"), ("id", "abcd-1235")]:
        assert not verify(key, "entrance-1", {**body, field: value}), field
    assert not verify(key, "entrance-1", {k: v for k, v in body.items() if k != "sig"})


# -- freshness -------------------------------------------------------------------------------------


class FakeSync:
    def __init__(self, synced: bool) -> None:
        self.synced = synced

    def synchronized(self) -> bool:
        return self.synced


def fresh_code(exp: float | None, nonce: str | None, *, synced: bool, now: float, nonces: Nonces) -> str:
    try:
        check_fresh(exp, nonce, synced=synced, now=now, nonces=nonces, max_age_s=30)
    except CommandRefused as e:
        return e.code
    return "ok"


def test_freshness_with_a_synchronised_clock() -> None:
    clock = FakeClock()
    nonces = Nonces(clock, 30)
    now = clock.wall()
    assert fresh_code(now + 10, None, synced=True, now=now, nonces=nonces) == "ok"
    assert fresh_code(now - 0.001, None, synced=True, now=now, nonces=nonces) == "expired"
    assert fresh_code(now + 30 + CLOCK_SKEW_S - 0.01, None, synced=True, now=now, nonces=nonces) == "ok"
    assert fresh_code(now + 30 + CLOCK_SKEW_S + 0.01, None, synced=True, now=now, nonces=nonces) == "expiry_too_far"
    assert fresh_code(None, None, synced=True, now=now, nonces=nonces) == "missing_expiry"
    assert fresh_code(None, nonces.current, synced=True, now=now, nonces=nonces) == "ok"
    assert fresh_code(now + 10, "0" * 32, synced=True, now=now, nonces=nonces) == "stale_nonce"


def test_freshness_before_time_sync_rests_on_rotating_nonces() -> None:
    clock = FakeClock(wall_start=0.0)  # 1970: what a Pi without RTC may believe
    nonces = Nonces(clock, 30)
    now = clock.wall()
    first = nonces.current
    assert fresh_code(now + 10, None, synced=False, now=now, nonces=nonces) == "clock_unsynced"
    assert fresh_code(1e10, None, synced=False, now=now, nonces=nonces) == "clock_unsynced"
    assert fresh_code(None, first, synced=False, now=now, nonces=nonces) == "ok"
    assert fresh_code(now - 1e6, first, synced=False, now=now, nonces=nonces) == "ok"  # exp means nothing yet
    clock.advance(30)
    assert nonces.roll() and nonces.current != first and nonces.previous == first
    assert fresh_code(None, first, synced=False, now=now, nonces=nonces) == "ok"  # the previous one still counts
    clock.advance(30)
    assert fresh_code(None, first, synced=False, now=now, nonces=nonces) == "stale_nonce"
    # a restart draws a new nonce: nothing captured before it is accepted after it
    assert fresh_code(None, nonces.current, synced=False, now=now, nonces=Nonces(clock, 30)) == "stale_nonce"
    # idle for longer than two periods: neither old nonce survives
    kept = nonces.current
    clock.advance(61)
    assert nonces.roll() and nonces.previous is None and not nonces.accepts(kept)


def test_kernel_clock_sync_reads_the_timesyncd_flag(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    sync = KernelClockSync(flag)
    kernel = sync.kernel_synchronized()
    assert kernel in (True, False, None)
    assert sync.synchronized() is bool(kernel)
    flag.touch()
    assert sync.synchronized() is True


# -- docs/mqtt.md ------------------------------------------------------------------------------------


def _blocks(tag: str) -> list[tuple[str, str]]:
    return re.findall(r"```" + tag + r"([^\n]*)\n(.*?)\n```", DOC, re.S)


def test_docs_list_every_refusal_code_and_every_field() -> None:
    table = {m for m in re.findall(r"^\| `([a-z_]+)` \|", DOC, re.M)}
    assert set(REFUSALS) | {"ok"} <= table
    for model in [Envelope, SensorbergCommand, *COMMAND_MODELS.values(), *REPLY_MODELS.values()]:
        for name in model.model_fields:
            assert f"`{name}`" in DOC, f"{model.__name__}.{name} is not documented"
    for cmd in COMMAND_MODELS:
        assert f"`{cmd}`" in DOC


def test_docs_examples_are_valid_commands_and_replies() -> None:
    commands = _blocks("json command")
    assert len(commands) >= 5
    for _, text in commands:
        parse(decode(text.encode()))
    replies = _blocks("json reply")
    assert len(replies) >= 5
    for label, text in replies:
        body = json.loads(text)
        cmd = label.strip()
        model = REPLY_MODELS[cmd] if cmd and body["code"] == "ok" else Reply
        model.model_validate(body)
        assert body["code"] == "ok" or body["code"] in REFUSALS


def test_docs_acl_is_the_one_the_tests_run_with() -> None:
    [(_, text)] = _blocks("text acl")
    assert text + "\n" == acl_text()


def test_what_jcs_cannot_represent_is_malformed_not_a_crash() -> None:
    """Integers beyond 2**53 lose digits as IEEE doubles, a lone surrogate is not UTF-8: both are refused."""
    for bad in ({"id": "cmd-00000001", "n": 2**60}, {"id": "cmd-00000001", "s": "\ud800"}):
        with pytest.raises(CommandRefused) as e:
            canonical("panel-1", bad)
        assert e.value.code == "malformed" and "RFC 8785" in str(e.value)
