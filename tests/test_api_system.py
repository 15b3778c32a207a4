"""System info, the config read and validated update (hot keys applied at once, the rest flagged for a
restart, a bad change writes nothing), the live self-test, and the body-size and rate bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from panel import __version__
from panel.auth import Secrets

from .api_support import STATIC_TOKEN, api_rig, bearer, served, token
from .rig import Rig
from .support import config_dict

INSTALLER = bearer(STATIC_TOKEN)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = api_rig(tmp_path, secrets=Secrets(installer_token=STATIC_TOKEN, command_key="k" * 32))
    data = config_dict()
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {**data["api"], "mutations_per_minute": 100_000, "login_backoff_s": 0.05}
    path = tmp_path / "panel.toml"
    path.write_text("# installer's note: keep this comment\n" + tomli_w.dumps(data))
    r.panel.config_path = path
    yield r
    await r.close()


async def test_system_info(rig: Rig) -> None:
    async with served(rig) as c:
        r = await c.get("/api/v1/system", headers=INSTALLER)
        assert r.status_code == 200, r.text
        info = r.json()
        assert info["code"] == "ok" and info["firmware_version"] == __version__ and info["model"]
        assert info["panel"]["id"] == "test-panel" and info["backlog"] == 0
        assert any(i["name"] == "lo" and "127.0.0.1" in i["addresses"] for i in info["network"])
        assert info["storage"]["dir"] == str(rig.cfg.storage.dir) and info["storage"]["database_bytes"] > 0
        assert info["storage"]["free_bytes"] > 0 and info["uptime_s"] >= 0
        assert info["tls"] == {"enabled": False, "fingerprint_sha256": None, "not_after": None, "generated": None}
        assert "cpu_temperature_c" in info  # None on machines without a thermal zone
        viewer = bearer(await token(rig, "viewer", "v"))
        assert (await c.get("/api/v1/system", headers=viewer)).status_code == 403


async def test_config_read_has_no_secret(rig: Rig) -> None:
    async with served(rig) as c:
        view = (await c.get("/api/v1/config", headers=INSTALLER)).json()
    assert view["config"]["panel"]["id"] == "test-panel" and view["restart_required"] == []
    assert "keep this comment" in view["toml"]
    text = str(view)
    assert STATIC_TOKEN not in text and "k" * 32 not in text


async def _patch(c: Any, body: dict[str, Any]) -> Any:
    return await c.patch("/api/v1/config", headers=INSTALLER, json=body)


async def test_hot_keys_apply_at_once_and_the_file_keeps_its_comments(rig: Rig) -> None:
    path = rig.panel.config_path
    assert path is not None
    async with served(rig) as c:
        r = await _patch(c, {"set": {"door.relays[0].hold_s": 3, "calls.ring_timeout_s": 20,
                                     "panel.name": "Back door"}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["changed"] == ["calls.ring_timeout_s", "door.relays[0].hold_s", "panel.name"]
        assert body["applied"] == body["changed"] and body["restart_required"] == []
        text = path.read_text()
        assert "keep this comment" in text and "hold_s = 3" in text and 'name = "Back door"' in text
        assert rig.panel.calls.policy.ring_timeout_s == 20
        # the next release lasts the new hold time
        await rig.door.unlock(cause="installer", actor="installer", method="api")
        await rig.advance(2.9)
        assert rig.relay_on()
        await rig.advance(0.2)
        assert not rig.relay_on()
        state = (await c.get("/api/v1/state", headers=INSTALLER)).json()
        assert state["panel"]["name"] == "Back door"
        assert (await c.get("/api/v1/config", headers=INSTALLER)).json()["restart_required"] == []


async def test_other_keys_are_written_and_flagged_for_a_restart(rig: Rig) -> None:
    async with served(rig) as c:
        r = await _patch(c, {"set": {"buttons[0].debounce_ms": 50, "log.level": "debug"}})
        assert r.status_code == 200, r.text
        assert r.json()["restart_required"] == ["buttons[0].debounce_ms"] and r.json()["applied"] == ["log.level"]
        assert "restart the panel for buttons[0].debounce_ms" in r.json()["message"]
        assert rig.panel.cfg.buttons[0].debounce_ms == 20  # still the running value
        view = (await c.get("/api/v1/config", headers=INSTALLER)).json()
        assert view["restart_required"] == ["buttons[0].debounce_ms"]
        r = await _patch(c, {"set": {"buttons[0].debounce_ms": 50}})
        assert r.json()["changed"] == [] and "nothing changes" in r.json()["message"]
        assert r.json()["restart_required"] == ["buttons[0].debounce_ms"]


@pytest.mark.parametrize("body, status, code, words", [
    ({"set": {"door.relays[0].hold_s": -1}}, 422, "config_invalid",
     "door.relays[0].hold_s: -1 is not allowed; expected a number of seconds between 0.5 and 60"),
    ({"set": {"calls.ring_timout_s": 20}}, 422, "config_invalid", "did you mean 'ring_timeout_s'"),
    ({"set": {"door.relays[0].hold_s": 7}}, 422, "config_invalid", "door.relays[0].max_on_s"),
    ({"set": {"door.relays[5].hold_s": 1}}, 422, "invalid_request", "no entry [5]"),
    ({"set": {"calls..x": 1}}, 422, "invalid_request", "calls..x"),
    ({"set": {"calls.ring_timeout_s": None}}, 422, "invalid_request", "unset"),
    ({"set": {}}, 422, "invalid_request", "set"),
    ({"set": {"media": {"video": {"source": "h264_pipe", "command": ["sh", "-c", "id"]}}}}, 403, "config_local_only",
     "media.video.command"),
    ({"set": {"secrets.file": "/etc/shadow"}}, 403, "config_local_only", "secrets.file"),
    ({"set": {"api.tls": "off", "api.allow_plain_http": True}}, 403, "config_local_only", "api.allow_plain_http"),
    ({"set": {"calls.ring_timeout_s": 20}, "dry_run": "yes"}, 422, "invalid_request", "dry_run"),
])
async def test_a_bad_change_names_the_key_and_writes_nothing(rig: Rig, body: dict[str, Any], status: int, code: str,
                                                             words: str) -> None:
    path = rig.panel.config_path
    assert path is not None
    before = path.read_bytes()
    async with served(rig) as c:
        r = await _patch(c, body)
    assert r.status_code == status and r.json()["code"] == code and words in r.json()["message"], r.text
    assert path.read_bytes() == before
    assert rig.panel.cfg.calls.ring_timeout_s == 45


async def test_dry_run_validates_without_writing(rig: Rig) -> None:
    path = rig.panel.config_path
    assert path is not None
    before = path.read_bytes()
    async with served(rig) as c:
        r = await _patch(c, {"set": {"calls.max_call_s": 600}, "dry_run": True})
    assert r.status_code == 200 and r.json()["changed"] == ["calls.max_call_s"] and r.json()["dry_run"] is True
    assert path.read_bytes() == before and rig.panel.cfg.calls.max_call_s == 300


async def test_selftest_reports_on_the_live_panel(rig: Rig) -> None:
    async with served(rig) as c:
        r = await c.post("/api/v1/selftest", headers=INSTALLER, json={})
        assert r.status_code == 200, r.text
        rows = {row["check"]: row["result"] for row in r.json()["rows"]}
        assert r.json()["code"] == "ok" and r.json()["passed"] is True
        assert rows["storage"] == rows["database"] == "PASS" and rows["relay main"] == "SKIP"
        assert rows["button:b303"] == rows["door_contact"] == rows["tamper switch"] == "PASS"
        assert "selftest: PASS" in r.json()["table"]
        await rig.drive(rig.cfg.tamper, True)
        r = await c.post("/api/v1/selftest", headers=INSTALLER, json={"relays": ["main"]})
        assert r.json()["code"] == "selftest_failed" and r.json()["passed"] is False
        assert {row["check"]: row["result"] for row in r.json()["rows"]}["tamper switch"] == "FAIL"
        r = await c.post("/api/v1/selftest", headers=INSTALLER, json={"relays": ["nope"]})
        assert r.status_code == 404 and r.json()["code"] == "unknown_relay"
        r = await c.post("/api/v1/selftest", headers=bearer(await token(rig, "backend", "crm")), json={})
        assert r.status_code == 403


async def test_bodies_over_the_limit_get_413_before_being_read(rig: Rig) -> None:
    big = b'{"password": "' + b"x" * 70_000 + b'"}'
    async with served(rig) as c:
        r = await c.post("/api/v1/auth/login", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for _ in range(10):
                yield b" " * 8192

        r = await c.post("/api/v1/auth/login", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"
        assert (await c.get("/api/v1/health")).status_code == 200


async def test_changing_requests_are_rate_limited_per_client(tmp_path: Path) -> None:
    rig = api_rig(tmp_path, api={"mutations_per_minute": 20})  # a burst of 5, then one every 3 s
    async with served(rig) as c:
        statuses = [(await c.post("/api/v1/tamper/clear", headers=INSTALLER)).status_code for _ in range(6)]
        assert statuses[:5] == [200] * 5
        r = await c.post("/api/v1/tamper/clear", headers=INSTALLER)
        assert r.status_code == 429 and r.json()["code"] == "rate_limited" and 1 <= int(r.headers["retry-after"]) <= 3
        assert (await c.get("/api/v1/state", headers=INSTALLER)).status_code == 200  # reads are not limited
        rig.clock.advance(3.1)  # the rate window runs out on the panel's clock
        assert (await c.post("/api/v1/tamper/clear", headers=INSTALLER)).status_code == 200
    await rig.close()
