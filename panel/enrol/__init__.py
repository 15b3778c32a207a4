"""Enrolment without a shared secret in the image (docs/enrolment.md): the code a fresh panel shows, its
own key and the EST client that turns it into a client certificate, the identity on disk, and its renewal.
"""

from ._cli import enrol_command
from ._code import ALPHABET, EnrolCode, key_fingerprint, normalise
from ._est import EnrolError, PanelConfigMsg
from ._identity import Identity, backend_settings, load_identity
from ._service import ENROLMENT_DIR, EnrolService

__all__ = [
    "ALPHABET",
    "ENROLMENT_DIR",
    "EnrolCode",
    "EnrolError",
    "EnrolService",
    "Identity",
    "PanelConfigMsg",
    "backend_settings",
    "enrol_command",
    "key_fingerprint",
    "load_identity",
    "normalise",
]
