"""The Standard Webhooks secret format (``whsec_<base64>``): one definition, shared by the secrets file
and the webhook signer."""

from __future__ import annotations

import base64
import binascii

from ..errors import SecretsError

SECRET_PREFIX = "whsec_"
# The spec asks for 24 to 64 random bytes; fewer is guessable, more is a sign of a pasted wrong value.
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64


class WebhookSecretError(SecretsError):
    """A webhook secret is not in the Standard Webhooks ``whsec_<base64>`` form."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside ``whsec_<base64>``; raises ``WebhookSecretError`` saying what is wrong.

    The message never contains the secret itself (it ends up in logs and tickets).
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise WebhookSecretError(
            'expected "whsec_" followed by base64 (the Standard Webhooks form); copy the secret exactly as '
            "the backend shows it, or make one with: python -c \"import base64,os; "
            "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\"")
    raw = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSecretError('the part after "whsec_" is not valid base64 (A-Z, a-z, 0-9, +, / and = only)') from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise WebhookSecretError(f'the part after "whsec_" decodes to {len(key)} bytes; expected '
                                 f"{SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} random bytes")
    return key
