"""Standard Webhooks signing against the third-party ``standardwebhooks`` library, the sender against a
real receiver, and the whole panel (a subprocess, SIGKILLed and restarted) delivering through outages."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from panel.auth import WebhookSecretError, decode_secret, load_secrets
from panel.errors import SecretsError
from panel.link import RETRY_AFTER_MAX_S, Sender, body_of, parse_retry_after
from panel.link._webhooks import sign
from panel.platform import EventRow, SecretsConfig

from .eventually import eventually_sync
from .support import PanelProcess, config_dict, start_panel
from .webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(90)


def new_secret(n: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(n)).decode()


def row(**kw: Any) -> EventRow:
    base = dict(seq=1, id="5f0c1b8e-3d3a-4c8e-9a57-2b1f4d6e7a90", type="door.opened", key="door",
                time=1_741_944_413.589, boot="b", mono=1.0,
                data={"authorised": False, "grant": None, "panel": {"id": "p", "name": "Lobby ü"}}, delivered=None)
    base.update(kw)
    return EventRow(**base)  # type: ignore[arg-type]


# -- signing, against the library ------------------------------------------------------------------------
def test_our_signature_verifies_with_the_standardwebhooks_library() -> None:
    secret = new_secret()
    body = body_of(row())
    ts = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": sign([decode_secret(secret)], "msg_1", ts, body)}
    doc = Webhook(secret).verify(body, headers)
    assert doc == {"type": "door.opened", "timestamp": "2025-03-14T09:26:53.589Z",
                   "data": {"authorised": False, "grant": None, "panel": {"id": "p", "name": "Lobby ü"}}}
    # byte for byte what the library itself would sign
    lib = Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, UTC), body.decode())
    assert headers["webhook-signature"] == lib


def test_every_secret_signs_so_a_receiver_knowing_any_one_verifies() -> None:
    old, new, other = new_secret(), new_secret(48), new_secret()
    body, ts = body_of(row()), int(time.time())
    header = sign([decode_secret(old), decode_secret(new)], "msg_2", ts, body)
    assert len(header.split(" ")) == 2 and all(p.startswith("v1,") for p in header.split(" "))
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(ts), "webhook-signature": header}
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp"])
def test_a_changed_body_id_or_timestamp_fails_verification(tamper: str) -> None:
    secret = new_secret()
    body, ts = body_of(row()), int(time.time())
    headers = {"webhook-id": "msg_3", "webhook-timestamp": str(ts),
               "webhook-signature": sign([decode_secret(secret)], "msg_3", ts, body)}
    if tamper == "body":
        body = body.replace(b"false", b"true ")
    elif tamper == "id":
        headers["webhook-id"] = "msg_4"
    else:
        headers["webhook-timestamp"] = str(ts - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_the_body_is_byte_identical_whatever_the_key_order_of_data() -> None:
    a = row(data={"b": 1, "a": {"y": 2, "x": 1}})
    b = row(data={"a": {"x": 1, "y": 2}, "b": 1})
    assert body_of(a) == body_of(b)
    assert json.loads(body_of(a))["timestamp"] == "2025-03-14T09:26:53.589Z"


@pytest.mark.parametrize("value, fragment", [
    ("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", 'expected "whsec_"'),
    ("whsec_not base64!!", "not valid base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "decodes to 5 bytes; expected 24 to 64"),
    ("whsec_" + base64.b64encode(bytes(range(65))).decode(), "decodes to 65 bytes"),
])
def test_bad_secrets_are_refused_with_a_clear_message(value: str, fragment: str) -> None:
    with pytest.raises(WebhookSecretError) as e:
        decode_secret(value)
    assert fragment in str(e.value)
    assert value[6:] not in str(e.value), "the secret leaked into the message"


def test_the_secrets_loader_names_the_bad_entry_and_never_echoes_it() -> None:
    good, bad = new_secret(), "whsec_" + base64.b64encode(b"tooshort").decode()
    with pytest.raises(SecretsError) as e:
        load_secrets(SecretsConfig(), {"PANEL_SECRET_WEBHOOK_SECRETS": f"{good},{bad}"})
    msg = str(e.value)
    assert "webhook_secrets[1]" in msg and "24 to 64" in msg
    assert bad[6:] not in msg and good[6:] not in msg
    ok = load_secrets(SecretsConfig(), {"PANEL_SECRET_WEBHOOK_SECRETS": f"{good}, {new_secret()}"})
    assert len(ok.webhook_secrets) == 2 and ok.webhook_secrets[0] == good


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 0 ", now) == 0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now) == pytest.approx(30, abs=0.01)
    assert parse_retry_after("Tue, 14 Nov 2023 22:12:00 GMT", now) == 0  # in the past
    assert parse_retry_after("999999999", now) == RETRY_AFTER_MAX_S
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) is None


@pytest.mark.parametrize("status, outcome, scope", [
    (200, "delivered", "event"), (204, "delivered", "event"), (299, "delivered", "event"),
    (410, "gone", "endpoint"), (301, "retry", "endpoint"), (307, "retry", "endpoint"),
    (429, "retry", "endpoint"), (503, "retry", "endpoint"), (408, "retry", "endpoint"),
    (500, "retry", "event"), (400, "retry", "event"), (401, "retry", "event"), (404, "retry", "event"),
])
def test_only_2xx_is_success(status: int, outcome: str, scope: str) -> None:
    s = Sender("http://127.0.0.1:9/x", [new_secret()], timeout_s=1, panel_id="p")
    a = s.classify(status, {}, "", 0.0)
    assert (a.outcome, a.scope) == (outcome, scope)


def test_a_url_without_a_secret_is_refused() -> None:
    with pytest.raises(WebhookSecretError, match="no webhook secret"):
        Sender("http://127.0.0.1:9/x", [], timeout_s=1, panel_id="p")


# -- the sender against a real receiver ------------------------------------------------------------------
async def test_a_receiver_with_another_secret_rejects_and_rotation_verifies() -> None:
    old, new = new_secret(), new_secret()
    with WebhookReceiver([new]) as rc:
        wrong = Sender(rc.url, [old], timeout_s=2, panel_id="p")
        rotating = Sender(rc.url, [old, new], timeout_s=2, panel_id="p")
        try:
            refused = await wrong.send(row())
            accepted = await rotating.send(row())
        finally:
            await wrong.aclose()
            await rotating.aclose()
        assert (refused.outcome, refused.status) == ("retry", 401)
        assert (accepted.outcome, accepted.status) == ("delivered", 200)
        first, second = rc.snapshot()
        assert not first.verified and second.verified and second.id == row().id
        assert second.webhook_timestamp is not None and abs(int(second.webhook_timestamp) - time.time()) < 5


async def test_timeouts_and_refused_connections_are_endpoint_failures() -> None:
    secret = new_secret()
    with WebhookReceiver([secret]) as rc:
        rc.set_mode("slow", slow_s=1.0)
        s = Sender(rc.url, [secret], timeout_s=0.2, panel_id="p")
        try:
            slow = await s.send(row())
            rc.set_mode("down")
            down = await s.send(row())
        finally:
            await s.aclose()
            rc.set_mode("ok")
    assert (slow.outcome, slow.scope) == ("retry", "endpoint") and "timeout" in slow.detail
    assert (down.outcome, down.scope, down.status) == ("retry", "endpoint", None)


# -- the whole panel ----------------------------------------------------------------------------------
def panel_config(receiver: WebhookReceiver, **webhooks: Any) -> dict[str, Any]:
    return config_dict(webhooks={"url": receiver.url, "timeout_s": 1, "max_backoff_s": 1, "heartbeat_s": 10,
                                 **webhooks})


def db_rows(panel: PanelProcess) -> list[dict[str, Any]]:
    path = panel.config_path.parent / "state" / "panel.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("SELECT seq, id, type, key, delivered, data FROM events ORDER BY seq")]


def health(panel: PanelProcess) -> dict[str, Any]:
    return panel.health_details()


@pytest.mark.slow
def test_sigkill_restarts_and_outages_lose_nothing(tmp_path: Path) -> None:
    secret = new_secret()
    rc = WebhookReceiver([secret]).start()
    token = base64.b64encode(os.urandom(24)).decode()
    env = {"PANEL_SECRET_WEBHOOK_SECRETS": secret, "PANEL_SECRET_INSTALLER_TOKEN": token}
    kills: list[float] = []
    p = start_panel(tmp_path, panel_config(rc), env)
    try:
        def door_cycle(n: int) -> None:  # door.opened + door.forced_open + door.closed each
            for _ in range(n):
                p.api("POST", "/api/v1/sim/door/open")
                p.api("POST", "/api/v1/sim/door/close")

        def press(button: str) -> None:
            p.api("POST", f"/api/v1/sim/buttons/{button}/press")
            p.api("POST", f"/api/v1/sim/buttons/{button}/release")

        door_cycle(2)
        press("b303")  # a call: call.created, acknowledged -> ringing
        eventually_sync(lambda: any(r.type == "call.created" for r in rc.accepted()), 10, "call.created")
        rc.set_mode("error")
        door_cycle(2)
        press("b304")  # another unit during the call: busy
        # Under load the panel may still be backing off from the 500s: wait until each mode was met.
        eventually_sync(lambda: any(r.status == 500 for r in rc.snapshot()), 10, "a 500")
        rc.set_mode("throttle", retry_after="1")
        door_cycle(1)
        eventually_sync(lambda: any(r.status == 429 for r in rc.snapshot()), 10, "a 429")
        press("b303")  # the same unit again: ignored
        rc.set_mode("error")
        door_cycle(1)
        kills.append(time.monotonic())
        p.kill()  # SIGKILL with undelivered events

        rc.set_mode("down")
        p = PanelProcess(p.config_path, p.port, env).start()
        door_cycle(2)
        rc.set_mode("slow", slow_s=1.5)  # answers after the panel's 1 s timeout: duplicates follow
        door_cycle(1)
        time.sleep(1.2)  # the stimulus: past the panel's 1 s timeout, so it retries
        rc.set_mode("ok")
        time.sleep(0.15)  # the stimulus: kill while the backlog drains
        kills.append(time.monotonic())
        p.kill()  # SIGKILL while the backlog drains

        p = PanelProcess(p.config_path, p.port, env).start()
        door_cycle(1)
        eventually_sync(lambda: health(p)["checks"]["webhooks"]["backlog"] == 0, 30, "the backlog to drain")
        state = p.api("GET", "/api/v1/state", headers={"Authorization": f"Bearer {token}"}).json()
        assert state["backlog"] == 0
    finally:
        p.stop()
        rc.stop()

    rows = db_rows(p)
    delivered = [r for r in rows if r["delivered"] is not None]
    last_delivered = max(r["seq"] for r in delivered)
    late = [r["type"] for r in rows if r["delivered"] is None]
    assert all(r["seq"] > last_delivered for r in rows if r["delivered"] is None), "an event was left behind"
    assert set(late) <= {"panel.stopped", "call.status_updated"}, late  # recorded by the final SIGTERM

    unique = rc.unique()
    assert {r.id for r in unique} == {r["id"] for r in delivered}, "lost or unknown events"
    assert all(r.verified for r in rc.snapshot())
    types = Counter(r["type"] for r in delivered)
    assert types["door.opened"] == types["door.closed"] == types["door.forced_open"] == 10
    assert types["call.created"] == 1 and types["panel.started"] == 3 and types["panel.online"] == 3
    # every failure mode was really met
    statuses = Counter(r.status for r in rc.snapshot())
    assert statuses[500] and statuses[429] and any(r.mode == "slow" for r in rc.snapshot()), statuses

    # order per key: first arrivals follow the order in which the panel recorded them
    position = {r.id: i for i, r in enumerate(unique)}
    by_key: dict[str, list[str]] = {}
    for r in delivered:
        by_key.setdefault(r["key"], []).append(r["id"])
    for key, ids in by_key.items():
        assert sorted(ids, key=position.__getitem__) == ids, f"key {key} out of order"
    call_guid = next(json.loads(r["data"])["guid"] for r in delivered if r["type"] == "call.created")
    assert len(by_key[call_guid]) >= 3  # created, ringing, busy/ignored presses, failed at restart
    updates = [json.loads(r["data"]) for r in delivered if r["key"] == call_guid and r["type"] == "call.status_updated"]
    # the 2xx for call.created is what made the call ring
    assert (updates[0]["status"], updates[0]["who"], updates[0]["reason"]) == ("ringing", "backend",
                                                                                "backend_acknowledged")

    # duplicates: the same body, and only where the panel never saw the 2xx (slow) or was killed
    by_id: dict[str, list[Any]] = {}
    for r in rc.accepted():
        by_id.setdefault(r.id or "", []).append(r)
    for eid, got in by_id.items():
        assert len({g.body for g in got}) == 1, "a retry changed the body"
        if len(got) > 1:
            first = got[0]
            near_kill = any(k - 1.0 <= first.answered_at <= k + 0.05 for k in kills)
            assert first.mode == "slow" or near_kill, f"{eid} was acknowledged and sent again"


@pytest.mark.slow
def test_gone_disables_delivery_and_health_says_so(tmp_path: Path) -> None:
    secret = new_secret()
    rc = WebhookReceiver([secret]).start()
    rc.set_mode("gone")
    env = {"PANEL_SECRET_WEBHOOK_SECRETS": secret, "PANEL_SECRET_INSTALLER_TOKEN": "installer-token-0123456789"}
    p = start_panel(tmp_path, panel_config(rc), env)
    try:
        eventually_sync(lambda: health(p)["checks"]["webhooks"]["disabled"] is not None, 10, "disabled")
        h = health(p)
        assert h["status"] == "degraded"
        assert h["checks"]["webhooks"]["disabled"]["status"] == 410
        # Without a credential: the status alone, not the endpoint that answered 410 (tests/test_leaks.py)
        assert p.api("GET", "/api/v1/health").json() == {"code": "ok", "message": "panel degraded",
                                                         "status": "degraded"}
        p.api("POST", "/api/v1/sim/door/open")
        p.stop()
        rc.set_mode("ok")
        seen = len(rc.snapshot())
        p = PanelProcess(p.config_path, p.port, env).start()
        time.sleep(0.5)  # a window in which nothing may be delivered (the endpoint stays disabled)
        h = health(p)
        assert h["status"] == "degraded" and h["checks"]["webhooks"]["disabled"] is not None
        assert h["checks"]["webhooks"]["backlog"] >= 4 and len(rc.snapshot()) == seen
    finally:
        p.stop()
        rc.stop()
    assert "410 Gone" in p.log()


def test_a_webhook_url_without_a_secret_stops_the_start(tmp_path: Path) -> None:
    cfg = config_dict(webhooks={"url": "http://127.0.0.1:9/hooks"})
    p = start_panel(tmp_path, cfg, {"PANEL_SECRET_WEBHOOK_SECRETS": ""}, wait=False)
    assert p.proc is not None
    code = p.proc.wait(30)
    p.stop()
    assert code != 0 and "no webhook secret" in p.log()


def test_an_invalid_secret_stops_the_start_naming_the_entry(tmp_path: Path) -> None:
    cfg = config_dict(webhooks={"url": "http://127.0.0.1:9/hooks"})
    bad = "whsec_" + base64.b64encode(b"x" * 8).decode()
    p = start_panel(tmp_path, cfg, {"PANEL_SECRET_WEBHOOK_SECRETS": bad}, wait=False)
    assert p.proc is not None
    code = p.proc.wait(30)
    p.stop()
    assert code != 0 and "webhook_secrets[0]" in p.log() and bad[6:] not in p.log()


def test_the_documented_example_delivery_is_correctly_signed() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "webhooks.md").read_text()
    block = doc.split("```http\n", 1)[1].split("```", 1)[0]
    head, body = block.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    secret = doc.split('webhook_secrets = ["', 1)[1].split('"', 1)[0]
    body_bytes = body.strip().encode()
    ts = int(headers["webhook-timestamp"])
    expected = Webhook(secret).sign(headers["webhook-id"], datetime.fromtimestamp(ts, UTC), body.strip())
    assert headers["webhook-signature"] == expected == sign([decode_secret(secret)], headers["webhook-id"], ts, body_bytes)
    parsed = json.loads(body_bytes)
    assert set(parsed) == {"type", "timestamp", "data"}
    # the body is exactly what the panel would send for that event
    again = body_of(row(id=headers["webhook-id"], type=parsed["type"], data=parsed["data"], time=1_741_944_413.589))
    assert again == body_bytes
