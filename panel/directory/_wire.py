"""The directory's request fields: one strict definition, shared by the HTTP body and the MQTT command."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# A name is shown on pages and in the call log: printable, no control characters, no leading space.
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f\s][^\x00-\x1f\x7f]*$",
        description='what the resident is called on the panel\'s pages, e.g. "Ana Silva"',
    ),
]
UnitId = Annotated[
    str, Field(min_length=1, max_length=64, description='a unit id from the button map (buttons[].unit.id), e.g. "303"')
]
ResidentId = Annotated[str, Field(pattern=r"^r-[0-9a-f]{12}$", description="the resident's id, e.g. r-3f2a9c01b7d4")]
TokenId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description="a session's credential id")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AddResidentFields(Strict):
    """Add a resident to a unit; the answer carries their first sign-in link."""

    unit_id: UnitId
    name: Name


class RenameResidentFields(Strict):
    name: Name


class SignInFields(Strict):
    """A sign-in code from a link's fragment (``/resident#signin=<code>``)."""

    code: str = Field(
        min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="the code after #signin= in the link"
    )
