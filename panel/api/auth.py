"""Credentials over the API: installer login/logout and password, tokens for viewers, residents, backends."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..auth import MAX_LEN, MIN_LEN
from ..platform import iso8601 as iso
from .deps import PanelDep
from .errors import ApiError, OkBody
from .principals import ISSUABLE, RESERVED_SUBJECTS, ApiAuth, Principal, Role
from .roles import caller, client_address

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

Subject = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:+-]*$",
                               description="who holds the credential, e.g. a resident id")]
Caller = Annotated[Principal, Depends(caller)]
MAX_TTL_S = 366 * 86_400


def _auth(request: Request) -> ApiAuth:
    return request.app.state.auth  # type: ignore[no-any-return]


AuthDep = Annotated[ApiAuth, Depends(_auth)]




class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "7" is not a number, "yes" not a boolean


class LoginBody(Strict):
    password: str = Field(min_length=1, max_length=MAX_LEN)


class CredentialOut(BaseModel):
    """What a credential grants (never the secret itself)."""

    token_id: str
    kind: Literal["session", "token", "static"]
    role: Role
    subject: str
    name: str | None = None
    unit_id: str | None = None
    call_guid: str | None = None
    device: str | None = Field(None, description="a resident's sign-in by link: the browser and system")
    issued_by: str
    created_at: str | None
    expires_at: str | None


def _out(p: Principal) -> CredentialOut:
    return CredentialOut(token_id=p.token_id, kind=p.kind, role=p.role, subject=p.subject, name=p.name,
                         unit_id=p.unit_id, call_guid=p.call_guid, device=p.device, issued_by=p.issued_by,
                         created_at=iso(p.created) if p.created else None, expires_at=iso(p.expires))


class Issued(OkBody):
    token: str = Field(description="the bearer secret; shown only in this response, keep it safe")
    expires_in_s: float
    credential: CredentialOut


class Me(OkBody):
    credential: CredentialOut


class Done(OkBody):
    pass


class PasswordBody(Strict):
    current_password: str = Field(min_length=1, max_length=MAX_LEN)
    new_password: str = Field(min_length=MIN_LEN, max_length=MAX_LEN,
                              description=f"{MIN_LEN} to {MAX_LEN} characters; a passphrase of several words is good")


class TokenBody(Strict):
    role: Role = Field(description="viewer, resident or backend (installer credentials come from login)")
    subject: Subject
    name: str | None = Field(None, min_length=1, max_length=64, description="a display name")
    unit_id: str | None = Field(None, min_length=1, max_length=64,
                                description="viewer/resident: the unit whose calls they see and take")
    call_guid: str | None = Field(None, min_length=1, max_length=64,
                                  description="limit the credential to this one call")
    ttl_s: float = Field(86_400.0, ge=60, le=MAX_TTL_S, description="lifetime in seconds")


class TokenList(OkBody):
    credentials: list[CredentialOut]


class RevokeBody(Strict):
    subject: Subject


class Revoked(OkBody):
    revoked: list[str] = Field(description="token ids revoked")


_401 = {"description": "no, unknown, expired or revoked credential"}


@router.post("/login", response_model=Issued, summary="Installer login: password -> session token",
             responses={401: {"description": "wrong password"},
                        429: {"description": "too many failed logins from this address (Retry-After)"}})
async def login(body: LoginBody, request: Request, auth: AuthDep) -> Issued:
    client = client_address(request)
    async with auth.login.attempt(client):
        info = await auth.check_password(body.password)
        if info is None:
            delay = auth.login.failed(client)
            log.warning("failed installer login", extra={"client": client, "failures": auth.login.failures(client),
                                                         "next_attempt_delay_s": delay})
            raise ApiError("invalid_credentials", "the password is wrong; further attempts from your address "
                           f"are slowed down (next one waits {delay:g} s)",
                           headers={"WWW-Authenticate": 'Bearer realm="panel"'})
        auth.login.succeeded(client)
    if info.initial:
        auth.installer.first_used()  # from now on nobody can read the generated password back
    secret, p = await auth.open_session(info.generation)
    log.info("installer logged in", extra={"client": client, "token_id": p.token_id})
    hint = "; change the generated password now (POST /api/v1/auth/password)" if info.initial else ""
    return Issued(message=f"logged in as installer until {iso(p.expires)}{hint}", token=secret,
                  expires_in_s=round((p.expires or 0) - p.created, 3), credential=_out(p))


@router.post("/logout", response_model=Done, summary="Revoke the credential this request carries",
             responses={401: _401, 409: {"description": "the secrets file's installer_token cannot be logged out"}})
async def logout(who: Caller, auth: AuthDep) -> Done:
    if who.kind == "static":
        raise ApiError("static_credential", "installer_token comes from the secrets file and cannot be logged "
                       "out; remove it from the secrets file to disable it")
    await auth.tokens.revoke([who.token_id])
    return Done(message=f"{who.kind} {who.token_id} revoked")


@router.get("/me", response_model=Me, summary="What the credential of this request grants", responses={401: _401})
async def me(who: Caller) -> Me:
    return Me(message=f"{who.role} {who.subject}", credential=_out(who))


@router.post("/password", response_model=Issued, summary="Change the installer password (installer)",
             responses={401: {"description": "no credential, or the current password is wrong"},
                        422: {"description": "the new password is too weak (the message says why)"},
                        429: {"description": "too many wrong passwords from this address (Retry-After)"}})
async def change_password(body: PasswordBody, request: Request, who: Caller, auth: AuthDep) -> Issued:
    client = client_address(request)
    async with auth.login.attempt(client):
        info = await auth.check_password(body.current_password)
        if info is None:
            auth.login.failed(client)
            raise ApiError("invalid_credentials", "current_password is wrong; the password was not changed")
        auth.login.succeeded(client)
    if body.new_password == body.current_password:
        raise ApiError("weak_password", "new_password: must differ from the current password")
    async with auth.hashing:
        new = await asyncio.to_thread(auth.installer.set, body.new_password)
    auth.set_generation(new)
    # Every session opened with the old password ends now; the caller gets a fresh one.
    old = [p.token_id for p in auth.tokens.list(roles=frozenset({"installer"}))]
    await auth.tokens.revoke(old)
    secret, p = await auth.open_session(new.generation)
    log.warning("installer password changed", extra={"by": who.actor, "sessions_ended": len(old)})
    return Issued(message=f"password changed; {len(old)} earlier session(s) ended, use this new session token",
                  token=secret, expires_in_s=round((p.expires or 0) - p.created, 3), credential=_out(p))


@router.post("/tokens", response_model=Issued, status_code=201,
             summary="Issue a credential for a viewer, resident or backend (installer, backend)",
             responses={401: _401, 403: {"description": "the caller may not issue that role"},
                        404: {"description": "call_guid names no call on this panel"},
                        409: {"description": "the call named is over, or too many credentials are live"}})
async def issue(body: TokenBody, panel: PanelDep, who: Caller, auth: AuthDep) -> Issued:
    if body.role not in ISSUABLE.get(who.role, frozenset()):
        raise ApiError("not_issuable", f"role: a {who.role} may issue "
                       f"{', '.join(sorted(ISSUABLE.get(who.role, ()))) or 'nothing'}, not {body.role}")
    if body.subject.lower() in RESERVED_SUBJECTS:
        raise ApiError("invalid_request", f"subject: {body.subject!r} is reserved for the panel's own use; "
                       "use the person's or system's id")
    if body.role in ("viewer", "resident") and body.unit_id is None and body.call_guid is None:
        raise ApiError("invalid_request", "unit_id: a viewer or resident credential needs unit_id (the unit "
                       "whose calls they take) or call_guid (one call)")
    if body.unit_id is not None and body.unit_id not in {b.unit.id for b in panel.cfg.buttons}:
        raise ApiError("invalid_request", f"unit_id: no button of this panel rings unit {body.unit_id!r}; "
                       f"expected one of {', '.join(sorted({b.unit.id for b in panel.cfg.buttons}))}")
    if body.call_guid is not None:
        call = await panel.calls.lookup(body.call_guid)
        if call is None:
            raise ApiError("unknown_call", f"call_guid: there is no call {body.call_guid!r} on this panel")
        if not call.live:
            raise ApiError("call_over", f"call_guid: call {call.guid} is over ({call.state}); a credential "
                           "scoped to it would grant nothing")
        if body.unit_id is not None and call.unit_id != body.unit_id:
            raise ApiError("invalid_request", f"unit_id: call {call.guid} rings unit {call.unit_id}, not "
                           f"{body.unit_id}")
    secret, p = await auth.tokens.issue(kind="token", role=body.role, subject=body.subject, name=body.name,
                                        unit_id=body.unit_id, call_guid=body.call_guid, issued_by=who.actor,
                                        ttl_s=body.ttl_s)
    log.info("credential issued", extra={"token_id": p.token_id, "role": p.role, "subject": p.subject,
                                         "by": who.actor})
    return Issued(message=f"{p.role} token {p.token_id} for {p.subject} until {iso(p.expires)}", token=secret,
                  expires_in_s=body.ttl_s, credential=_out(p))


def _visible_roles(who: Principal) -> frozenset[Role]:
    # Guests (invited into one call) are listed and revocable like the residents who invite them.
    return frozenset({"viewer", "resident", "installer", "backend", "guest"}) if who.role == "installer" \
        else frozenset({"viewer", "resident", "backend", "guest"})


@router.get("/tokens", response_model=TokenList, summary="Live credentials (installer, backend)",
            responses={401: _401})
async def list_tokens(who: Caller, auth: AuthDep, role: Role | None = None,
                      subject: str | None = Query(None, max_length=128)) -> TokenList:
    roles = _visible_roles(who)
    if role is not None:
        roles = roles & {role}
    found = auth.tokens.list(roles=roles, subject=subject)
    return TokenList(message=f"{len(found)} live credential(s)", credentials=[_out(p) for p in found])


@router.delete("/tokens/{token_id}", response_model=Done, summary="Revoke one credential (installer, backend)",
               responses={401: _401, 404: {"description": "no live credential with that id (or not visible to you)"}})
async def revoke(token_id: str, who: Caller, auth: AuthDep) -> Done:
    p = auth.tokens.get(token_id)
    if p is None or p.role not in _visible_roles(who):
        raise ApiError("unknown_token", f"there is no live credential {token_id!r}")
    await auth.tokens.revoke([token_id])
    return Done(message=f"{p.kind} {token_id} ({p.role} {p.subject}) revoked; it is refused from now on")


@router.post("/tokens/revoke", response_model=Revoked, summary="Revoke every credential of a subject "
             "(e.g. a resident logged out)", responses={401: _401})
async def revoke_subject(body: RevokeBody, who: Caller, auth: AuthDep) -> Revoked:
    found = auth.tokens.list(roles=_visible_roles(who), subject=body.subject)
    done = await auth.tokens.revoke([p.token_id for p in found])
    return Revoked(message=f"{len(done)} credential(s) of {body.subject} revoked", revoked=[p.token_id for p in done])
