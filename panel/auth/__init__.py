"""Credentials and secrets: the installer credential, the secrets file, the webhook secret format.
"""


from ._credentials import (
    MAX_LEN,
    MIN_LEN,
    CredentialError,
    CredentialInfo,
    InstallerCredential,
)
from ._secrets import ENV_PREFIX, Secrets, load_secrets
from ._whsec import SECRET_PREFIX, WebhookSecretError, decode_secret

__all__ = [
    "CredentialError",
    "CredentialInfo",
    "ENV_PREFIX",
    "InstallerCredential",
    "MAX_LEN",
    "MIN_LEN",
    "SECRET_PREFIX",
    "Secrets",
    "WebhookSecretError",
    "decode_secret",
    "load_secrets",
]
