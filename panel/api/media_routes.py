"""Pictures on the local API: the call's snapshots, a snapshot now, and the MJPEG live stream.

Credentials (docs/media.md, Snapshots and MJPEG):
- ``Authorization: Bearer <token>``, or ``Authorization: Basic`` with the token as the password (any
  user name) for web views that can only do HTTP authentication. Tokens are the media session
  credentials: a call's credential (while its call is live), a live-view credential, or the installer
  token. Basic sends the token in the clear: use it over TLS or on a trusted LAN only.
- A call's stored pictures also open with the signed ``?exp=&sig=`` query of the ``call.snapshot``
  event's URL, which is how the backend fetches them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from ..errors import http_status
from ..media.errors import MediaError, TokenRefused
from ..platform import LiveViewConfig, SlotTier
from .deps import PanelDep
from .errors import ApiError
from .roles import client_address

if TYPE_CHECKING:
    from ..media.visitor import VisitorMedia
    from .deps import Panel

router = APIRouter(prefix="/api/v1", tags=["media"])

REALM = "panel camera"
# One challenge per header line: Chromium (web views) rejects a line that lists several schemes.
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'
JPEG = "image/jpeg"
_UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {401: {"description": "no, wrong, expired or revoked credential"}}
_JPEG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {JPEG: {}}, "description": "a JPEG picture"}}


def bearer_or_basic(authorization: str | None) -> str | None:
    """The token from ``Authorization: Bearer <token>`` or ``Basic base64(user:token)``."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError("unauthenticated", "the Basic credential is not base64 of user:password",
                           headers={"WWW-Authenticate": CHALLENGE}) from None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    raise ApiError("unauthenticated", f"unsupported authorization scheme {scheme!r}; use Bearer or Basic",
                   headers={"WWW-Authenticate": CHALLENGE})


def _visitor(panel: Panel, what: str) -> VisitorMedia:
    visitor = getattr(panel, "visitor", None)
    if visitor is None or visitor.jpegs is None:
        raise ApiError("no_camera", f"{what} needs a camera; this panel runs without one (see [media.video] "
                       "in the config and the media.device_lost events)")
    return visitor  # type: ignore[no-any-return]


def _principal(request: Request) -> Any | None:
    """The API credential the app-wide gate (panel/api/roles.py) authenticated, if any."""
    return getattr(request.state, "principal", None)


@dataclass(frozen=True)
class _Live:
    """Who may see the camera now, and for how long."""

    token_id: str
    call_guid: str | None  # the call the view is tied to (it ends with it), or None
    who: str
    tier: SlotTier  # which reserve of the viewers it may use
    lasts_s: float | None = None  # an API credential: until it expires
    idle_only: bool = False  # a viewer's or resident's live view: ends when a call begins


def _live_grant(request: Request, panel: Panel, visitor: VisitorMedia, authorization: str | None) -> _Live:
    p = _principal(request)
    if p is not None:
        from ..media.errors import SessionRefused
        from ..media.liveview import idle_only, watch_call
        from ..media.tokens import slot_tier

        live_view = panel.cfg.media.live_view if panel.cfg.media is not None else LiveViewConfig()
        try:
            call_guid = watch_call(live_view, role=p.role, unit_id=p.unit_id, call_guid=p.call_guid,
                                   current=panel.calls.current)
        except SessionRefused as e:
            raise ApiError(e.code, str(e)) from None
        auth = request.app.state.auth
        visitor.media.follow_revocations(auth.tokens)  # revoking the credential ends its stream at once
        tier = slot_tier(installer=p.role == "installer", in_call=call_guid is not None, resident=p.role == "resident")
        return _Live(p.token_id, call_guid, p.actor, tier, None if p.expires is None else p.expires - auth.tokens.now(),
                     idle_only=idle_only(live_view, role=p.role, call_guid=call_guid))
    try:
        grant = visitor.authorize_live(bearer_or_basic(authorization))
    except TokenRefused as e:
        raise _refused(e) from None
    return _Live(grant.token_id, grant.call_guid if grant.kind == "call" else None, grant.subject or grant.token_id,
                 grant.tier)


def _refused(e: TokenRefused) -> ApiError:
    return ApiError(e.code, str(e), headers={"WWW-Authenticate": CHALLENGE} if http_status(e.code) == 401 else None)


def _jpeg(data: bytes, cache: str = "no-store") -> Response:
    return Response(data, media_type=JPEG, headers={"Cache-Control": cache})


@router.get("/snapshot.jpg", summary="The camera's picture now (call, live-view or installer credential)",
            response_class=Response, responses={**_JPEG_RESPONSE, **_UNAUTHENTICATED,
                                                503: {"description": "no camera, or no picture in time"}})
async def snapshot_now(request: Request, panel: PanelDep, authorization: str | None = Header(None)) -> Response:
    visitor = _visitor(panel, "a snapshot")
    _live_grant(request, panel, visitor, authorization)
    assert visitor.snapshots is not None
    try:
        jpeg = await visitor.snapshots.on_demand()
    except MediaError as e:
        raise ApiError(e.code, str(e), headers={"Retry-After": "5"}) from None
    return _jpeg(jpeg.data)


@router.get("/video.mjpeg", summary="MJPEG live stream (call, live-view or installer credential; Basic or Bearer)",
            response_class=Response,
            responses={200: {"content": {"multipart/x-mixed-replace": {}}, "description": "JPEG pictures until the "
                             "client leaves, the credential is revoked or its call ends"},
                       **_UNAUTHENTICATED, 503: {"description": "no camera, MJPEG off, or too many viewers"}})
