"""Doors without a call (docs/access.md): resident PINs and duress PINs, temporary codes (typed or shown
as a QR code at the camera), cards on an OSDP reader; each a way to ask the door for a release.
"""


from ._codes import QR_PREFIX, Credential, Credentials, Kind, normalise_card
from ._feedback import AccessFeedback
from ._keypad import KeyEntry, MatrixKeypad, MockMatrix
from ._osdp import OsdpReader
from ._qr import QrScanner, qr_picture, read_qr
from ._service import AccessService, Outcome

__all__ = [
    "QR_PREFIX",
    "AccessFeedback",
    "AccessService",
    "Credential",
    "Credentials",
    "KeyEntry",
    "Kind",
    "MatrixKeypad",
    "MockMatrix",
    "OsdpReader",
    "Outcome",
    "QrScanner",
    "normalise_card",
    "qr_picture",
    "read_qr",
]
