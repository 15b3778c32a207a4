"""Call links, participants and invites over the API (panel/calls/_links.py has the rules).

Two sides:

- **The call's side** (API credentials): ``POST /api/v1/calls/{guid}/links`` makes a link,
  ``GET`` lists them, ``DELETE .../links/{link_id}`` revokes one at once;
  ``GET /api/v1/calls/{guid}/participants`` is the participant list (long-poll with ``version`` and
  ``wait_s``); ``POST /api/v1/calls/{guid}/invite`` invites someone as a guest (a guest credential for
  that call and a link; panel/calls CallService.invite has the rules). Residents may do this for the
  call they answered.
- **The link's side** (``/api/v1/link/...``): the bearer credential is the link (subscribe) or the
  subscription secret it returned (participants, join, leave). Nothing else is accepted there, and
  those credentials are accepted nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from ..calls import NAME_MAX, CallLinks, Link, LinkRefused, Subscription
from ..errors import CallError, http_status
from .deps import PanelDep
from .errors import ApiError, OkBody
from .principals import ApiAuth, Principal
from .roles import caller
from .scope import actor, call_in_scope, call_service, refused

if TYPE_CHECKING:
    from .deps import Panel

router = APIRouter(prefix="/api/v1", tags=["call links"])

Caller = Annotated[Principal, Depends(caller)]
MAX_WAIT_S = 30.0
_401 = {"description": "no, unknown, expired or revoked credential (link_expired, link_revoked, invalid_link, "
                       "invalid_subscription)"}
_403 = {"description": "the credential's role or scope does not cover this call (residents: the call they answered)"}
_404 = {"description": "unknown call or link"}
_409 = {"description": "the call is over or not answered yet; too many links or participants; already joined"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LinkOut(BaseModel):
    id: str
    call_guid: str
    created_at: str
    expires_at: str
    created_by: str
    invited: str | None = None
    revoked: bool


class LinkIssued(OkBody):
    url: str = Field(description="the page to share: /link#<link>; the part after # is the secret and never reaches "
                                 "a server log. Absolute when links.base_url is set")
    link: str = Field(description="the link credential itself (shown only in this response)")
    info: LinkOut


class LinkList(OkBody):
    links: list[LinkOut]


class Done(OkBody):
    pass


class ParticipantOut(BaseModel):
    id: str
    name: str = Field(description="display name: plain text, show it as text")
    kind: Literal["resident", "guest"]
    via: Literal["answer", "link"]


class ParticipantList(OkBody):
    call_guid: str
    version: int = Field(description="pass back as version= to wait for the next change")
    ended: bool = Field(description="true when the call is not in progress (the list is then empty)")
    participants: list[ParticipantOut]


class CallInfo(BaseModel):
    guid: str
    unit_label: str
    status: str
    call_type: str


class Subscribed(OkBody):
    subscription: str = Field(description="the bearer secret of this preview for participants, join and leave")
    you: ParticipantOut = Field(description="how others will see you once you join")
    call: CallInfo
    version: int
    participants: list[ParticipantOut]
    expires_at: str = Field(description="the link can be opened and joined until then")


class Preview(ParticipantList):
    you: ParticipantOut
    joined: bool


class JoinBody(Strict):
    sdp: str = Field(min_length=10, max_length=60_000, description="the WebRTC offer with its candidates gathered "
                                                                   "(no trickle)")


class Joined(OkBody):
    sdp: str = Field(description="the panel's answer")
    session: str = Field(description="the media session id")


class SubscribeBody(Strict):
    name: str = Field(min_length=1, max_length=200, description=f"your display name, 1-{NAME_MAX} characters once "
                                                               "cleaned (control characters removed)")


class InviteBody(Strict):
    subject: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:+-]*$",
                         description="the invitee's id: not the answerer's or a participant's, not a name the "
                                     "panel uses for itself (installer, backend, backend:..., installer:...)")
    name: str | None = Field(None, min_length=1, max_length=NAME_MAX, description="their display name")


class Invited(OkBody):
    token: str = Field(description="a guest credential for this call only (bearer; shown only here): it views "
                                   "the call and talks through the link, and never opens the door, ends the call, "
                                   "shares links or invites")
    token_id: str
    url: str = Field(description="the call link page for them: preview and join with talk")
    link: str
    info: LinkOut


def _links(panel: Panel) -> CallLinks:
    return panel.call_links


def _error(e: LinkRefused) -> ApiError:
    headers: dict[str, str] = {}
    if http_status(e.code) == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="call link"'
    if e.retry_after_s is not None:
        headers["Retry-After"] = str(e.retry_after_s)
    return ApiError(e.code, str(e), headers=headers or None)


def _bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _out(link: Link) -> LinkOut:
    return LinkOut(**link.info())


def _people(panel: Panel, guid: str) -> list[ParticipantOut]:
    return [ParticipantOut(**p.model_dump()) for p in panel.participants.list(guid)]


async def _answered_call(panel: Panel, who: Principal, guid: str) -> Any:
    """The call ``guid`` if the caller may manage its links (the CallService decides: residents only for
    the call they answered)."""
    try:
        return await call_service(panel).link_call(actor(panel, who), guid)
    except CallError as e:
        raise refused(e) from None


# -- the call's side -------------------------------------------------------------------------------------

@router.post("/calls/{guid}/links", response_model=LinkIssued, status_code=201,
             summary="Get a call link for the call in progress (the resident who answered, backend, installer)",
             responses={401: _401, 403: _403, 404: _404, 409: _409})
async def create_link(guid: str, panel: PanelDep, who: Caller) -> LinkIssued:
    await _answered_call(panel, who, guid)
    links = _links(panel)
    try:
        token, link = await links.create(guid, who.actor)
    except LinkRefused as e:
        raise _error(e) from None
    return LinkIssued(message=f"call link {link.id} for call {guid} until {link.info()['expires_at']}",
                      url=links.url(token), link=token, info=_out(link))


@router.get("/calls/{guid}/links", response_model=LinkList, summary="The call links of a call",
            responses={401: _401, 403: _403, 404: _404})
async def list_links(guid: str, panel: PanelDep, who: Caller) -> LinkList:
    await _answered_call(panel, who, guid)
    found = _links(panel).list(guid)
    return LinkList(message=f"{len(found)} link(s)", links=[_out(lk) for lk in found])


@router.delete("/calls/{guid}/links/{link_id}", response_model=Done,
               summary="Revoke a call link: refused from now on; its previews close and its guests leave",
               responses={401: _401, 403: _403, 404: _404})
async def revoke_link(guid: str, link_id: str, panel: PanelDep, who: Caller) -> Done:
    await _answered_call(panel, who, guid)
    try:
        link = await _links(panel).revoke(guid, link_id, who.actor)
    except LinkRefused as e:
        raise _error(e) from None
    return Done(message=f"call link {link.id} revoked")


@router.get("/calls/{guid}/participants", response_model=ParticipantList,
            summary="Who is in a call (long-poll: version and wait_s)",
            responses={401: _401, 403: _403, 404: _404})
async def participants(guid: str, panel: PanelDep, who: Caller,
                       version: int | None = Query(None, ge=0, description="the version you have; with wait_s, "
                                                                            "answer when it changes"),
                       wait_s: float = Query(0, ge=0, le=MAX_WAIT_S)) -> ParticipantList:
    call = panel.calls.get(guid) or await panel.calls.lookup(guid)
    if call is None or not call_in_scope(who, call.unit_id, call.guid):
        raise ApiError("unknown_call", f"there is no call {guid!r} in your scope")
    reg = panel.participants
    now = reg.version
    if version is not None and version == now and reg.live(guid):
        now = await reg.wait(version, wait_s)
    people = _people(panel, guid)
    ended = not reg.live(guid)
    return ParticipantList(message=f"{len(people)} participant(s)" + (" (the call is over)" if ended else ""),
                           call_guid=guid, version=now, ended=ended, participants=people)


@router.post("/calls/{guid}/invite", response_model=Invited, status_code=201,
             summary="Invite someone into the call in progress as a guest: a guest credential for this call and a "
                     "link",
             responses={401: _401, 403: _403, 404: _404, 409: _409,
                        422: {"description": "a bad field; reserved_subject: a name the panel uses for itself; "
                                             "invitee_in_call: the subject is already in the call"}})
async def invite(guid: str, body: InviteBody, panel: PanelDep, who: Caller) -> Invited:
    auth = ApiAuth.for_panel(panel)

    async def issue(subject: str, name: str | None, call_guid: str, by: str, ttl_s: float) -> tuple[str, str]:
        secret, p = await auth.tokens.issue(kind="token", role="guest", subject=subject, name=name,
                                            call_guid=call_guid, issued_by=by, ttl_s=ttl_s)
        return secret, p.token_id

    try:
        inv = await call_service(panel).invite(actor(panel, who), guid, body.subject, body.name, issue=issue)
    except LinkRefused as e:
        raise _error(e) from None
    except CallError as e:
        raise refused(e) from None
    return Invited(message=f"{body.subject} invited into call {guid} as a guest: credential {inv.token_id}, link "
                           f"{inv.link.id}", token=inv.token, token_id=inv.token_id, url=inv.url, link=inv.link_token,
                   info=_out(inv.link))


# -- the link's side -------------------------------------------------------------------------------------

# The link's credentials are checked as dependencies, before the body is looked at: a request without
# one is refused (401) whatever it carries.
async def _link_token(panel: PanelDep, authorization: Annotated[str | None, Header()] = None) -> str:
    token = _bearer(authorization)
    try:
        await _links(panel).verify(token)
    except LinkRefused as e:
        raise _error(e) from None
    assert token is not None
    return token


def _subscription(panel: PanelDep, authorization: Annotated[str | None, Header()] = None) -> Subscription:
    try:
        return _links(panel).subscription(_bearer(authorization))
    except LinkRefused as e:
        raise _error(e) from None


LinkToken = Annotated[str, Depends(_link_token)]
SubDep = Annotated[Subscription, Depends(_subscription)]


@router.post("/link/subscribe", response_model=Subscribed, status_code=201,
             summary="Open a call link: preview the call with a display name (bearer: the link)",
             responses={401: _401, 409: _409, 422: {"description": "the name cannot be shown"},
                        429: {"description": "too many previews of this call are open"}})
async def subscribe(body: SubscribeBody, panel: PanelDep, link: LinkToken) -> Subscribed:
    links = _links(panel)
    try:
        secret, sub = await links.subscribe(link, body.name)
    except LinkRefused as e:
        raise _error(e) from None
    call = panel.calls.current
    assert call is not None
    people = _people(panel, sub.call_guid)
    return Subscribed(message=f"previewing call {call.guid} as {sub.name}", subscription=secret,
                      you=ParticipantOut(**sub.participant().model_dump()),
                      call=CallInfo(guid=call.guid, unit_label=call.unit_label, status=call.state,
                                    call_type=call.call_type),
                      version=links.participants.version, participants=people,
                      expires_at=sub.link.info()["expires_at"])




@router.get("/link/participants", response_model=Preview,
            summary="The participants of the linked call (long-poll: version and wait_s; bearer: the subscription)",
            responses={401: _401, 409: _409})
async def link_participants(panel: PanelDep, sub: SubDep, authorization: Annotated[str | None, Header()] = None,
                            version: int | None = Query(None, ge=0),
                            wait_s: float = Query(0, ge=0, le=MAX_WAIT_S)) -> Preview:
    links = _links(panel)
    reg = links.participants
    now = reg.version
    if version is not None and version == now:
        now = await reg.wait(version, wait_s)
    guid = sub.call_guid
    ended = not reg.live(guid)
    if not ended:
        try:  # revoked while waiting: say so rather than show a list
            links.subscription(_bearer(authorization))
        except LinkRefused as e:
            if e.code != "call_over":
                raise _error(e) from None
            ended = True
    people = [] if ended else _people(panel, guid)
    return Preview(message="the call has ended" if ended else f"{len(people)} participant(s)", call_guid=guid,
                   version=now, ended=ended, participants=people, you=ParticipantOut(**sub.participant().model_dump()),
                   joined=sub.joined)


@router.post("/link/join", response_model=Joined,
             summary="Join the linked call with WebRTC: view and talk (bearer: the subscription)",
             responses={400: {"description": "the offer is not usable SDP"}, 401: _401,
                        403: {"description": "the media layer refused the session"}, 409: _409,
                        503: {"description": "media is not running, or too many media sessions (Retry-After)"}})
async def join(body: JoinBody, panel: PanelDep, sub: SubDep,
               authorization: Annotated[str | None, Header()] = None) -> Joined:
    links = _links(panel)
    try:
        sub, session = await links.join(_bearer(authorization), body.sdp)
    except LinkRefused as e:
        raise _error(e) from None
    return Joined(message=f"{sub.name} joined call {sub.call_guid}", sdp=session.answer_sdp, session=session.id)


@router.post("/link/leave", response_model=Done,
             summary="Leave the linked call and close the preview (bearer: the subscription)",
             responses={401: _401, 409: _409})
async def leave(panel: PanelDep, sub: SubDep, authorization: Annotated[str | None, Header()] = None,
                reason: Literal["left", "page_closed"] = Query("left")) -> Done:
    try:
        sub = await _links(panel).leave(_bearer(authorization), reason)
    except LinkRefused as e:
        raise _error(e) from None
    return Done(message=f"{sub.name} left")
