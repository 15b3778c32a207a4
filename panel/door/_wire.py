"""The fields of the door's requests, one definition for every channel.

``POST /api/v1/door/open`` takes ``OpenFields`` as its body and the MQTT ``open`` command is
``OpenFields`` plus the command envelope, so "1" for a number, ``true`` for a number, an unknown field
or a value out of range is refused the same way on both, naming the field, before the door is asked.
Strict: pydantic's lax mode would turn ``"1"`` and ``true`` into 1.0 and move the relay.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# The widest relay limit the configuration allows (RelayConfig.max_on_s); the door checks the relay's own.
MAX_DURATION_S = 43_200

RelayId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Actor = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
CallGuid = Annotated[str, Field(min_length=1, max_length=64)]
Seconds = Annotated[float, Field(ge=0.5, le=MAX_DURATION_S)]


class WireModel(BaseModel):
    # strict: "7" is not a number, true is not a number, "yes" not a boolean; extra: a typo is an error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OpenFields(WireModel):
    """Release the door (energise a relay)."""

    relay: RelayId | None = Field(None, description="which relay; default: the door's first relay (a resident: "
                                  "the first relay of the unit whose call they answered)")
    call_guid: CallGuid | None = Field(None, description="the answered call this release belongs to; default: the "
                                       "answered call in progress, if any")
    duration_s: Seconds | None = Field(None, description="installer/backend: seconds, 0.5 to the relay's max_on_s; "
                                       "default: its hold_s (bistable: max_on_s)")
    actor: Actor | None = Field(None, description="backend: on whose behalf (e.g. a resident id), logged as the "
                                "actor; default: the backend itself")


class HoldFields(WireModel):
    """Hold a relay energised (a bistable hold; a monostable one up to max_on_s)."""

    seconds: Seconds | None = Field(None, description="how long to hold the relay energised; default and limit: "
                                    "the relay's max_on_s")
    call_guid: CallGuid | None = None
