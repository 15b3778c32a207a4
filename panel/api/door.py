"""The door over the API: open (release), and hold/release a relay.

A translation: the caller's credential becomes a ``Requester``, the body an ``UnlockRequest``, and
``Door.open`` decides (panel/door/_service.py: who may release which relay, which call it belongs
to, the duration, the tamper block) and journals every refusal. The bodies are the door's own wire
models, the same the MQTT ``open`` command uses, so both channels refuse the same payloads.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import Field

from ..door import Grant, HoldFields, OpenFields, Requester, UnlockRequest
from ..events import Cause
from .deps import PanelDep
from .errors import ApiError, OkBody
from .principals import Principal
from .roles import caller

if TYPE_CHECKING:
    from .deps import Panel

Caller = Annotated[Principal, Depends(caller)]


class _JournalledRoute(APIRoute):
    """A release refused for its body (a wrong type, an unknown field) is journalled like every other
    refused release, once the caller is known (a body that is not JSON at all is refused first)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.path.endswith(("/open", "/hold")):
            return handler  # not a release: a refused relay release is no refused unlock

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                who: Principal | None = getattr(request.state, "principal", None)
                panel = getattr(request.app.state, "panel", None)
                if who is not None and panel is not None:
                    relay = request.path_params.get("relay_id")
                    relay = relay if relay in panel.door.relays else None  # never a caller's junk in the journal
                    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'] if p != 'body') or 'body'}: "
                                         f"{err['msg']}" for err in e.errors())
                    panel.door.refused(UnlockRequest(_requester(who), method="api", relay=relay),
                                       "invalid_request", problems)
                raise

        return route


router = APIRouter(prefix="/api/v1/door", tags=["door"], route_class=_JournalledRoute)


class OpenBody(OpenFields):
    pass


class HoldBody(HoldFields):
    pass


class Released(OkBody):
    access_id: str = Field(description="the access-log entry of this release")
    relay: str
    duration_s: float = Field(description="how long the relay stays energised at most (the grant's own)")
    cause: Cause
    actor: str
    call_guid: str | None = None


class RelayOff(OkBody):
    relay: str
    was_energised: bool


_401 = {"description": "no, unknown, expired or revoked credential"}
_OPEN: dict[int | str, dict[str, Any]] = {
         401: _401, 403: {"description": "the credential may not open now (e.g. not your call, not your unit's relay)"},
         404: {"description": "unknown relay or call"},
         409: {"description": "tamper block active, no answered call, or the call is over"},
         422: {"description": "a field is invalid (e.g. duration_s beyond the relay's max_on_s)"}}

def _requester(who: Principal) -> Requester:
    return Requester(role=who.role, actor=who.actor, subject=who.subject, unit_id=who.unit_id,
                     call_guid=who.call_guid)


async def _open(panel: Panel, req: UnlockRequest) -> Grant:
    grant: Grant = await panel.door.open(req)  # a refusal is answered with its status from the one table
    return grant


def _released(grant: Grant, message: str) -> Released:
    info = grant.info
    return Released(message=message, access_id=info.access_id, relay=info.relay, duration_s=grant.duration_s,
                    cause=info.cause, actor=info.actor, call_guid=info.call_guid)


@router.post("/open", response_model=Released, summary="Open the door (release the lock)", responses=_OPEN)
async def open_door(body: OpenBody, panel: PanelDep, who: Caller) -> Released:
    grant = await _open(panel, UnlockRequest(_requester(who), method="api", relay=body.relay,
                                             call_guid=body.call_guid, duration_s=body.duration_s,
                                             on_behalf_of=body.actor))
    return _released(grant, f"door released: relay {grant.info.relay} for {grant.duration_s:g} s")


@router.post("/relays/{relay_id}/hold", response_model=Released, summary="Hold a relay energised (bistable hold; "
             "monostable up to max_on_s)", responses=_OPEN)
async def hold(panel: PanelDep, who: Caller, relay_id: str = Path(max_length=64),
               body: HoldBody | None = None) -> Released:
    body = body or HoldBody()
    grant = await _open(panel, UnlockRequest(_requester(who), method="api", relay=relay_id, call_guid=body.call_guid,
                                             duration_s=body.seconds, hold=True))
    relay = grant.info.relay
    return _released(grant, f"relay {relay} held for up to {grant.duration_s:g} s (max_on_s "
                     f"{panel.cfg.relay(relay).max_on_s:g}); POST .../relays/{relay}/release ends it")


@router.post("/relays/{relay_id}/release", response_model=RelayOff, summary="Release a held relay (lock again)",
             responses={401: _401, 404: {"description": "unknown relay"}})
async def release(panel: PanelDep, who: Caller, relay_id: str = Path(max_length=64)) -> RelayOff:
    if relay_id not in panel.door.relays:
        known = ", ".join(panel.door.relays)
        raise ApiError("unknown_relay", f"relay: there is no relay {relay_id!r}; this panel has {known}")
    was_on = panel.door.release(relay_id, "released")
    await panel.journal.flush()
    return RelayOff(message=f"relay {relay_id} {'de-energised' if was_on else 'was not energised'}", relay=relay_id,
                    was_energised=was_on)
