"""The directory over HTTP: units and residents, their sign-in links and sessions; and the sign-in itself.

Translation only: ``panel.directory.Directory`` owns the rules (docs/pages.md, Directory). A sign-in
link is ``<this panel's address>/resident#signin=<code>``: the page reads the code from the fragment
(never sent to a server) and trades it at ``POST /api/v1/auth/signin`` for a resident credential.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from ..directory import (
    SIGNIN_TTL_S,
    AddResidentFields,
    Directory,
    RenameResidentFields,
    Resident,
    SignInFields,
    SignInLink,
    svg_data_uri,
)
from ..platform import iso8601 as iso
from .deps import Caller, PanelDep
from .errors import OkBody

router = APIRouter(prefix="/api/v1", tags=["directory"])

_401 = {"description": "no, unknown, expired or revoked credential"}
_404 = {"description": "unknown_resident: no such resident (or removed); unknown_unit: no such unit"}


class SessionOut(BaseModel):
    token_id: str = Field(description="the credential's id (revoke it with DELETE …/sessions/{token_id})")
    device: str = Field(description='the browser and system that signed in, e.g. "Chrome on Android"')
    created_at: str
    expires_at: str | None


class ResidentOut(BaseModel):
    id: str
    unit_id: str
    name: str
    created_at: str
    created_by: str
    sessions: list[SessionOut] = Field(description="the devices signed in as this resident, oldest first")


class UnitOut(BaseModel):
    id: str
    label: str
    buttons: list[str] = Field(description="the call buttons that ring this unit")
    residents: list[ResidentOut]


class DirectoryView(OkBody):
    units: list[UnitOut]
    orphans: list[ResidentOut] = Field(description="residents of units no longer on the button map")


class SignInLinkOut(BaseModel):
    url: str = Field(description="the sign-in link: open it on the resident's phone (works once)")
    path: str = Field(description="the same without this panel's address, for a backend that knows its own")
    expires_at: str
    qr_svg: str = Field(description="the link as a QR code: an SVG data: URI for an <img>")


class ResidentLink(OkBody):
    resident: ResidentOut
    link: SignInLinkOut


class ResidentDone(OkBody):
    resident: ResidentOut


class SignedIn(OkBody):
    token: str = Field(description="the resident's bearer credential for this device; keep it on the device")
    resident: ResidentOut


def _resident(directory: Directory, r: Resident) -> ResidentOut:
    return ResidentOut(
        id=r.id,
        unit_id=r.unit_id,
        name=r.name,
        created_at=iso(r.created),
        created_by=r.created_by,
        sessions=[
            SessionOut(token_id=s.token_id, device=s.device, created_at=iso(s.created), expires_at=iso(s.expires))
            for s in directory.sessions(r)
        ],
    )


async def _link(request: Request, link: SignInLink) -> SignInLinkOut:
    url = str(request.base_url).rstrip("/") + link.path
    # Drawing the QR code takes about 10 ms of pure Python: not on the door's event loop.
    qr = await asyncio.to_thread(svg_data_uri, url)
    return SignInLinkOut(url=url, path=link.path, expires_at=iso(link.expires) or "", qr_svg=qr)


async def _issued(request: Request, directory: Directory, link: SignInLink, what: str) -> ResidentLink:
    minutes = int(SIGNIN_TTL_S // 60)
    return ResidentLink(
        message=f"{what}; the link works once, for {minutes} minutes",
        resident=_resident(directory, link.resident),
        link=await _link(request, link),
    )


_BROWSERS = (("Edg/", "Edge"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def device_name(user_agent: str | None) -> str:
    """ "Chrome on Android": enough to tell a resident's devices apart, nothing more of the User-Agent."""
    ua = user_agent or ""
    browser = next((name for mark, name in _BROWSERS if mark in ua), "a browser")
    system = next((name for mark, name in _SYSTEMS if mark in ua), "")
    if "HeadlessChrome" in ua:
        browser = "Chrome"
    return re.sub(r"\s+", " ", f"{browser} on {system}" if system else browser)


