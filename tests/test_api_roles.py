"""Every route of the app against every role (and no credential), checked against the one role table
(panel/api/roles.py ACCESS), which is also what docs/api.md and the OpenAPI document show."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.api.app import create_app, openapi_document, routes
from panel.api.principals import ROLES
from panel.api.roles import ACCESS, markdown_table

from .api_support import api_rig, bearer, served, token
from .rig import Rig
from .support import ROOT

SAMPLE_PATH = {"button_id": "b303", "relay_id": "main", "guid": "no-such-call", "token_id": "no-such-token",
               "action": "open", "session_id": "no-such-session", "name": "press.jpg",
               "link_id": "no-such-link", "cred_id": "no-such-credential", "resident_id": "r-000000000000"}
# Bodies that keep the walk fast (the defaults would hold a button for 2 s or block the loop).
SAMPLE_BODY: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/sim/buttons/{button_id}/hold"): {"seconds": 0.01},
    ("POST", "/api/v1/sim/stall"): {"seconds": 0.01},
}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = api_rig(tmp_path)
    yield r
    await r.close()


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH[m.group(1)], path)


async def _send(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    kw: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        kw["json"] = SAMPLE_BODY.get((method, path), {})
    async with client.stream(method, _url(path), **kw) as r:  # streams (SSE) are cut after the status line
        if r.headers.get("content-type", "").startswith("application/json"):
            await r.aread()
            return r.status_code, r.json().get("code", "") if isinstance(r.json(), dict) else ""
        return r.status_code, ""


async def test_every_route_against_every_role(rig: Rig) -> None:
    app = create_app(rig.panel, simulated=True)
    served_routes = [(m, p) for m, p, _ in routes(app)]
    missing = [f"{m} {p}" for m, p in served_routes if (m, p) not in ACCESS]
    assert not missing, f"routes without an entry in panel/api/roles.py ACCESS: {missing}"
    stale = [f"{m} {p}" for (m, p) in ACCESS if (m, p) not in served_routes]
    assert not stale, f"ACCESS names routes the app does not serve: {stale}"

    checked = 0
    async with served(rig) as client:
        for method, path in served_routes:
            rule = ACCESS[(method, path)]
            for role in (None, *ROLES):
                headers = bearer(await token(rig, role)) if role else {}
                status, code = await _send(client, method, path, headers)
                where = f"{method} {path} as {role or 'nobody'}: {status} {code}"
                assert status < 500 or status == 503, where
                if rule.own_auth:
                    if role is None:  # the route's own check must refuse a caller without any credential
                        assert status in (401, 403, 503), where
                    continue
                if rule.public:
                    assert (status, code) not in ((401, "unauthenticated"), (403, "forbidden")), where
                    continue
                if role is None:
                    assert (status, code) == (401, "unauthenticated"), where
                elif role in rule.roles:
                    assert status != 401 and (status, code) != (403, "forbidden"), where
                else:
                    assert (status, code) == (403, "forbidden"), where
                checked += 1
    assert checked >= 5 * 20


async def test_a_route_missing_from_the_table_is_refused_to_everybody(rig: Rig) -> None:
    app = create_app(rig.panel, simulated=False)

    async def extra() -> dict[str, str]:
        return {"code": "ok", "message": "should never be reached"}

    app.add_api_route("/api/v1/not-in-the-table", extra, methods=["GET"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://panel") as c:
        r = await c.get("/api/v1/not-in-the-table", headers=bearer(await token(rig, "installer")))
    assert r.status_code == 403 and r.json()["code"] == "route_not_authorised"
    assert "panel/api/roles.py" in r.json()["message"]


async def test_unknown_expired_and_malformed_credentials_get_specific_401s(rig: Rig) -> None:
    async with served(rig) as c:
        for header, code in [("Bearer pnl_notarealtokenatall", "invalid_token"), ("Basic dXNlcjpwYXNz", "unauthenticated"),
                             ("Bearer", "unauthenticated"), ("", "unauthenticated")]:
            r = await c.get("/api/v1/state", headers={"Authorization": header} if header else {})
            assert r.status_code == 401 and r.json()["code"] == code, header
            assert r.headers["www-authenticate"].startswith("Bearer")
        secret, p = await rig.panel.api_auth.tokens.issue(
            kind="token", role="viewer", subject="v1", issued_by="test", ttl_s=60, unit_id="303")
        assert (await c.get("/api/v1/state", headers=bearer(secret))).status_code == 200
        rig.panel.api_auth.tokens.now = lambda: p.created + 61  # the token's clock moves on
        r = await c.get("/api/v1/state", headers=bearer(secret))
        assert r.status_code == 401 and r.json()["code"] == "token_expired"


def test_docs_show_the_role_table() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert markdown_table() in text, "docs/api.md must contain panel.api.roles.markdown_table() verbatim; " \
                                     "paste `python -c 'from panel.api.roles import markdown_table; " \
                                     "print(markdown_table())'`"


def test_openapi_documents_each_operations_roles_and_error_codes() -> None:
    doc = openapi_document()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    ops = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            rule = ACCESS[(method.upper(), path)]
            ops += 1
            if rule.own_auth:
                assert op["x-roles"] == ["media credential"]
            elif rule.public:
                assert op["x-roles"] == ["public"] and op["security"] == []
            else:
                assert set(op["x-roles"]) == set(rule.roles) and op["security"] == [{"bearer": []}]
                assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"
            for status, response in op["responses"].items():
                if status.startswith("4"):
                    refs = [c.get("schema", {}).get("$ref") for c in response["content"].values()]
                    assert "#/components/schemas/ErrorBody" in refs, f"{method} {path} {status}"
    assert ops >= 30
