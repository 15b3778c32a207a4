"""Property-based fuzzing of the MQTT command channel (issue 9, item 5).

In-process, at the layer just below the broker: ``Control.execute`` turns the payload into a reply and
``reply_bytes`` into the bytes the link publishes, on a real panel core (store, journal, door service,
relays on gpiozero's MockFactory) with a fake clock. At least 20,000 generated payloads per run
(``PANEL_HEAVY=1``: 200,000), with valid signed commands mixed into the stream so the grant path runs
too, and afterwards:

- 0 unhandled exceptions: no reply is ``internal_error``, nothing is logged at ERROR;
- 0 missing replies: every payload gets exactly one reply, JSON in UTF-8 with a code from the table,
  echoing the id whenever the payload carried a readable one;
- 0 relay movements without a valid grant: the relay pin rises exactly once for each valid signed
  ``open`` (which gets ``ok``) and never for anything else, replays and re-signed mutations included.

A handful of the same hostile payloads also go through a real Mosquitto (tests/mosquitto.py) to the
running link, each answered exactly once. The SDP half is tests/test_fuzz_sdp.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from panel.auth import Secrets
from panel.daemon import Panel
from panel.errors import CODES
from panel.link import MAX_OFFER_PAYLOAD, REFUSALS, Control, Nonces, SeenCommands, reply_bytes, signed
from panel.platform import parse_config

from .mosquitto import Broker, Client
from .rig import Rig, make_config
from .support import config_dict

HEAVY = os.environ.get("PANEL_HEAVY") == "1"
PAYLOADS = 200_000 if HEAVY else 20_000
VARIANTS = 31  # neighbours of each generated payload: generating is what costs, not sending
KEY = "f" * 24 + "-command-key"
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"


class Sync:
    """The ClockSync interface with a switch (the fuzz draws both modes)."""

    def __init__(self) -> None:
        self.synced = True

    def synchronized(self) -> bool:
        return self.synced


# -- what is generated ----------------------------------------------------------------------------------

HOSTILE_TEXT = ["", "\ud800", "\udfff", "a\ud800b", "é" * 9, "\x00" * 9, "\u2028\u2029", "\U0001f600" * 9,
                "x" * 300, "open", "status", "v1,AAAA", "v1," + "é" * 40, "[[[[", "{\"a\":", "NaN", "ÿ" * 64]


# Hypothesis' text leaves out surrogates by default; the channel must survive them. (Strategies are
# built once: building one per draw made generation, not the panel, the cost of this test.)
TEXT = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40),
                 st.text(st.characters(codec=None, categories=["Cs", "Cc", "Lo", "So"]), max_size=12),
                 st.text(ID_ALPHABET, min_size=8, max_size=40))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
                    max_leaves=8)


def _field(*good: Any) -> st.SearchStrategy[Any]:
    """A field's value: one of the plausible ones or anything at all."""
    return st.one_of(st.sampled_from(good), JSON)


COMMANDS = ["open", "status", "answer", "decline", "end", "offer", "hangup", "access_code", "access_pin",
            "access_card", "access_revoke", "access_list", "update", "explode"]


ID_VALUES = _field("abcd-1234-efgh", "\ud800abcdefg", "short", "a" * 129)
CMD_VALUES = _field(*COMMANDS, ["open"], {"cmd": "open"})
ACTION_VALUES = _field("open", "call", ["open"])
BOOL_VALUES = _field("true", "false", True, False)
ENVELOPE = {"exp": _field(1_767_225_630, 1e11, -1, 0), "nonce": _field("n" * 32, "é" * 16),
            "sig": _field("v1,AAAA", "v1," + "A" * 44, "é")}
FIELDS = st.dictionaries(st.sampled_from(["relay", "duration_s", "actor", "who", "call_guid", "sdp", "mode",
                                          "ice_servers", "session", "owner", "pin", "code", "label", "number",
                                          "credential", "version", "url", "size", "sha256", "signature", "rotation",
                                          "doors", "max_uses", "zzz"]), JSON, max_size=3)


@st.composite
def command_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """An object that looks like a command: the envelope's keys with good and hostile values, a few fields."""
    obj: dict[str, Any] = {}
    if draw(st.booleans()):
        obj["id"] = draw(ID_VALUES)
    if draw(st.integers(0, 9)) < 8:
        obj["cmd"] = draw(CMD_VALUES)
    else:
        obj["action"] = draw(ACTION_VALUES)
        obj["value"] = draw(BOOL_VALUES)
    for key, values in ENVELOPE.items():
        if draw(st.booleans()):
            obj[key] = draw(values)
    return {**obj, **draw(FIELDS)}


