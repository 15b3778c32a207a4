"""Enrolment without a shared secret in the image (docs/enrolment.md): the code a fresh panel shows, its
own key and the EST client that turns it into a client certificate, the identity on disk, and its renewal.
"""

from ._cli import enrol_command
from ._code import ALPHABET, CODE_CHARS, URI_SCHEME, EnrolCode, key_fingerprint, normalise
from ._est import REFUSALS, BrokerMsg, EnrolError, PanelConfigMsg, WebhooksMsg, build_csr, parse_certs
from ._identity import Identity, backend_settings, common_name, load_identity
from ._service import ENROLMENT_DIR, EnrolService

__all__ = [
    "ALPHABET",
    "BrokerMsg",
    "CODE_CHARS",
    "ENROLMENT_DIR",
    "EnrolCode",
    "EnrolError",
    "EnrolService",
    "Identity",
    "PanelConfigMsg",
    "REFUSALS",
    "URI_SCHEME",
    "WebhooksMsg",
    "backend_settings",
    "build_csr",
    "common_name",
    "enrol_command",
    "key_fingerprint",
    "load_identity",
    "normalise",
    "parse_certs",
]