ResidentPath = Annotated[str, Path(pattern=r"^r-[0-9a-f]{12}$", description="the resident's id")]
TokenPath = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="the session's credential id")]


@router.get(
    "/directory",
    response_model=DirectoryView,
    summary="Units and their residents, with who is signed in where (installer, backend)",
    responses={401: _401},
)
async def read_directory(panel: PanelDep, who: Caller) -> DirectoryView:
    d = panel.directory
    residents = await d.residents()
    units = d.units()
    known = {u.id for u in units}
    return DirectoryView(
        message=f"{len(units)} unit(s), {len(residents)} resident(s)",
        units=[
            UnitOut(
                id=u.id,
                label=u.label,
                buttons=list(u.buttons),
                residents=[_resident(d, r) for r in residents if r.unit_id == u.id],
            )
            for u in units
        ],
        orphans=[_resident(d, r) for r in residents if r.unit_id not in known],
    )


@router.post(
    "/directory/residents",
    response_model=ResidentLink,
    status_code=201,
    summary="Add a resident to a unit; the answer has their sign-in link and its QR code (installer, backend)",
    responses={401: _401, 404: _404},
)
async def add_resident(body: AddResidentFields, request: Request, panel: PanelDep, who: Caller) -> ResidentLink:
    link = await panel.directory.add(body.unit_id, body.name, by=who.actor)
    return await _issued(request, panel.directory, link, f"{body.name} added to unit {body.unit_id}")


@router.post(
    "/directory/residents/{resident_id}/link",
    response_model=ResidentLink,
    status_code=201,
    summary="A new single-use sign-in link for a resident (installer, backend)",
    responses={401: _401, 404: _404},
)
async def new_link(resident_id: ResidentPath, request: Request, panel: PanelDep, who: Caller) -> ResidentLink:
    link = await panel.directory.new_link(resident_id, by=who.actor)
    return await _issued(request, panel.directory, link, f"a new sign-in link for {link.resident.name}")


@router.patch(
    "/directory/residents/{resident_id}",
    response_model=ResidentDone,
    summary="Rename a resident (installer, backend)",
    responses={401: _401, 404: _404},
)
async def rename_resident(
    resident_id: ResidentPath, body: RenameResidentFields, panel: PanelDep, who: Caller
) -> ResidentDone:
    r = await panel.directory.rename(resident_id, body.name, by=who.actor)
    return ResidentDone(message=f"renamed to {r.name}", resident=_resident(panel.directory, r))


@router.delete(
    "/directory/residents/{resident_id}",
    response_model=ResidentDone,
    summary="Remove a resident: every session ends and every link stops working (installer, backend)",
    responses={401: _401, 404: _404},
)
async def remove_resident(resident_id: ResidentPath, panel: PanelDep, who: Caller) -> ResidentDone:
    r, ended = await panel.directory.remove(resident_id, by=who.actor)
    return ResidentDone(message=f"{r.name} removed; {ended} session(s) ended", resident=_resident(panel.directory, r))


@router.delete(
    "/directory/residents/{resident_id}/sessions/{token_id}",
    response_model=ResidentDone,
    summary="Sign one of a resident's devices out (installer, backend)",
    responses={401: _401, 404: _404},
)
async def end_session(resident_id: ResidentPath, token_id: TokenPath, panel: PanelDep, who: Caller) -> ResidentDone:
    r = await panel.directory.end_session(resident_id, token_id, by=who.actor)
    return ResidentDone(message=f"session {token_id} of {r.name} ended", resident=_resident(panel.directory, r))


@router.post(
    "/auth/signin",
    response_model=SignedIn,
    summary="Trade a sign-in link's code for a resident credential (the link works once)",
    responses={401: {"description": "signin_code_invalid, signin_code_used, signin_code_expired, resident_revoked"}},
)
async def signin(body: SignInFields, request: Request, panel: PanelDep) -> SignedIn:
    secret, r, _ = await panel.directory.redeem(body.code, device_name(request.headers.get("user-agent")))
    return SignedIn(
        message=f"signed in as {r.name}, unit {r.unit_id}", token=secret, resident=_resident(panel.directory, r)
    )
