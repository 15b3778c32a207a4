"""WHEP (WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep) on the local API: live view and call media
for any WHEP player (Home Assistant's go2rtc, a browser page).

- ``POST /api/v1/media/whep`` with the offer (``Content-Type: application/sdp``) and
  ``Authorization: Bearer <token>``: ``201 Created``, ``Location`` of the session resource, the answer
  as ``application/sdp``. The answer holds every candidate (aiortc does not trickle), so ``PATCH``
  (trickle ICE) is ``405``.
- ``DELETE`` on the session resource ends the session (``200``); ``OPTIONS`` answers CORS preflights.
- Errors: ``400`` malformed or unusable SDP, ``401`` missing/wrong/expired/revoked token, ``403``
  not allowed (live view off), ``404`` unknown session, ``409`` the call is over or already
  answered, ``415`` not ``application/sdp``, ``503`` too many sessions or media not running (with
  ``Retry-After``). Bodies are the API's ``{code, message}``.

The token is a session credential (a call's, from ``MediaService.issue_call_token``) or the
installer token, which grants live view only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from ..media.errors import SessionRefused, TokenRefused
from .errors import ApiError, ErrorBody
from .pages import page_file
from .roles import client_address

if TYPE_CHECKING:
    from ..media.service import MediaService
    from ..media.tokens import Grant

router = APIRouter(prefix="/api/v1/media", tags=["media"])

SDP = "application/sdp"
CORS = {
    "Access-Control-Allow-Origin": "*",  # bearer tokens, no cookies: any origin may use its own token
    "Access-Control-Expose-Headers": "Location, Link, ETag, Retry-After",
}

_errors: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed SDP, or no codec in common"},
    401: {"model": ErrorBody, "description": "no, wrong, expired or revoked token"},
    403: {"model": ErrorBody, "description": "live view is off, or not for this credential now (media.live_view)"},
    409: {"model": ErrorBody, "description": "the call is over, or already answered by someone else"},
    415: {"model": ErrorBody, "description": "the body is not application/sdp"},
    429: {"model": ErrorBody, "description": "the credential or address holds as many sessions as it may"},
    503: {"model": ErrorBody, "description": "too many sessions (or the free ones are reserved), or media is not "
                                             "running (see Retry-After)"},
}


def _media(request: Request) -> MediaService:
    panel = request.app.state.panel
    media = getattr(panel, "media", None) if panel is not None else None
    if media is None:
        raise ApiError("media_unavailable", "media is not running on this panel (no [media] section, or it "
                       "failed to start: see the panel's log)", headers={**CORS, "Retry-After": "60"})
    return media  # type: ignore[no-any-return]


def _bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _from_principal(request: Request, media: MediaService, p: Any, *, start: bool) -> Grant:
    """What an API credential (authenticated by the app's gate, panel/api/roles.py) may do with media:
    installer and backend: live view; a viewer or resident: their own call, else live view as far as
    media.live_view allows (panel/media/liveview.py). Whatever it starts ends when the credential expires
    or is revoked."""
    from ..media.liveview import idle_only, watch_call
    from ..media.tokens import Grant

    auth = getattr(request.app.state, "auth", None)
    if auth is not None:
        media.follow_revocations(auth.tokens)
    role = p.role
    installer = role == "installer"
    if not start:  # ending a session asks who, not what they may watch now
        return Grant(token_id=p.token_id, kind="monitor", subject=p.actor, installer=installer)
    # The expiry is wall time on the panel's clock; sessions time out on the media clock (monotonic).
    until = (media.clock.monotonic() + (p.expires - auth.tokens.now())
             if auth is not None and p.expires is not None else None)
    if role in ("installer", "backend"):
        return Grant(token_id=p.token_id, kind="monitor", subject=p.actor, view_only=True, installer=installer,
                     lasts_until_mono=until)
    calls = media.calls
    call_guid = watch_call(media.cfg.live_view, role=role, unit_id=p.unit_id, call_guid=p.call_guid,
                           current=calls.current if calls is not None else None)
    if call_guid is not None:
        return Grant(token_id=p.token_id, kind="call", subject=p.subject, call_guid=call_guid,
                     view_only=role != "resident", lasts_until_mono=until)
    return Grant(token_id=p.token_id, kind="monitor", subject=p.subject, view_only=True, lasts_until_mono=until,
                 resident=role == "resident", idle_only=idle_only(media.cfg.live_view, role=role, call_guid=None))


def _grant(request: Request, media: MediaService, authorization: str | None, *, start: bool = False) -> Grant:
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        try:
            return _from_principal(request, media, principal, start=start)
        except SessionRefused as e:
            raise _refused(e) from None
    try:
        return media.tokens.verify(_bearer(authorization))
    except TokenRefused as e:
        error = "invalid_request" if e.code == "unauthenticated" else "invalid_token"
        challenge = f'Bearer realm="panel", error="{error}"'
        raise ApiError(e.code, str(e), headers={**CORS, "WWW-Authenticate": challenge}) from None


def _refused(e: SessionRefused) -> ApiError:
    headers = dict(CORS)
    if e.retry_after_s is not None:
        headers["Retry-After"] = str(e.retry_after_s)
    return ApiError(e.code, str(e), headers=headers)


def _link_headers(media: MediaService) -> list[str]:
    """ICE servers for the client (WHEP: Link rel="ice-server"), only when sessions use them."""
    if not media.cfg.whep_ice_servers:
        return []
    links = []
    for server in media.configured_ice_servers():
        urls = server.urls if isinstance(server.urls, list) else [server.urls]
        for url in urls:
            attrs = '; rel="ice-server"'
            if server.username:
                attrs += f'; username="{server.username}"; credential="{server.credential or ""}"; credential-type="password"'
            links.append(f"<{url}>{attrs}")
    return links


# format binary: the body is the SDP text as it is, not a JSON string (generators then send bytes).
_SDP_TEXT = {SDP: {"schema": {"type": "string", "format": "binary",
                              "description": "an SDP session description (RFC 8866), UTF-8"}}}
_OFFER = {"requestBody": {"required": True, "description": "the SDP offer, with all its ICE candidates (the "
                          "panel does not take trickled ones)", "content": _SDP_TEXT}}
_CREATED = {
    "description": "the session is up: the SDP answer, with all the panel's candidates",
    "content": _SDP_TEXT,
    "headers": {
        "Location": {"description": "the session resource; DELETE it to end the session", "required": True,
                     "schema": {"type": "string", "example": "/api/v1/media/whep/Yp3vQ9kL2xR7sT0a"}},
        "ETag": {"description": "the session's entity tag", "schema": {"type": "string"}},
        "Link": {"description": "ICE servers (rel=\"ice-server\"), only with media.whep_ice_servers",
                 "schema": {"type": "string"}},
    },
}


@router.post("/whep", status_code=201, summary="Start a WHEP session (live view or call media)",
             response_class=Response, responses={201: _CREATED, **_errors}, openapi_extra=_OFFER)
async def whep_start(request: Request,
                     who: Annotated[str | None, Query(max_length=128, description="the resident's id, when the "
                                                     "token does not name one")] = None) -> Response:
    media = _media(request)
    grant = _grant(request, media, request.headers.get("authorization"), start=True)
    content_type = request.headers.get("content-type")
    if (content_type or "").split(";")[0].strip().lower() != SDP:
        raise ApiError("unsupported_media_type", f"send the SDP offer as Content-Type: {SDP} (got "
                       f"{content_type or 'none'})", headers={**CORS, "Accept-Post": SDP})
    raw = await request.body()
    try:
        offer = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("invalid_sdp", "the SDP offer is not UTF-8 text", headers=CORS) from None
    try:
        session = await media.open_session(offer, grant, who=who, origin="whep", ice_servers=None,
                                           address=client_address(request))
    except SessionRefused as e:
        raise _refused(e) from None
    location = f"{router.prefix}/whep/{session.id}"
    headers = {**CORS, "Location": location, "ETag": f'"{session.id}"'}
    response = Response(session.answer_sdp, status_code=201, media_type=SDP, headers=headers)
    for link in _link_headers(media):
        response.headers.append("Link", link)
    return response


@router.delete("/whep/{session_id}", summary="End a WHEP session", response_class=Response,
               responses={200: {"description": "ended (no body)"}, 404: {"model": ErrorBody}, **_errors})
async def whep_end(session_id: str, request: Request) -> Response:
    media = _media(request)
    grant = _grant(request, media, request.headers.get("authorization"))
    session = media.session_info(session_id)
    if session is None:
        raise ApiError("unknown_session", f"there is no session {session_id} (it ended, or never existed)",
                       headers=CORS)
    if grant.token_id != session.credential_id and not grant.installer:
        raise ApiError("not_your_session", "this token did not start that session", headers=CORS)
    await media.end_session(session.id, "whep_delete")
    return Response(status_code=200, headers=CORS)


@router.patch("/whep/{session_id}", summary="Trickle ICE (not supported)", status_code=405,
              responses={405: {"model": ErrorBody}})
async def whep_patch(session_id: str) -> Response:
    raise ApiError("trickle_not_supported", "the panel's answer holds all its candidates and it does not take "
                   "trickled ones: gather candidates before POSTing the offer", headers={**CORS, "Allow": "DELETE, OPTIONS"})


@router.options("/whep", summary="CORS preflight for the WHEP endpoint", status_code=204, response_class=Response)
async def whep_options() -> Response:
    return Response(status_code=204, headers={
        **CORS, "Allow": "POST, OPTIONS", "Accept-Post": SDP,
        "Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600"})


@router.options("/whep/{session_id}", summary="CORS preflight for a WHEP session", status_code=204,
                response_class=Response)
async def whep_session_options(session_id: str) -> Response:
    return Response(status_code=204, headers={
        **CORS, "Allow": "DELETE, OPTIONS", "Access-Control-Allow-Methods": "DELETE, PATCH, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type", "Access-Control-Max-Age": "600"})


@router.get("/sessions", summary="Media sessions and devices (installer)", responses=_errors)
async def media_status(request: Request) -> dict[str, Any]:
    media = _media(request)
    if not _grant(request, media, request.headers.get("authorization")).installer:
        raise ApiError("forbidden", "the media status is for the installer", headers=CORS)
    return media.status()


@router.get("/player", summary="A WHEP player page for live view: this panel only, the credential typed into its form",
            response_class=HTMLResponse)
async def player() -> Response:
    return await page_file("player.html")  # with the pages' CSP: it can connect to this origin only