async def mjpeg(request: Request, panel: PanelDep, authorization: str | None = Header(None)) -> Any:
    visitor = _visitor(panel, "the MJPEG stream")
    if visitor.mjpeg is None:
        raise ApiError("mjpeg_disabled", "the MJPEG stream is off on this panel (media.mjpeg.enabled)")
    live = _live_grant(request, panel, visitor, authorization)
    from ..media.mjpeg import MjpegRefused

    try:
        viewer = visitor.add_mjpeg_viewer(live.token_id, live.call_guid, live.who, lasts_s=live.lasts_s,
                                          idle_only=live.idle_only, address=client_address(request), tier=live.tier)
    except MjpegRefused as e:
        raise ApiError(e.code, str(e), headers={"Retry-After": "10"}) from None
    return visitor.mjpeg.response(viewer)


async def _call_access(request: Request, panel: Panel, visitor: VisitorMedia, guid: str, exp: str | None,
                       sig: str | None, authorization: str | None) -> None:
    """A call's stored pictures open with its signed URL, an API credential for it, or its media token."""
    assert visitor.snapshots is not None and visitor.snapshots.signer is not None
    why = visitor.snapshots.signer.check(guid, exp, sig) if exp is not None or sig is not None else None
    if (exp is not None or sig is not None) and why is None:
        return
    p = _principal(request)
    if p is not None:
        if p.role in ("installer", "backend") or p.call_guid == guid:
            return
        call = await panel.calls.lookup(guid) if p.call_guid is None and p.unit_id else None
        if call is not None and call.unit_id == p.unit_id:
            return
        raise ApiError("forbidden", f"your {p.role} credential is not for call {guid}")
    if why is not None and not authorization:
        hint = {"expired": "the signed URL expired", "invalid": "the signature is not valid for this call",
                "missing": "the signed URL needs both exp and sig"}[why]
        raise ApiError(f"signature_{why}",
                       f"{hint}; fetch with that call's credential or an installer or backend credential",
                       headers={"WWW-Authenticate": CHALLENGE})
    try:
        visitor.authorize_call(bearer_or_basic(authorization), guid)
    except TokenRefused as e:
        raise _refused(e) from None


@router.get("/calls/{guid}/snapshot.jpg", summary="The picture taken at the press of a call",
            response_class=Response, responses={**_JPEG_RESPONSE, **_UNAUTHENTICATED,
                                                404: {"description": "no picture stored for that call"}})
async def call_snapshot(guid: str, request: Request, panel: PanelDep, exp: str | None = Query(None, max_length=16),
                        sig: str | None = Query(None, max_length=64),
                        authorization: str | None = Header(None)) -> Response:
    return await _stored(request, panel, guid, "press.jpg", exp, sig, authorization)


@router.get("/calls/{guid}/snapshots/{name}", summary="One stored picture of a call (press.jpg, pre-NN.jpg)",
            response_class=Response, responses={**_JPEG_RESPONSE, **_UNAUTHENTICATED,
                                                404: {"description": "no such picture"}})
async def call_picture(guid: str, name: str, request: Request, panel: PanelDep, exp: str | None = Query(None, max_length=16),
                       sig: str | None = Query(None, max_length=64),
                       authorization: str | None = Header(None)) -> Response:
    if name == "meta.json":
        raise ApiError("no_snapshot", "pictures are press.jpg and pre-NN.jpg; GET .../snapshots lists them")
    return await _stored(request, panel, guid, name, exp, sig, authorization)


async def _stored(request: Request, panel: Panel, guid: str, name: str, exp: str | None, sig: str | None,
                  authorization: str | None) -> Response:
    visitor = _visitor(panel, "call snapshots")
    await _call_access(request, panel, visitor, guid, exp, sig, authorization)
    assert visitor.snapshots is not None
    data = await visitor.snapshots.read(guid, name)
    if data is None:
        raise ApiError("no_snapshot", f"no picture {name} is stored for call {guid} (none was taken, or "
                       "media.snapshots retention removed it)")
    return _jpeg(data, "private, max-age=86400, immutable")


@router.get("/calls/{guid}/snapshots", summary="The pictures stored with a call: at the press and before it",
            responses={**_UNAUTHENTICATED, 404: {"description": "no picture stored for that call"}})
async def call_snapshots(guid: str, request: Request, panel: PanelDep, exp: str | None = Query(None, max_length=16),
                         sig: str | None = Query(None, max_length=64),
                         authorization: str | None = Header(None)) -> dict[str, Any]:
    visitor = _visitor(panel, "call snapshots")
    await _call_access(request, panel, visitor, guid, exp, sig, authorization)
    assert visitor.snapshots is not None
    meta = await visitor.snapshots.listing(guid)
    if meta is None:
        raise ApiError("no_snapshot", f"no pictures are stored for call {guid}")
    query = f"?exp={exp}&sig={sig}" if exp and sig else ""
    frames = [{**f, "url": f"/api/v1/calls/{guid}/snapshots/{f['name']}{query}"} for f in meta.get("frames", [])]
    return {"code": "ok", "message": f"{len(frames)} pictures", "guid": guid, "width": meta.get("width"),
            "height": meta.get("height"), "pictures": frames}