@dataclass(frozen=True)
class Valid:
    """A valid signed command, built when it is sent (fresh exp or the current nonce, a new id)."""

    cmd: str
    fields: tuple[tuple[str, Any], ...] = ()
    nonce: bool = False


@dataclass(frozen=True)
class Mutated:
    """A valid signed command, then changed after signing (or signed with the wrong key, or resent)."""

    how: str
    key: str = ""
    value: Any = None


@dataclass(frozen=True)
class Raw:
    payload: bytes
    retained: bool = False
    obj: Any = None  # what was encoded, when it was JSON: its variants change values, not just bytes


def _encode(obj: Any, ascii_only: bool) -> bytes:
    # ensure_ascii writes a lone surrogate as a \ud800 escape, as a backend's JSON library would.
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def raw(draw: st.DrawFn) -> Raw:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        payload = draw(st.binary(max_size=120))
    elif kind == 1:
        depth = draw(st.integers(1, 3000))
        opener = draw(st.sampled_from(["[", "{\"a\":"]))
        payload = ((opener * depth) + "1" + ("]" if opener == "[" else "}") * depth).encode()
    else:
        obj = draw(JSON) if kind == 2 else draw(command_shaped())
        return Raw(_encode(obj, draw(st.booleans())), retained=draw(st.integers(0, 49)) == 0, obj=obj)
    return Raw(payload, retained=draw(st.integers(0, 49)) == 0)


SPLICES = [b"", b"\\ud800", b"\\udc00\\ud800", b"\xed\xa0\x80", b"\xff", b"\x00", b"[" * 40, b"{", b"}", b"\"", b",",
           b'"cmd": "open"', b'"id": []', b"1e999", b"-0", b"NaN", b"\xc3\xa9" * 3, b"\\", b"\r\n"]


POOL: list[Any] = [*HOSTILE_TEXT, None, True, False, 0, -1, 2**53 + 1, 2**64, 1e308, -0.0, 0.5, 1_767_225_630, [],
                   {}, ["open"], {"a": [[[]]]}, [[[[[[[[[[[]]]]]]]]]]], "x" * 5000, "main", "gate", "resident-7"]
KEYS = ["id", "cmd", "exp", "nonce", "sig", "action", "value", "relay", "duration_s", "actor", "who", "call_guid",
        "sdp", "mode", "ice_servers", "session", "\ud800", ""]


def _tweak(obj: Any, rnd: random.Random) -> Any:
    """A value-level neighbour of a decoded payload: a key set to a hostile value, dropped, or wrapped."""
    if not isinstance(obj, dict) or not obj or rnd.randrange(4) == 0:
        return rnd.choice([obj, [obj], {"cmd": obj}, rnd.choice(POOL)])
    out = dict(obj)
    key = rnd.choice([*out, rnd.choice(KEYS)])
    how = rnd.randrange(3)
    if how == 0:
        out.pop(key, None)
    elif how == 1:
        out[key] = rnd.choice(POOL)
    else:
        out[key] = [out.get(key)] if rnd.randrange(2) else {"v": out.get(key)}
    return out


