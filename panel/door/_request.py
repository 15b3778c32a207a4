"""Who asks the door for a release, and what they ask for: the one shape every channel translates to."""

from __future__ import annotations

from dataclasses import dataclass

from ..events import Method

# The roles the door knows. Anything else (a guest invited into a call, a viewer) is refused
# ``not_allowed_for_role``: a new kind of credential opens nothing until the door is taught its rule.
ROLES: tuple[str, ...] = ("resident", "installer", "backend", "homeassistant", "exit_button", "access")
# ``access``: the access service (panel/access), having checked a PIN, code, QR code or card at the door;
# it asks only over those methods, for the credential's owner.
ACCESS_METHODS: tuple[str, ...] = ("pin", "code", "qr", "card")


@dataclass(frozen=True)
class Requester:
    """Who asks. ``actor`` is how the access log names them; ``subject`` is who they are (a resident
    is compared with the call's ``answered_by``); ``unit_id`` and ``call_guid`` are the credential's
    scope, when it has one."""

    role: str
    actor: str
    subject: str | None = None
    unit_id: str | None = None
    call_guid: str | None = None

    @classmethod
    def exit_button(cls) -> Requester:
        return cls("exit_button", "exit_button")

    @classmethod
    def homeassistant(cls) -> Requester:
        return cls("homeassistant", "homeassistant")

    @classmethod
    def access(cls, owner: str) -> Requester:
        """A credential presented at the door, checked by the access service; the owner is the actor."""
        return cls("access", owner, subject=owner)

    @classmethod
    def backend(cls) -> Requester:
        """The backend over MQTT: the broker's ACL and the command's signature say who it is."""
        return cls("backend", "backend")


@dataclass(frozen=True)
class UnlockRequest:
    """A release asked for over ``method``. ``relay`` None: the door's first (a resident: their
    unit's first); ``call_guid`` None: the answered call in progress, if any; ``duration_s`` None:
    the relay's own time (``hold``: its max_on_s); ``on_behalf_of``: the backend names the actor."""

    requester: Requester
    method: Method
    relay: str | None = None
    call_guid: str | None = None
    duration_s: float | None = None
    on_behalf_of: str | None = None
    hold: bool = False
