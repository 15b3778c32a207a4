"""The directory: units from the button map, residents kept on the panel, single-use sign-in links."""

from ._qr import svg_data_uri, terminal_text
from ._service import (
    SESSION_TTL_S,
    SIGNIN_PATH,
    SIGNIN_TTL_S,
    Credentials,
    Directory,
    Issued,
    Resident,
    Session,
    SignInLink,
    Unit,
)
from ._wire import AddResidentFields, Name, RenameResidentFields, ResidentId, SignInFields, TokenId, UnitId

__all__ = [
    "AddResidentFields",
    "Credentials",
    "Directory",
    "Issued",
    "Name",
    "RenameResidentFields",
    "Resident",
    "ResidentId",
    "SESSION_TTL_S",
    "SIGNIN_PATH",
    "SIGNIN_TTL_S",
    "Session",
    "SignInFields",
    "SignInLink",
    "TokenId",
    "Unit",
    "UnitId",
    "svg_data_uri",
    "terminal_text",
]
