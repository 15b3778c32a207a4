"""Who may call which route: the one table, enforced for every request and documented from here.

Every route of the app has an entry in ``ACCESS``; a route without one is refused to everybody
(and tests/test_api_roles.py fails naming it). A rule lists the roles allowed; ``scoped`` roles
pass this gate but the handler narrows what they may touch (a resident opens the door only during
the call they answered; a viewer sees only their own calls). ``public`` routes need no credential.
docs/api.md shows ``markdown_table()``; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from .errors import ApiError
from .principals import ROLES, AuthError, Principal, Role

if TYPE_CHECKING:
    from .principals import ApiAuth

ALL: frozenset[Role] = frozenset(ROLES)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SIM_PREFIX = "/api/v1/sim/"


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role] = frozenset()
    scoped: frozenset[Role] = frozenset()  # allowed, but the handler limits them to what is theirs
    public: bool = False
    note: str = ""
    simulation_only: bool = False
    rate_limited: bool = field(default=True)
    # The route checks its own credential (media session tokens, signed URLs); the gate lets the
    # request through and sets request.state.principal if an API credential was sent.
    own_auth: bool = False


def allow(*roles: Role, scoped: tuple[Role, ...] = (), note: str = "") -> Rule:
    return Rule(roles=frozenset(roles) | frozenset(scoped), scoped=frozenset(scoped), note=note)


def public(note: str, *, simulation_only: bool = False, rate_limited: bool = True) -> Rule:
    return Rule(public=True, note=note, simulation_only=simulation_only, rate_limited=rate_limited)


def own_auth(note: str) -> Rule:
    return Rule(public=True, own_auth=True, note=note)


_SIM = "simulation only: drives the mock pins; never mounted on a real panel"
_MEDIA = "media credential checked by the route (call, live-view or installer token; docs/media.md)"
_OWN_CALLS = "viewer/resident: only calls of the unit (or the one call) their token is scoped to; guest: the call " \
             "they were invited into"

ACCESS: dict[tuple[str, str], Rule] = {
    # -- open to all ---------------------------------------------------------------------------
    ("GET", "/api/v1/health"): public("liveness for monitoring: ok or degraded, nothing else"),
    ("GET", "/api/v1/openapi.json"): public("this API's description"),
    ("GET", "/api/v1/docs"): public("Swagger UI for the description, from the panel's own copy (no CDN), under the "
                                    "pages' CSP"),
    ("POST", "/api/v1/auth/login"): public("installer password -> session token; failures slow down per address"),
    # -- credentials ---------------------------------------------------------------------------
    ("POST", "/api/v1/auth/logout"): allow(*ROLES, note="revokes the credential it is called with"),
    ("GET", "/api/v1/auth/me"): allow(*ROLES, note="what the credential grants"),
    ("POST", "/api/v1/auth/password"): allow("installer", note="needs the current password too"),
    ("POST", "/api/v1/auth/tokens"): allow("installer", "backend",
                                           note="installer issues viewer/resident/backend; backend issues "
                                                "viewer/resident"),
    ("GET", "/api/v1/auth/tokens"): allow("installer", "backend", note="backend sees no installer sessions"),
    ("DELETE", "/api/v1/auth/tokens/{token_id}"): allow("installer", "backend",
                                                        note="backend cannot revoke installer sessions"),
    ("POST", "/api/v1/auth/tokens/revoke"): allow("installer", "backend", note="all credentials of one subject"),
    ("POST", "/api/v1/auth/signin"): public("a sign-in link's single-use code -> a resident credential"),
    # -- the directory (panel/api/directory.py) ----------------------------------------------------
    ("GET", "/api/v1/directory"): allow("installer", "backend", note="names and sessions, never a secret"),
    ("POST", "/api/v1/directory/residents"): allow("installer", "backend", note="the answer has a sign-in link"),
    ("POST", "/api/v1/directory/residents/{resident_id}/link"): allow("installer", "backend"),
    ("PATCH", "/api/v1/directory/residents/{resident_id}"): allow("installer", "backend"),
    ("DELETE", "/api/v1/directory/residents/{resident_id}"): allow("installer", "backend",
                                                                    note="ends every session of the resident"),
    ("DELETE", "/api/v1/directory/residents/{resident_id}/sessions/{token_id}"): allow("installer", "backend"),
    # -- the panel -----------------------------------------------------------------------------
    ("GET", "/api/v1/health/details"): allow("installer", "backend", note="what is degraded: it names the webhook "
                                             "endpoint, backend and broker errors, calls"),
    ("GET", "/api/v1/system"): allow("installer", "backend"),
    ("GET", "/api/v1/state"): allow("installer", "backend", scoped=("viewer", "resident", "guest"),
                                    note="viewer/resident/guest: only the call (and door grant) of their unit or "
                                         "call; idle otherwise"),
    ("POST", "/api/v1/tamper/clear"): allow("installer"),
    ("GET", "/api/v1/config"): allow("installer", note="secrets are never included"),
    ("PATCH", "/api/v1/config"): allow("installer"),
    ("GET", "/api/v1/config/schema"): allow("installer", note="the forms' schema and the pins in use"),
    ("POST", "/api/v1/selftest"): allow("installer"),
    ("GET", "/api/v1/update"): allow("installer", "backend"),
    ("POST", "/api/v1/update"): allow("installer", note="the backend sends update over MQTT; force is the "
                                      "installer's alone"),
    ("GET", "/api/v1/enrol"): allow("installer", note="the enrolment code is a secret until redeemed"),
    ("POST", "/api/v1/enrol"): allow("installer", note="one attempt with the code shown"),
    ("POST", "/api/v1/enrol/again"): allow("installer", note="a new code; the identity in force stays until the "
                                           "new one is"),
    # -- the door ------------------------------------------------------------------------------
    ("POST", "/api/v1/door/open"): allow("installer", "backend", scoped=("resident",),
                                         note="resident: only during the call they answered"),
    ("POST", "/api/v1/door/relays/{relay_id}/hold"): allow("installer", "backend"),
    ("POST", "/api/v1/door/relays/{relay_id}/release"): allow("installer", "backend"),
    # -- doors without a call (panel/api/access.py) ---------------------------------------------
    ("GET", "/api/v1/access/credentials"): allow("installer", "backend", scoped=("resident",),
                                                 note="resident: only their own"),
    ("POST", "/api/v1/access/pin"): allow("installer", "backend", scoped=("resident",),
                                          note="resident: their own PIN or duress PIN"),
    ("POST", "/api/v1/access/codes"): allow("installer", "backend", scoped=("resident",),
                                            note="resident: codes of their own"),
    ("POST", "/api/v1/access/cards"): allow("installer", "backend"),
    ("POST", "/api/v1/access/cards/learn"): allow("installer", note="waits for the card at a reader"),
    ("DELETE", "/api/v1/access/credentials/{cred_id}"): allow("installer", "backend", scoped=("resident",),
                                                              note="resident: only their own"),
    # -- calls ---------------------------------------------------------------------------------
    ("GET", "/api/v1/calls"): allow("installer", "backend", scoped=("viewer", "resident", "guest"), note=_OWN_CALLS),
    ("GET", "/api/v1/calls/{guid}"): allow("installer", "backend", scoped=("viewer", "resident", "guest"),
                                           note=_OWN_CALLS),
    ("POST", "/api/v1/calls/answer"): allow("installer", "backend", scoped=("resident",),
                                            note="resident: calls in their scope"),
    ("POST", "/api/v1/calls/decline"): allow("installer", "backend", scoped=("resident",),
                                             note="resident: calls in their scope"),
    ("POST", "/api/v1/calls/end"): allow("installer", "backend", scoped=("resident",),
                                         note="resident: the call they answered"),
    ("POST", "/api/v1/calls/mute"): allow("installer", "backend", scoped=("resident",),
                                          note="resident: the call they answered"),
    # -- logs and events -----------------------------------------------------------------------
    ("GET", "/api/v1/logs/access"): allow("installer", "backend"),
    ("GET", "/api/v1/logs/events"): allow("installer", "backend", note="every event, in pages, newest first"),
    ("GET", "/api/v1/events"): allow("installer", "backend", scoped=("viewer", "resident", "guest"),
                                     note="viewer/resident/guest: call events of their scope only"),
    ("GET", "/api/v1/events/stream"): allow("installer", "backend", scoped=("viewer", "resident", "guest"),
                                            note="viewer/resident/guest: call events of their scope only"),
    # -- media (panel/media, panel/api/media_routes.py): media session credentials --------------
    ("POST", "/api/v1/media/whep"): own_auth(_MEDIA),
    ("DELETE", "/api/v1/media/whep/{session_id}"): own_auth(_MEDIA),
    ("PATCH", "/api/v1/media/whep/{session_id}"): public("trickle ICE is not supported: always 405"),
    ("OPTIONS", "/api/v1/media/whep"): public("CORS preflight", rate_limited=False),
    ("OPTIONS", "/api/v1/media/whep/{session_id}"): public("CORS preflight", rate_limited=False),
    ("GET", "/api/v1/media/sessions"): allow("installer"),
    ("GET", "/api/v1/media/player"): public("a static WHEP player page: it talks to its own origin only, with a "
                                            "credential typed into its form, under the pages' CSP"),
    # Pictures: the handler checks an API credential (installer, backend; viewer/resident for their
    # call or unit) or a media credential (Bearer, or the Basic password for web views).
    ("GET", "/api/v1/snapshot.jpg"): own_auth(_MEDIA),
    ("GET", "/api/v1/video.mjpeg"): own_auth(_MEDIA),
    ("GET", "/api/v1/calls/{guid}/snapshot.jpg"): own_auth(_MEDIA + "; or the signed URL of call.snapshot"),
    ("GET", "/api/v1/calls/{guid}/snapshots/{name}"): own_auth(_MEDIA + "; or the signed URL of call.snapshot"),
    ("GET", "/api/v1/calls/{guid}/snapshots"): own_auth(_MEDIA + "; or the signed URL of call.snapshot"),
    # -- call links, participants, invites (panel/api/links.py) ----------------------------------
    ("POST", "/api/v1/calls/{guid}/links"): allow("installer", "backend", scoped=("resident",),
                                                  note="resident: the call they answered"),
    ("GET", "/api/v1/calls/{guid}/links"): allow("installer", "backend", scoped=("resident",),
                                                 note="resident: the call they answered"),
    ("DELETE", "/api/v1/calls/{guid}/links/{link_id}"): allow("installer", "backend", scoped=("resident",),
                                                              note="resident: the call they answered"),
    ("GET", "/api/v1/calls/{guid}/participants"): allow("installer", "backend",
                                                        scoped=("viewer", "resident", "guest"), note=_OWN_CALLS),
    ("POST", "/api/v1/calls/{guid}/invite"): allow("installer", "backend", scoped=("resident",),
                                                   note="resident: the call they answered; mints a guest "
                                                        "credential"),
    ("POST", "/api/v1/link/subscribe"): own_auth("the call link itself as the bearer credential"),
    ("GET", "/api/v1/link/participants"): own_auth("the subscription from /api/v1/link/subscribe"),
    ("POST", "/api/v1/link/join"): own_auth("the subscription from /api/v1/link/subscribe"),
    ("POST", "/api/v1/link/leave"): own_auth("the subscription from /api/v1/link/subscribe"),
    # -- the installer's sound checks (panel/api/audiotest.py) ---------------------------------
    ("POST", "/api/v1/media/speaker/test"): allow("installer"),
    ("GET", "/api/v1/media/microphone/level"): allow("installer"),
    # -- pages (panel/api/pages.py): static files; they ask for a credential themselves ---------
    ("GET", "/"): public("index of the pages"),
    ("GET", "/resident"): public("the resident page"),
    ("GET", "/installer"): public("the installer page"),
    ("GET", "/link"): public("the call-link page (the link rides after #, never sent to the server)"),
    ("GET", "/web/{name}"): public("the pages' scripts and style sheet"),
    ("GET", "/web/vendor/swagger-ui/{name}"): public("Swagger UI's script and style sheet (vendored)"),
    # -- simulation ----------------------------------------------------------------------------
    ("POST", "/api/v1/sim/buttons/{button_id}/press"): public(_SIM, simulation_only=True),
    ("POST", "/api/v1/sim/buttons/{button_id}/release"): public(_SIM, simulation_only=True),
    ("POST", "/api/v1/sim/buttons/{button_id}/hold"): public(_SIM, simulation_only=True),
    ("POST", "/api/v1/sim/door/{action}"): public(_SIM, simulation_only=True),
    ("POST", "/api/v1/sim/exit"): public(_SIM, simulation_only=True),
    ("POST", "/api/v1/sim/tamper"): public(_SIM, simulation_only=True),
    ("POST", "/api/v1/sim/keypad"): public(_SIM, simulation_only=True),
    ("POST", "/api/v1/sim/camera/qr"): public(_SIM + "; shows a QR code on the synthetic camera",
                                              simulation_only=True),
    ("GET", "/api/v1/sim/pins"): public(_SIM, simulation_only=True),
    ("GET", "/api/v1/sim/state"): public(_SIM + "; the same body as /api/v1/state", simulation_only=True),
    ("POST", "/api/v1/sim/stall"): public(_SIM, simulation_only=True),
    ("POST", "/api/v1/sim/fault"): public(_SIM, simulation_only=True),
}


def rule_for(method: str, path: str) -> Rule | None:
    return ACCESS.get((method.upper(), path))


def _auth(request: Request) -> ApiAuth:
    auth = getattr(request.app.state, "auth", None)
    if auth is None:
        raise ApiError("not_ready", "the panel is not running")
    return auth  # type: ignore[no-any-return]


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def authorize(request: Request) -> None:
    """The app-wide gate every route passes through (FastAPI app dependency)."""
    route = request.scope.get("route")
    path = str(getattr(route, "path_format", None) or getattr(route, "path", "?"))
    rule = rule_for(request.method, path)
    if rule is None:
        raise ApiError("route_not_authorised", f"{request.method} {path} has no entry in panel/api/roles.py "
                       "ACCESS, so nobody may call it; add one")
    auth = _auth(request)
    if request.method in MUTATING and rule.rate_limited and not path.startswith(SIM_PREFIX):
        auth.mutations.check(client_address(request))
    try:
        principal = auth.authenticate(request.headers.get("authorization"))
    except AuthError as e:
        if rule.own_auth and e.code in ("token_revoked", "token_expired"):
            # A credential this panel issued and then revoked (or that ran out) is not some other kind of
            # credential (a media or link one) either: say what it is, as every other route does.
            raise
        if rule.public:  # a stale credential does not lock anyone out of a public route (login)
            principal = None
        else:
            raise
    request.state.principal = principal
    if rule.public:
        return
    if principal is None:
        raise AuthError("unauthenticated", "this route needs a credential: send Authorization: Bearer <token> "
                        "(installer: POST /api/v1/auth/login)")
    if principal.role not in rule.roles:
        allowed = ", ".join(r for r in ROLES if r in rule.roles)
        raise ApiError("forbidden", f"{request.method} {path} is for {allowed}; your {principal.kind} "
                       f"{principal.token_id} has role {principal.role}")


def caller(request: Request) -> Principal:
    """The authenticated principal of a non-public route (authorize ran first)."""
    p = getattr(request.state, "principal", None)
    if p is None:
        raise AuthError("unauthenticated", "this route needs a credential")
    return p  # type: ignore[no-any-return]


# -- documentation ---------------------------------------------------------------------------------

def markdown_table() -> str:
    head = "| Method | Path | public | " + " | ".join(ROLES) + " | Note |"
    lines = [head, "|---|---|---|" + "---|" * len(ROLES) + "---|"]
    for (method, path), rule in ACCESS.items():
        cells = ["media" if rule.own_auth else "yes" if rule.public else ""]
        for role in ROLES:
            if rule.own_auth:
                cells.append("")
            elif rule.public:
                cells.append("yes")
            elif role in rule.scoped:
                cells.append("own")
            elif role in rule.roles:
                cells.append("yes")
            else:
                cells.append("")
        lines.append(f"| {method} | `{path}` | " + " | ".join(cells) + f" | {rule.note} |")
    return "\n".join(lines) + "\n"


def openapi_security(rule: Rule) -> dict[str, Any]:
    """What each operation says about its access rule in the OpenAPI document."""
    out: dict[str, Any] = {"x-roles": ["media credential"] if rule.own_auth else sorted(rule.roles)
                           if not rule.public else ["public"]}
    if rule.scoped:
        out["x-scoped-roles"] = sorted(rule.scoped)
    out["security"] = [] if rule.public and not rule.own_auth else [{"bearer": []}]
    return out