def variants(raw: Raw, rnd: random.Random, n: int) -> Iterator[bytes]:
    """Neighbours of a generated payload, by value (for JSON) and by byte (cut, splice, flip, repeat): many
    payloads per generated one, from hypothesis' own seeded random so the run stays deterministic."""
    payload = raw.payload
    for _ in range(n):
        if raw.obj is not None and rnd.randrange(2):
            yield _encode(_tweak(raw.obj, rnd), rnd.randrange(2) == 0)
            continue
        at = rnd.randrange(len(payload) + 1)
        how = rnd.randrange(4)
        if how == 0:
            yield payload[:at]
        elif how == 1:
            yield payload[:at] + rnd.choice(SPLICES) + payload[at + rnd.randrange(4):]
        elif how == 2 and payload:
            i = min(at, len(payload) - 1)
            yield payload[:i] + bytes([payload[i] ^ (1 << rnd.randrange(8))]) + payload[i + 1:]
        else:
            yield payload[:at] + payload[at // 2:at] + payload[at:]


VALID = st.one_of(st.builds(Valid, cmd=st.just("open"), nonce=st.booleans(),
                            fields=st.sampled_from([(), (("duration_s", 1.5),), (("relay", "main"),),
                                                    (("actor", "resident-7"),)])),
                  st.builds(Valid, cmd=st.just("status"), nonce=st.booleans()))
MUTATED = st.one_of(st.builds(Mutated, how=st.sampled_from(["replay", "wrong_key", "retained", "expired", "unsigned"])),
                    st.builds(Mutated, how=st.just("change"),
                              key=st.sampled_from(["relay", "duration_s", "actor", "exp", "cmd", "id", "nonce"]),
                              value=_field("gate", 3.0, "mallory", "status", "abcdefgh-0001")))
RAW = raw()
# Per example: RAWS raw payloads, each sent with VARIANTS neighbours, and GRANTS valid signed commands or
# mutations of one, in an order the example's random picks.
RAWS, GRANTS = 6, 6
PER_EXAMPLE = RAWS * (1 + VARIANTS) + GRANTS
ITEMS = st.tuples(st.lists(RAW, min_size=RAWS, max_size=RAWS),
                  st.lists(st.one_of(VALID, MUTATED), min_size=GRANTS, max_size=GRANTS))


# -- the fuzzed channel -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    payloads: int = 0
    granted: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Channel:
    """A panel core with its command handler; sends one item and checks its reply and the relay."""

    def __init__(self, tmp_path: Path) -> None:
        data = config_dict(mqtt={"require_signed_commands": True})
        self.rig = Rig(make_config(tmp_path, data), Secrets(command_key=KEY))
        self.sync = Sync()
        cfg = self.rig.cfg
        self.nonces = Nonces(self.rig.clock, cfg.mqtt.command_max_age_s)
        seen = SeenCommands(self.rig.store, self.rig.clock, self.rig.journal.boot_id, self.nonces,
                            cfg.mqtt.command_max_age_s)
        self.control = Control(cfg=cfg, secrets=self.rig.panel.secrets, door=self.rig.door, calls=self.rig.panel.calls,
                               journal=self.rig.journal, clock=self.rig.clock, clock_sync=self.sync, seen=seen,
                               nonces=self.nonces, call_service=self.rig.panel.call_service)
        self.pin = self.rig.relay_pin()
        self.sent: list[bytes] = []
        self.out = Outcome()
        self.n = 0
        self.examples = 0

    def valid_body(self, cmd: str, fields: tuple[tuple[str, Any], ...] = (), nonce: bool = False) -> dict[str, Any]:
        self.n += 1
        body: dict[str, Any] = {"id": f"fuzz-{self.n:08d}", "cmd": cmd, **dict(fields)}
        if nonce or not self.sync.synced:
            body["nonce"] = self.control.freshness().nonce  # as a backend reads it from state/freshness
        else:
            body["exp"] = round(self.rig.clock.wall() + 20, 3)
        return signed(KEY, self.rig.cfg.panel.id, body)

    async def send(self, item: Raw | Valid | Mutated, rnd: random.Random) -> None:
        retained = False
        grant = False
        if isinstance(item, Raw):
            payload, retained = item.payload, item.retained
            for variant in variants(item, rnd, VARIANTS):
                await self.check(variant, False, False)
        elif isinstance(item, Valid) or (item.how == "replay" and not self.sent):
            cmd, fields, nonce = (item.cmd, item.fields, item.nonce) if isinstance(item, Valid) else ("open", (), False)
            payload, grant = _encode(self.valid_body(cmd, fields, nonce), True), cmd == "open"
            self.sent.append(payload)
        elif item.how == "replay":
            payload = self.sent[-1]  # the last valid one: still fresh, so only its spent id refuses it
        else:
            body = self.valid_body("open")
            if item.how == "wrong_key":
                body = signed(KEY + "x", self.rig.cfg.panel.id, {k: v for k, v in body.items() if k != "sig"})
            elif item.how == "expired":
                body = signed(KEY, self.rig.cfg.panel.id, {k: v for k, v in body.items() if k not in ("sig", "nonce")}
                              | {"exp": round(self.rig.clock.wall() - 1, 3)})
            elif item.how == "unsigned":
                body = {k: v for k, v in body.items() if k != "sig"}
            elif item.how == "change":
                body = {**body, item.key: item.value if body.get(item.key) != item.value else "changed"}
            retained = item.how == "retained"
            payload = _encode(body, True)
        await self.check(payload, retained, grant)

    async def send_all(self, items: list[Raw | Valid | Mutated], rnd: random.Random) -> None:
        for item in items:
            await self.send(item, rnd)

    async def check(self, payload: bytes, retained: bool, grant: bool) -> None:
        self.out.payloads += 1
        before = len(self.pin.states)  # the mock pin logs every change
        reply = await self.control.execute(payload, retained=retained)
        data = reply_bytes(reply)  # what the link publishes: one message
        body = json.loads(data.decode("utf-8"))
        code = body["code"]
        self.out.codes[code] = self.out.codes.get(code, 0) + 1
        moved = sum(s.state for s in self.pin.states[before:])
        problems = []
        if code == "internal_error" or (code != "ok" and (code not in REFUSALS or code not in CODES)):
            problems.append(f"code {code}")
        if grant != (code == "ok" and moved == 1) or (not grant and moved):
            problems.append(f"grant expected {grant}, reply {code}, relay rose {moved} times")
        if not grant and code == "ok" and body.get("cmd") == "open":
            problems.append("an open that was not a valid grant was answered ok")
        sent_id = _readable_id(payload)
        if sent_id is not None and body.get("id") != sent_id:
            problems.append(f"id {sent_id!r} not echoed ({body.get('id')!r})")
        if problems:
            self.out.errors.append(f"{payload[:160]!r} (retained={retained}): {'; '.join(problems)}: {body}")
        if moved:
            self.out.granted += 1
            await self.rig.advance(self.rig.cfg.relay("main").max_on_s + 0.1)  # the relay times out: off again


def _not_json(name: str) -> Any:
    raise ValueError(name)


def _readable_id(payload: bytes) -> str | None:
    """The id a reply must echo: a valid one, in a JSON object that parsed."""
    if len(payload) > MAX_OFFER_PAYLOAD:
        return None  # not read at all
    try:
        # Strictly UTF-8 and without NaN, as JSON is (RFC 8259) and the panel reads it.
        obj = json.loads(payload.decode("utf-8"), parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    cid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(cid, str) and 8 <= len(cid) <= 128 and cid[0].isalnum() and all(c in ID_ALPHABET for c in cid):
        return cid
    return None


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@pytest.fixture
def quiet_panel_log() -> Iterator[ErrorLog]:
    """Refusals are warnings (one per payload): not formatted here, errors counted."""
    handler = ErrorLog()
    panel = logging.getLogger("panel")
    level = panel.level
    panel.setLevel(logging.ERROR)
    panel.addHandler(handler)
    yield handler
    panel.removeHandler(handler)
    panel.setLevel(level)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """The store on tmpfs when there is one: refused opens and spent ids are thousands of commits, and
    this test is about what the channel does with input, not about the disk (test_durability.py is)."""
    if not Path("/dev/shm").is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="panel-fuzz-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(1800 if HEAVY else 120)
def test_fuzzed_mqtt_payloads_each_get_one_reply_and_never_move_the_relay_without_a_grant(
        state_dir: Path, quiet_panel_log: ErrorLog) -> None:
    with asyncio.Runner() as runner:
        channel = runner.run(_channel(state_dir))

        @settings(max_examples=-(-PAYLOADS // PER_EXAMPLE), derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(items=ITEMS, synced=st.booleans(), rnd=st.randoms())
        def run(items: tuple[list[Raw], list[Valid | Mutated]], synced: bool, rnd: random.Random) -> None:
            channel.examples += 1
            channel.sync.synced = synced
            batch: list[Raw | Valid | Mutated] = [*items[0], *items[1]]
            rnd.shuffle(batch)
            runner.run(channel.send_all(batch, rnd))

        started = time.monotonic()
        run()
        # Each refusal that guards the grant, for certain: under a forced seed (pytest-randomly sets
        # hypothesis's) the draws may bring few of one kind.
        channel.sync.synced = True
        for how in ("replay", "wrong_key", "retained", "expired", "unsigned"):
            for _ in range(3):
                runner.run(channel.send(Mutated(how), random.Random(0)))
        took = time.monotonic() - started
        runner.run(channel.rig.close())
    out = channel.out
    print(f"\n{channel.examples} examples, {out.payloads} payloads in {took:.1f} s, {out.granted} grants; "
          f"codes: {sorted(out.codes.items())}")
    assert out.errors == [], "\n".join(out.errors[:20])
    assert quiet_panel_log.records == []
    assert out.payloads >= PAYLOADS
    # The stream exercised the grant path and the refusals that guard it.
    assert out.granted >= PAYLOADS // 400
    for code in ("malformed", "unsupported_command", "unsigned", "bad_signature", "replayed", "expired", "retained"):
        assert out.codes.get(code, 0) >= 3, (code, out.codes)


async def _channel(tmp_path: Path) -> Channel:
    return Channel(tmp_path)


async def test_each_finding_of_issue_9_is_a_refusal_with_one_encodable_reply(
        state_dir: Path, quiet_panel_log: ErrorLog) -> None:
    """On main: a list as cmd and a non-ASCII nonce or sig were internal_error, a lone surrogate in id made
    the reply unencodable (no reply at all)."""
    channel = Channel(state_dir)
    try:
        for payload in hostile_payloads():
            await channel.check(payload, retained=False, grant=False)
        await channel.check(_encode({**channel.valid_body("status"), "nonce": "é" * 16}, False), False, False)
    finally:
        await channel.rig.close()
    assert channel.out.errors == [] and quiet_panel_log.records == []
    assert channel.out.payloads == len(hostile_payloads()) + 1 and "internal_error" not in channel.out.codes


# -- through a real broker ---------------------------------------------------------------------------------

A = "panel-a"
BROKER_KEY = "b" * 24 + "-command-key"


def hostile_payloads() -> list[bytes]:
    """The findings of issue 9 and their neighbours, as bytes on the wire."""
    return [
        b'{"id": "abcd-1234-efgh", "cmd": ["open"], "exp": 1767225630}',
        b'{"id": "abcd-1234-efgi", "cmd": {"x": 1}}',
        b'{"id": "\\ud800abcdefgh", "cmd": "open"}',
        b'{"id": "abcd-1234-efgj", "cmd": "status", "nonce": "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"}',
        b'{"id": "abcd-1234-efgk", "cmd": "status", "sig": "\xc3\xa9"}',
        b'{"id": "abcd-1234-efgl", "cmd": "open", "actor": "\\udc00"}',
        b'{"id": "abcd-1234-efgm", "cmd": "open", "relay": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"id": "abcd-1234-efgn", "cmd": "offer", "who": "a", "sdp": "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\ns=-\\r\\n'
        + b"m=audio 9 RTP/AVP 0\\r\\n" * 600 + b'"}',
        b"\xff\xfe\x00",
        b"[" * 50_000,
        b"",
        b"null",
        b'{"action": ["open"], "value": true}',
    ]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(tmp_path_factory.mktemp("broker"), panels=[A]) as b:
        yield b


@pytest.fixture
async def linked(broker: Broker, tmp_path: Path) -> AsyncIterator[Panel]:
    data = config_dict(mqtt=broker.mqtt_config(A, require_signed_commands=True))
    data["panel"] = {"id": A, "name": "Fuzzed entrance"}
    data["storage"] = {"dir": str(tmp_path / "state")}
    sync = Sync()
    panel = Panel(parse_config(data), Secrets(mqtt_password=broker.passwords.get(A), command_key=BROKER_KEY),
                  simulate=True, clock_sync=sync)
    await panel.start()
    try:
        yield panel
    finally:
        await panel.stop("test over")


async def test_hostile_payloads_through_mosquitto_get_exactly_one_reply_each(linked: Panel, broker: Broker) -> None:
    from .eventually import eventually

    await eventually(lambda: linked.mqtt is not None and linked.mqtt.connected, 10, "the panel never connected")
    pin = linked.hw.factory.pin(f"GPIO{linked.cfg.relay('main').pin}")
    pin.clear_states()
    async with Client(broker) as backend:
        replies = []
        for i, payload in enumerate(hostile_payloads()):
            replies.append(await backend.request(A, payload))
            if i % 4 == 0:  # a valid signed open between them: the wiring still grants
                body = signed(BROKER_KEY, A, {"id": str(uuid.uuid4()), "cmd": "open", "exp": round(time.time() + 10, 3)})
                granted = await backend.request(A, body)
                assert granted["code"] == "ok", granted
                linked.door.release()
        # Exactly one reply each: the replies topic holds one message per request, up to a last probe's.
        last = signed(BROKER_KEY, A, {"id": str(uuid.uuid4()), "cmd": "status", "exp": round(time.time() + 10, 3)})
        assert (await backend.request(A, last))["code"] == "ok"
        answered = [m for m in backend.messages if m.topic.matches(f"panels/{A}/replies/#")]
    requests = len(replies) + len(range(0, len(replies), 4)) + 1
    assert len(answered) == requests
    assert len({bytes(getattr(m.properties, "CorrelationData", b"")) for m in answered}) == requests
    codes = [r["code"] for r in replies]
    assert "internal_error" not in codes and "ok" not in codes, codes
    assert codes[:7] == ["malformed", "malformed", "malformed", "malformed", "malformed", "malformed", "malformed"]
    assert codes[7] == "bad_sdp" and replies[0]["id"] == "abcd-1234-efgh" and replies[2]["id"] is None
    grants = sum(s.state for s in pin.states)
    assert grants == len(range(0, len(hostile_payloads()), 4))
