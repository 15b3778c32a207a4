"""Credentials: the generated installer password, login sessions, issued tokens, revocation, the
progressive slow-down of failed logins, and that no secret leaks into a response or the log."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from panel.api.limits import LoginThrottle
from panel.auth import InstallerCredential

from .api_support import api_rig, auth_of, bearer, initial_password, served, token
from .eventually import eventually
from .rig import Rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = api_rig(tmp_path)
    yield r
    await r.close()



async def _refused(request: Any) -> Any:
    """The response if it is a 401, else None (for eventually)."""
    r = await request
    return r if r.status_code == 401 else None

async def _login(c, password: str):  # type: ignore[no-untyped-def]
    return await c.post("/api/v1/auth/login", json={"password": password})


async def test_first_start_makes_a_unique_password_stored_only_as_a_hash(rig: Rig, tmp_path: Path) -> None:
    cred = auth_of(rig).installer
    password = initial_password(rig)
    assert len(password) == 29 and password.count("-") == 4
    stored = cred.path.read_text()
    assert password not in stored and '"kdf": "scrypt"' in stored
    for f in (cred.path, cred.initial_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    other = api_rig(tmp_path / "other")
    assert initial_password(other) != password  # no default: every panel gets its own
    await other.close()


async def test_login_session_and_logout(rig: Rig) -> None:
    password = initial_password(rig)
    async with served(rig) as c:
        r = await _login(c, password)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["code"] == "ok" and body["credential"]["role"] == "installer" and body["expires_in_s"] == 28800
        assert "change the generated password" in body["message"]
        session = body["token"]
        # first use: the generated password can no longer be read back
        assert auth_of(rig).installer.initial_password() is None
        me = await c.get("/api/v1/auth/me", headers=bearer(session))
        assert me.json()["credential"]["kind"] == "session" and "token" not in me.json()
        assert (await c.get("/api/v1/config", headers=bearer(session))).status_code == 200
        assert (await c.post("/api/v1/auth/logout", headers=bearer(session))).status_code == 200
        r = await c.get("/api/v1/config", headers=bearer(session))
        assert r.status_code == 401 and r.json()["code"] == "token_revoked"


async def test_wrong_password_is_refused_and_changes_nothing(rig: Rig) -> None:
    async with served(rig) as c:
        r = await _login(c, "not-the-password-at-all")
        assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
        r = await c.post("/api/v1/auth/login", json={"password": "x", "user": "admin"})
        assert r.status_code == 422 and "user" in r.json()["message"]
    assert auth_of(rig).installer.initial_password() is not None  # a failure is not a first use


async def test_password_change_ends_every_older_session(rig: Rig) -> None:
    old = initial_password(rig)
    async with served(rig) as c:
        s1 = (await _login(c, old)).json()["token"]
        s2 = (await _login(c, old)).json()["token"]
        r = await c.post("/api/v1/auth/password", headers=bearer(s1),
                         json={"current_password": old, "new_password": "short"})
        assert r.status_code == 422 and "new_password" in r.json()["message"]
        r = await c.post("/api/v1/auth/password", headers=bearer(s1),
                         json={"current_password": "wrong-password-here", "new_password": "a new long passphrase"})
        assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
        r = await c.post("/api/v1/auth/password", headers=bearer(s1),
                         json={"current_password": old, "new_password": "a new long passphrase"})
        assert r.status_code == 200, r.text
        s3 = r.json()["token"]
        for s in (s1, s2):
            assert (await c.get("/api/v1/auth/me", headers=bearer(s))).status_code == 401
        assert (await c.get("/api/v1/auth/me", headers=bearer(s3))).status_code == 200
        assert (await _login(c, old)).status_code == 401
        assert (await _login(c, "a new long passphrase")).status_code == 200


async def test_a_change_made_by_the_cli_while_running_ends_sessions(rig: Rig) -> None:
    async with served(rig) as c:
        s = (await _login(c, initial_password(rig))).json()["token"]
        # what `panel credentials set` does, from another process, on the same file
        await asyncio.to_thread(InstallerCredential(rig.cfg.storage.dir).set, "changed from the command line")
        # the panel re-reads the credential file's generation at most once a second
        r = await eventually(lambda: _refused(c.get("/api/v1/auth/me", headers=bearer(s))), 3, "the session ended")
        assert r.json()["code"] == "token_revoked"


async def test_tokens_issued_listed_and_revoked_at_once(rig: Rig) -> None:
    async with served(rig) as c:
        installer = bearer(await token(rig, "installer"))
        r = await c.post("/api/v1/auth/tokens", headers=installer,
                         json={"role": "resident", "subject": "alice", "unit_id": "303", "ttl_s": 600})
        assert r.status_code == 201, r.text
        alice, alice_id = r.json()["token"], r.json()["credential"]["token_id"]
        assert r.json()["credential"]["unit_id"] == "303"
        listed = (await c.get("/api/v1/auth/tokens", headers=installer)).json()["credentials"]
        assert [x for x in listed if x["token_id"] == alice_id] and all("token" not in x for x in listed)
        assert (await c.get("/api/v1/state", headers=bearer(alice))).status_code == 200
        assert (await c.delete(f"/api/v1/auth/tokens/{alice_id}", headers=installer)).status_code == 200
        r = await c.get("/api/v1/state", headers=bearer(alice))
        assert r.status_code == 401 and r.json()["code"] == "token_revoked"
        assert (await c.delete(f"/api/v1/auth/tokens/{alice_id}", headers=installer)).status_code == 404


async def test_who_may_issue_what(rig: Rig) -> None:
    async with served(rig) as c:
        backend = bearer(await token(rig, "backend", "crm"))
        ok = await c.post("/api/v1/auth/tokens", headers=backend, json={"role": "viewer", "subject": "bob", "unit_id": "304"})
        assert ok.status_code == 201 and ok.json()["credential"]["issued_by"] == "backend:crm"
        r = await c.post("/api/v1/auth/tokens", headers=backend, json={"role": "backend", "subject": "other"})
        assert r.status_code == 403 and r.json()["code"] == "not_issuable"
        r = await c.post("/api/v1/auth/tokens", headers=backend, json={"role": "installer", "subject": "x"})
        assert r.status_code == 403 and r.json()["code"] == "not_issuable"  # installers log in; nobody issues those
        r = await c.post("/api/v1/auth/tokens", headers=backend, json={"role": "admin", "subject": "x"})
        assert r.status_code == 422 and "role" in r.json()["message"]
        resident = bearer(await token(rig, "resident", "carol"))
        r = await c.post("/api/v1/auth/tokens", headers=resident, json={"role": "viewer", "subject": "x", "unit_id": "303"})
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        installer = bearer(await token(rig, "installer"))
        for body, field in [({"role": "resident", "subject": "dave"}, "unit_id"),
                            ({"role": "resident", "subject": "dave", "unit_id": "999"}, "unit_id"),
                            ({"role": "resident", "subject": "installer", "unit_id": "303"}, "subject"),
                            ({"role": "resident", "subject": "dave", "unit_id": "303", "ttl_s": 10}, "ttl_s"),
                            ({"role": "resident", "subject": "dave", "call_guid": "nope"}, "call_guid")]:
            r = await c.post("/api/v1/auth/tokens", headers=installer, json=body)
            assert r.status_code in (404, 422) and field in r.json()["message"], (body, r.text)
        # the backend cannot see or revoke installer sessions
        listed = (await c.get("/api/v1/auth/tokens", headers=backend)).json()["credentials"]
        assert all(x["role"] != "installer" for x in listed)
        session_id = (await c.get("/api/v1/auth/me", headers=installer)).json()["credential"]["token_id"]
        assert (await c.delete(f"/api/v1/auth/tokens/{session_id}", headers=backend)).status_code == 404
        assert (await c.get("/api/v1/auth/me", headers=installer)).status_code == 200


async def test_revoking_a_subject_ends_all_its_credentials(rig: Rig) -> None:
    async with served(rig) as c:
        phone, laptop = await token(rig, "resident", "erin"), await token(rig, "viewer", "erin")
        other = await token(rig, "resident", "frank")
        r = await c.post("/api/v1/auth/tokens/revoke", headers=bearer(await token(rig, "backend", "crm")),
                         json={"subject": "erin"})
        assert r.status_code == 200 and len(r.json()["revoked"]) == 2
        for t in (phone, laptop):
            assert (await c.get("/api/v1/state", headers=bearer(t))).status_code == 401
        assert (await c.get("/api/v1/state", headers=bearer(other))).status_code == 200


async def test_tokens_survive_a_restart_and_revocations_too(tmp_path: Path) -> None:
    rig = api_rig(tmp_path)
    kept, gone = await token(rig, "resident", "gina"), await token(rig, "resident", "hank")
    await auth_of(rig).tokens.revoke([auth_of(rig).tokens.lookup(gone).token_id])
    await rig.close()
    rig = api_rig(tmp_path)
    async with served(rig) as c:
        assert (await c.get("/api/v1/state", headers=bearer(kept))).status_code == 200
        assert (await c.get("/api/v1/state", headers=bearer(gone))).status_code == 401
    await rig.close()


async def test_failed_logins_slow_down_per_address_then_429() -> None:
    t = 1000.0
    throttle = LoginThrottle(base_s=0.5, lockout_after=3, now=lambda: t)
    assert [throttle.delay_after(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    for _ in range(3):
        async with throttle.attempt("10.0.0.9"):
            throttle.failed("10.0.0.9")
        t += 100  # the caller waited out each delay
    throttle.failed("10.0.0.9")  # 4th failure: the next attempt within 4 s is refused with Retry-After
    with pytest.raises(Exception) as refused:
        async with throttle.attempt("10.0.0.9"):
            pass
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "4"}  # type: ignore[attr-defined]
    async with throttle.attempt("10.0.0.7"):  # another address is not affected
        pass
    t += 4.01
    async with throttle.attempt("10.0.0.9"):
        throttle.succeeded("10.0.0.9")
    assert throttle.failures("10.0.0.9") == 0


async def test_a_failing_client_is_delayed_without_delaying_others(tmp_path: Path) -> None:
    rig = api_rig(tmp_path, api={"login_backoff_s": 0.4, "login_lockout_after": 3})
    password = initial_password(rig)
    async with served(rig) as c:
        assert (await _login(c, "wrong password one")).status_code == 401
        assert (await _login(c, "wrong password two")).status_code == 401
        # the next attempt from this address waits 0.8 s before its password is even checked...
        slow = asyncio.create_task(_login(c, "wrong password three"))
        await asyncio.sleep(0.2)  # a window in which nothing may happen
        assert not slow.done()
        # ...while the rest of the API answers at once, and a second attempt meanwhile is refused
        assert (await c.get("/api/v1/health")).status_code == 200
        r = await _login(c, password)
        assert r.status_code == 429 and r.json()["code"] == "login_in_progress" and r.headers["retry-after"] == "1"
        assert (await slow).status_code == 401
        r = await _login(c, password)  # three failures: locked out for 1.6 s, even with the right password
        assert r.status_code == 429 and r.json()["code"] == "login_locked" and int(r.headers["retry-after"]) == 2
        await asyncio.sleep(1.7)  # the lockout running out is the condition; a login attempt would count
        assert (await _login(c, password)).status_code == 200
    await rig.close()


async def test_no_secret_in_responses_urls_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rig = api_rig(tmp_path)
    password = initial_password(rig)
    secrets: list[str] = [password]
    async with served(rig) as c:
        r = await _login(c, password)
        session = r.json()["token"]
        secrets.append(session)
        r = await c.post("/api/v1/auth/tokens", headers=bearer(session),
                         json={"role": "resident", "subject": "ivy", "unit_id": "303"})
        resident = r.json()["token"]
        secrets.append(resident)
        new_password = "correct horse battery staple"
        secrets.append(new_password)
        r = await c.post("/api/v1/auth/password", headers=bearer(session),
                         json={"current_password": password, "new_password": new_password})
        session = r.json()["token"]
        secrets.append(session)
        await _login(c, "a wrong guess 12345")
        bodies = []
        for path in ("/api/v1/auth/me", "/api/v1/auth/tokens", "/api/v1/config", "/api/v1/system", "/api/v1/state",
                     "/api/v1/events?limit=500", "/api/v1/logs/access"):
            bodies.append((await c.get(path, headers=bearer(session))).text)
        bodies.append((await c.get("/api/v1/state", headers=bearer(resident))).text)
        bodies.append((await c.get("/api/v1/openapi.json")).text)
    await rig.close()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    stored = b"".join(f.read_bytes() for f in (tmp_path / "state").glob("panel.db*"))
    for secret in secrets:
        assert secret not in logged
        assert all(secret not in b for b in bodies)
        assert secret.encode() not in stored  # only digests of tokens are kept
    assert "failed installer login" in logged  # the log does record what happened
