"""Enrolment over the API: the installer page's view of the code, the certificate and the broker, and its
"try now" and "enrol again". The enrolment service (panel/enrol) owns every rule; this only translates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from .deps import Caller, PanelDep
from .errors import ApiError, OkBody

router = APIRouter(prefix="/api/v1", tags=["enrol"])

_401 = {"description": "no, unknown, expired or revoked credential"}
_OFF = {"description": "enrolment is off on this panel (enrol.est_url is not set)"}


class EnrolStatus(OkBody):
    enrolment: dict[str, Any] = Field(description="state (unenrolled, enrolled), busy (enrolling, renewing or null), panel_id, "
                                      "est_url, code (short, uri, fingerprint, expires; only while a code is "
                                      "wanted), qr (an SVG data: URI of the code), again, last_error {code, "
                                      "message}, last_attempt, certificate (serial, not_after, broker), renewals, "
                                      "mqtt (connected, last_error)")


def _service(panel: Any) -> Any:
    if panel.enrol is None:
        raise ApiError("not_configured", "enrolment is off on this panel: set enrol.est_url in the config file on "
                       "the panel (docs/enrolment.md)")
    return panel.enrol


def _message(status: dict[str, Any]) -> str:
    if status["state"] == "enrolled" and not status["again"]:
        mqtt = status.get("mqtt") or {}
        return f"enrolled; broker {'connected' if mqtt.get('connected') else 'not connected'}"
    err = status.get("last_error")
    return f"waiting: {err['message']}" if err else "waiting for the backend to redeem the code"


@router.get("/enrol", response_model=EnrolStatus, summary="Enrolment: the code, the certificate, the broker",
            responses={401: _401, 404: _OFF})
async def enrol_status(panel: PanelDep, who: Caller) -> EnrolStatus:
    status = await _service(panel).status()
    return EnrolStatus(message=_message(status), enrolment=status)


@router.post("/enrol", response_model=EnrolStatus, summary="Enrol now with the code shown (installer)",
             responses={401: _401, 404: _OFF, 409: {"description": "not redeemed yet, or held for approval"},
                        502: {"description": "the backend or the broker refused; the code says which"},
                        503: {"description": "the EST endpoint cannot be reached"}})
async def enrol_now(panel: PanelDep, who: Caller) -> EnrolStatus:
    service = _service(panel)
    if not service.wants_code:
        raise ApiError("already_enrolled", "the panel is enrolled and renews its certificate by itself; to enrol "
                       "anew (another backend, a revoked certificate) use Enrol again")
    await service.enrol_now()
    status = await service.status()
    return EnrolStatus(message=_message(status), enrolment=status)


@router.post("/enrol/again", response_model=EnrolStatus, summary="Show a new code to enrol anew (installer)",
             responses={401: _401, 404: _OFF})
async def enrol_again(panel: PanelDep, who: Caller) -> EnrolStatus:
    service = _service(panel)
    await service.enrol_again()
    status = await service.status()
    return EnrolStatus(message="a new code: redeem it; the identity in force stays until the new one is", enrolment=status)
