"""The directory of units and residents (panel/directory) over the real local API and real MQTT: a resident
added by the installer signs in once by their link, their devices are listed and revoked; bad input gets
a specific code and changes nothing."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from panel.cli import EXIT_USAGE, main
from panel.daemon import Panel
from panel.directory import SIGNIN_PATH, SIGNIN_TTL_S

from .api_support import api_rig, bearer, served, token
from .mosquitto import Broker, Client
from .rig import Rig
from .test_mqtt import A, broker, cmd, panel_config, start  # noqa: F401 (fixture)

PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = api_rig(tmp_path)
    yield r
    await r.close()


def code_of(link: dict[str, Any]) -> str:
    assert link["url"].endswith(link["path"]) and link["path"].startswith(SIGNIN_PATH)
    return str(link["path"][len(SIGNIN_PATH) :])


async def signin(c: httpx.AsyncClient, code: str, ua: str = PHONE) -> httpx.Response:
    return await c.post("/api/v1/auth/signin", json={"code": code}, headers={"User-Agent": ua})


def residents(view: dict[str, Any], unit: str) -> list[dict[str, Any]]:
    return next(u["residents"] for u in view["units"] if u["id"] == unit)


async def test_installer_adds_a_resident_whose_phone_signs_in_once_by_the_link(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        view = (await c.get("/api/v1/directory", headers=installer)).json()
        assert [(u["id"], u["buttons"]) for u in view["units"]] == [("303", ["b303"]), ("304", ["b304"])]
        r = await c.post("/api/v1/directory/residents", headers=installer, json={"unit_id": "303", "name": "Ana Silva"})
        assert r.status_code == 201, r.text
        body = r.json()
        code = code_of(body["link"])
        assert body["link"]["url"].startswith(str(c.base_url))
        # The QR code carries the whole link (segno writes the text into the SVG's title-less path data only,
        # so check it encodes: an SVG data URI of a plausible size).
        assert body["link"]["qr_svg"].startswith("data:image/svg+xml") and len(body["link"]["qr_svg"]) > 1000
        rid = body["resident"]["id"]

        r = await signin(c, code)
        assert r.status_code == 200, r.text
        phone = bearer(r.json()["token"])
        me = (await c.get("/api/v1/auth/me", headers=phone)).json()["credential"]
        assert (me["role"], me["subject"], me["unit_id"]) == ("resident", rid, "303")
        assert me["name"] == "Ana Silva"
        # The same link again: spent, nothing issued.
        again = await signin(c, code, ua="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Safari/604.1")
        assert (again.status_code, again.json()["code"]) == (401, "signin_code_used")

        [ana] = residents((await c.get("/api/v1/directory", headers=installer)).json(), "303")
        assert [s["device"] for s in ana["sessions"]] == ["Chrome on Android"]
        # A second device by a new link; then the installer signs the first one out.
        r = await c.post(f"/api/v1/directory/residents/{rid}/link", headers=installer)
        laptop = bearer(
            (await signin(c, code_of(r.json()["link"]), ua="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")).json()[
                "token"
            ]
        )
        sessions = r.json()["resident"]["sessions"]
        r = await c.delete(f"/api/v1/directory/residents/{rid}/sessions/{sessions[0]['token_id']}", headers=installer)
        assert r.status_code == 200, r.text
        gone = await c.get("/api/v1/auth/me", headers=phone)
        assert (gone.status_code, gone.json()["code"]) == (401, "token_revoked")
        assert (await c.get("/api/v1/auth/me", headers=laptop)).status_code == 200

        r = await c.patch(f"/api/v1/directory/residents/{rid}", headers=installer, json={"name": "Ana S. Costa"})
        assert r.json()["resident"]["name"] == "Ana S. Costa"
        assert (await c.get("/api/v1/auth/me", headers=laptop)).json()["credential"]["name"] == "Ana S. Costa"
        unspent = code_of((await c.post(f"/api/v1/directory/residents/{rid}/link", headers=installer)).json()["link"])
        r = await c.delete(f"/api/v1/directory/residents/{rid}", headers=installer)
        assert r.status_code == 200 and "1 session(s) ended" in r.json()["message"]
        assert (await c.get("/api/v1/auth/me", headers=laptop)).json()["code"] == "token_revoked"
        late = await signin(c, unspent)
        assert (late.status_code, late.json()["code"]) == (401, "resident_revoked")
        assert residents((await c.get("/api/v1/directory", headers=installer)).json(), "303") == []
    # Every change is an event for the backend, with who did it; never a code or a credential.
    await rig.settle()
    assert [t for t in rig.types() if t.startswith("directory.")] == [
        "directory.resident_added",
        "directory.signed_in",
        "directory.signed_in",
        "directory.signed_out",
        "directory.resident_renamed",
        "directory.resident_removed",
    ]
    added, first, _, out, renamed, removed = rig.events("directory.")
    assert (added["resident"], added["unit_id"], added["name"], added["by"]) == (rid, "303", "Ana Silva", "installer")
    assert first["device"] == "Chrome on Android" and out["token_id"] == first["token_id"]
    assert renamed["name"] == "Ana S. Costa" and removed["sessions_ended"] == 1
    # The panel keeps only a digest of each code.
    stored = rig.store.read_sync(lambda c: [tuple(r) for r in c.execute("SELECT * FROM signin_codes")])
    assert len(stored) == 3 and code not in str(stored) and unspent not in str(stored)
    # Neither a sign-in code nor a credential ever reaches the log (the access log included).
    for secret in (code, unspent, phone["Authorization"][7:], laptop["Authorization"][7:]):
        assert secret not in caplog.text


async def test_a_link_expires_and_bad_input_names_what_is_wrong_and_changes_nothing(rig: Rig) -> None:
    installer = bearer(await token(rig, "installer"))
    async with served(rig) as c:
        body = (
            await c.post("/api/v1/directory/residents", headers=installer, json={"unit_id": "304", "name": "Bo"})
        ).json()
        await rig.advance(SIGNIN_TTL_S + 1)
        r = await signin(c, code_of(body["link"]))
        assert (r.status_code, r.json()["code"]) == (401, "signin_code_expired")
        r = await signin(c, "A" * 22)
        assert (r.status_code, r.json()["code"]) == (401, "signin_code_invalid")
        cases: list[tuple[str, str, dict[str, Any] | None, int, str, str]] = [
            ("POST", "/api/v1/directory/residents", {"unit_id": "999", "name": "X"}, 404, "unknown_unit", "303, 304"),
            (
                "POST",
                "/api/v1/directory/residents",
                {"unit_id": "303", "name": "\x07bell"},
                422,
                "invalid_request",
                "name",
            ),
            (
                "POST",
                "/api/v1/directory/residents",
                {"unit_id": "303", "name": "X", "role": "installer"},
                422,
                "invalid_request",
                "role",
            ),
            ("PATCH", "/api/v1/directory/residents/r-000000000000", {"name": "X"}, 404, "unknown_resident", "r-0"),
            ("POST", "/api/v1/auth/signin", {"code": "short"}, 422, "invalid_request", "code"),
        ]
        for method, path, json, status, code, named in cases:
            r = await c.request(method, path, headers=installer, json=json)
            assert (r.status_code, r.json()["code"]) == (status, code), (path, json, r.text)
            assert named in r.json()["message"], r.text
        resident = bearer(await token(rig, "resident", "r-000000000001"))
        r = await c.post("/api/v1/directory/residents", headers=resident, json={"unit_id": "303", "name": "Me"})
        assert r.status_code == 403
        view = (await c.get("/api/v1/directory", headers=installer)).json()
        assert residents(view, "303") == [] and [x["name"] for x in residents(view, "304")] == ["Bo"]


async def test_the_backend_manages_the_directory_over_mqtt(broker: Broker, tmp_path: Path) -> None:  # noqa: F811
    panel: Panel = await start(panel_config(broker, tmp_path / "state", require_signed_commands=True), broker)
    try:
        async with Client(broker) as backend:
            reply = await backend.request(A, cmd("resident_add", unit_id="303", name="Ana Silva"))
            assert reply["code"] == "ok", reply
            [ana] = reply["residents"]
            path = reply["signin_path"]
            assert path.startswith(SIGNIN_PATH) and ana["unit_id"] == "303"
            assert panel.api is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{panel.api.bound_port}") as c:
                r = await signin(c, unquote(path[len(SIGNIN_PATH) :]))
                assert r.status_code == 200, r.text
            listed = await backend.request(A, cmd("directory_list", unit_id="303"))
            assert [s["device"] for s in listed["residents"][0]["sessions"]] == ["Chrome on Android"]
            bad = await backend.request(A, cmd("resident_add", unit_id="999", name="X"))
            assert bad["code"] == "unknown_unit" and "303, 304" in bad["message"]
            bad = await backend.request(A, cmd("resident_rename", resident="r-000000000000", name="X"))
            assert bad["code"] == "unknown_resident"
            removed = await backend.request(A, cmd("resident_remove", resident=ana["id"]))
            assert removed["code"] == "ok" and "1 session(s) ended" in removed["message"]
            assert (await backend.request(A, cmd("directory_list")))["residents"] == []
    finally:
        await panel.stop("test over")


def test_only_a_simulated_panel_prints_sign_ins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = os.umask(0o022)
    os.umask(before)
    assert main(["run", "--config", str(tmp_path / "none.toml"), "--demo"]) == EXIT_USAGE
    assert "only with --simulate" in capsys.readouterr().err
    now = os.umask(before)
    assert now == before, "a refused command line changed the test process's umask"
