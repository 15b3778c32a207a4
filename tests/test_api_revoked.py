"""A revoked credential is refused as revoked (401 ``token_revoked``) by every route that takes a
credential, the media ones (WHEP, snapshots, MJPEG) and the call-link ones included, on a real panel
with media over its real HTTP API. The routes come from the panel's own OpenAPI document, so a new
route is covered without touching this test."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from panel.auth import Secrets
from panel.daemon import Panel
from panel.platform import parse_config

from .media_resident import Resident
from .media_rig import INSTALLER, api, media_config, media_of
from .support import config_dict


@pytest.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    data = config_dict(media=media_config())
    data["storage"] = {"dir": str(tmp_path / "state")}
    # Every route twice in a row: more changing requests than the default rate allows.
    data["api"] = {"listen": "127.0.0.1:0", "mutations_per_minute": 100_000}
    p = Panel(parse_config(data), Secrets(installer_token=INSTALLER), simulate=True)
    await p.start()
    yield p
    await p.stop("test over")


def concrete(path: str) -> str:
    """A path with every parameter filled in (the credential is refused before any is looked at)."""
    return re.sub(r"\{[^}]+\}", lambda m: "open" if m.group(0) == "{action}" else "b303" if "button" in m.group(0)
                  else "x0123456789", path)


async def test_a_revoked_credential_gets_token_revoked_on_every_route(panel: Panel) -> None:
    media_of(panel)  # media is running: WHEP and the snapshot routes reach their own credential checks
    offer = await Resident().offer()
    async with api(panel) as c:
        doc = (await c.get("/api/v1/openapi.json")).json()
        installer = {"Authorization": f"Bearer {INSTALLER}"}
        issued = {}
        for role in ("backend", "resident"):
            r = await c.post("/api/v1/auth/tokens", headers=installer,
                             json={"role": role, "subject": f"{role}-7", "ttl_s": 3600,
                                   **({"unit_id": "303"} if role == "resident" else {})})
            assert r.status_code == 201, r.text
            issued[role] = r.json()
            assert (await c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['token']}"})
                    ).status_code == 200
            token_id = r.json()["credential"]["token_id"]
            assert (await c.delete(f"/api/v1/auth/tokens/{token_id}", headers=installer)).status_code == 200

        guarded: list[str] = []
        public: list[str] = []
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                where = f"{method.upper()} {path}"
                if op.get("security") == []:
                    public.append(where)
                    continue
                guarded.append(where)
                for role, token in issued.items():
                    headers = {"Authorization": f"Bearer {token['token']}"}
                    kw: dict[str, Any] = {}
                    content = op.get("requestBody", {}).get("content", {})
                    if "application/sdp" in content:
                        kw["content"], headers["Content-Type"] = offer, "application/sdp"
                    elif content:
                        kw["json"] = {}
                    r = await c.request(method.upper(), concrete(path), headers=headers, **kw)
                    assert r.status_code == 401, (where, role, r.status_code, r.text)
                    assert r.json()["code"] == "token_revoked", (where, role, r.json())
                    assert 'error="invalid_token"' in r.headers["www-authenticate"], where
        assert "POST /api/v1/media/whep" in guarded and "DELETE /api/v1/media/whep/{session_id}" in guarded
        assert "GET /api/v1/video.mjpeg" in guarded and "POST /api/v1/link/join" in guarded
        assert len(guarded) >= 40
        # Public routes take no credential: a stale one does not lock anyone out of them (the login).
        assert all(w.split(" ", 1)[1].startswith(("/api/v1/sim/", "/api/v1/media/whep", "/api/v1/media/player",
                                                  "/api/v1/auth/login", "/api/v1/auth/signin", "/api/v1/health"))
                   for w in public), public
        stale = {"Authorization": f"Bearer {issued['backend']['token']}"}
        assert (await c.get("/api/v1/health", headers=stale)).status_code == 200
        assert media_of(panel).sessions.sessions == {}  # nothing was set up for a revoked credential
