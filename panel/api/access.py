"""Doors without a call over the API: PINs, duress PINs, temporary codes (with their QR), cards.

The rules are the access service's (``panel/access``); this module only translates. Residents manage
their own PIN, duress PIN and temporary codes and see and revoke only their own credentials;
installers and the backend manage everybody's (``owner`` names whose) and enrol cards. A secret is
in a response once, when it is made (a temporary code, which the resident hands on); after that only
its label, owner and counters are shown.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ..errors import AccessError
from .deps import PanelDep
from .errors import ApiError, OkBody
from .principals import Principal
from .roles import caller

if TYPE_CHECKING:
    from ..access import AccessService, Credential

router = APIRouter(prefix="/api/v1/access", tags=["access"])

Caller = Annotated[Principal, Depends(caller)]
Owner = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
Digits = Annotated[str, Field(min_length=1, max_length=32, description="digits only (a keypad has no other "
                                                                       "keys); at least access.min_code_length")]
RelayId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PinBody(Strict):
    pin: Digits
    duress: bool = Field(False, description="set the duress PIN: it opens like the PIN and silently raises "
                         "access.duress to the backend")
    owner: Owner | None = Field(None, description="installer/backend: whose PIN; residents set their own")


class CodeBody(Strict):
    label: Label = Field(description="what it is for, e.g. \"DHL Tuesday\"; shown in the access log")
    code: Digits | None = Field(None, description="the code to use; default: the panel makes one up "
                                "(access.code_length digits)")
    valid_from: datetime | None = Field(None, strict=False, description="ISO 8601 with a time zone; default: now")
    valid_until: datetime | None = Field(None, strict=False, description="ISO 8601 with a time zone; default: no end")
    max_uses: int | None = Field(None, description="how many releases; default: no limit")
    doors: list[RelayId] | None = Field(None, max_length=16, description="relay ids it opens; default: the door")
    owner: Owner | None = Field(None, description="installer/backend: on whose behalf; residents make their own")


class CardBody(Strict):
    owner: Owner
    number: str = Field(min_length=4, max_length=96, description="the card number as the reader reports it (hex)")
    label: Label = "card"
    doors: list[RelayId] | None = Field(None, max_length=16)


class LearnBody(Strict):
    owner: Owner
    label: Label = "card"
    timeout_s: float = Field(30.0, gt=0, le=120, description="how long to wait for the card at a reader")
    doors: list[RelayId] | None = Field(None, max_length=16)


class AccessCredentialOut(BaseModel):
    id: str
    kind: Literal["pin", "duress", "code", "card"]
    owner: str
    label: str
    doors: list[str]
    valid_from: float | None = Field(description="Unix seconds")
    valid_until: float | None = Field(description="Unix seconds")
    max_uses: int | None
    uses: int
    uses_left: int | None
    created: float
    created_by: str


class CredentialOne(OkBody):
    credential: AccessCredentialOut


class Qr(BaseModel):
    payload: str = Field(description="what the QR code carries (the code itself, prefixed)")
    svg: str = Field(description="the QR code as an SVG image, to show or share")


class CodeMade(CredentialOne):
    access_code: str = Field(description="the code: shown only now; hand it to whoever should use it")
    qr: Qr | None = Field(None, description="the code as a QR image for the camera (null if zxing-cpp is missing)")


class CredentialList(OkBody):
    credentials: list[AccessCredentialOut]


_401: dict[str, Any] = {"description": "no, unknown, expired or revoked credential"}
_ERRORS: dict[int | str, dict[str, Any]] = {
           401: _401, 403: {"description": "not allowed for this credential (e.g. a call-scoped resident)"},
           404: {"description": "no such credential (of yours), or access is not running"},
           409: {"description": "the code cannot be used, or the card is enrolled already"},
           422: {"description": "a field is invalid: too short, not digits, a window that ends before it starts, "
                               "an unknown door"}}


def _service(panel: Any) -> AccessService:
    if panel.access is None:
        raise ApiError("not_ready", "access is not running yet")
    return panel.access  # type: ignore[no-any-return]


def _owner(who: Principal, owner: str | None) -> str:
    """Whose credential a request is about: residents only ever their own."""
    if who.role == "resident":
        if who.call_guid is not None:
            raise AccessError("not_allowed_for_role", "a credential for one call cannot manage door codes; use "
                              "the resident's own credential")
        if owner not in (None, who.subject):
            raise AccessError("not_your_credential", "owner: residents manage only their own codes; omit it")
        return who.subject
    if owner is None:
        raise AccessError("owner_required", "owner: name whose credential this is (a resident id)")
    return owner


def _out(cred: Credential) -> AccessCredentialOut:
    return AccessCredentialOut(**cred.public())


def _ts(name: str, when: datetime | None) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ApiError("invalid_request", f"{name}: give a time zone, e.g. 2025-03-14T09:00:00Z")
    return when.timestamp()


def qr_of(code: str) -> Qr | None:
    from ..access import QR_PREFIX

    try:
        import zxingcpp  # the optional "access" extra
    except ImportError:
        return None
    payload = QR_PREFIX + code
    return Qr(payload=payload, svg=zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.QRCode).to_svg())


@router.get("/credentials", response_model=CredentialList, summary="PINs, codes and cards (never their secrets)",
            responses={401: _401})
async def list_credentials(panel: PanelDep, who: Caller, owner: str | None = Query(None, max_length=128),
                           kind: Literal["pin", "duress", "code", "card"] | None = None) -> CredentialList:
    svc = _service(panel)
    if who.role == "resident":
        owner = _owner(who, owner)
    creds = svc.creds.live(owner=owner, kind=kind)
    return CredentialList(message=f"{len(creds)} credential(s)", credentials=[_out(c) for c in creds])


@router.post("/pin", response_model=CredentialOne, summary="Set a resident's PIN or duress PIN (replaces the old)",
             responses=_ERRORS)
async def set_pin(body: PinBody, panel: PanelDep, who: Caller) -> CredentialOne:
    owner = _owner(who, body.owner)
    cred = await _service(panel).set_pin(owner=owner, pin=body.pin, by=who.actor, duress=body.duress)
    return CredentialOne(message=f"{'duress PIN' if body.duress else 'PIN'} of {owner} set", credential=_out(cred))


@router.post("/codes", response_model=CodeMade, status_code=201, summary="Make a temporary code (and its QR)",
             responses=_ERRORS)
async def create_code(body: CodeBody, panel: PanelDep, who: Caller) -> CodeMade:
    owner = _owner(who, body.owner)
    cred, code = await _service(panel).create_code(
        owner=owner, by=who.actor, label=body.label, code=body.code, valid_from=_ts("valid_from", body.valid_from),
        valid_until=_ts("valid_until", body.valid_until), max_uses=body.max_uses, doors=body.doors)
    return CodeMade(message=f"code {cred.label!r} made for {owner}", credential=_out(cred), access_code=code,
                    qr=qr_of(code))


@router.post("/cards", response_model=CredentialOne, status_code=201, summary="Enrol a card for a resident",
             responses=_ERRORS)
async def enrol_card(body: CardBody, panel: PanelDep, who: Caller) -> CredentialOne:
    cred = await _service(panel).enrol_card(owner=body.owner, number=body.number, label=body.label, by=who.actor,
                                            doors=body.doors)
    return CredentialOne(message=f"card {cred.label!r} enrolled for {body.owner}", credential=_out(cred))


@router.post("/cards/learn", response_model=CredentialOne, status_code=201,
             summary="Enrol the next card presented at a reader (hold the resident's card to it)",
             responses={**_ERRORS, 408: {"description": "no card was presented in time"}})
async def learn_card(body: LearnBody, panel: PanelDep, who: Caller) -> CredentialOne:
    cred = await _service(panel).learn_card(owner=body.owner, label=body.label, by=who.actor,
                                            timeout_s=body.timeout_s, doors=body.doors)
    return CredentialOne(message=f"card {cred.label!r} learnt for {body.owner}", credential=_out(cred))


@router.delete("/credentials/{cred_id}", response_model=CredentialOne, summary="Revoke a PIN, code or card",
               responses=_ERRORS)
async def revoke(panel: PanelDep, who: Caller, cred_id: str = Path(max_length=64)) -> CredentialOne:
    owner = _owner(who, None) if who.role == "resident" else None
    cred = await _service(panel).revoke(cred_id, owner=owner)
    return CredentialOne(message=f"{cred.kind} {cred.label!r} of {cred.owner} revoked", credential=_out(cred))
