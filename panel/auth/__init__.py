"""Credentials and secrets: the installer credential, the secrets file, the webhook secret format.
"""


from ._cli_credentials import add_parsers as add_credential_parsers
from ._cli_credentials import credentials as credentials_command
from ._cli_credentials import factory_reset as factory_reset_command
from ._credentials import (
    MAX_LEN,
    MIN_LEN,
    CredentialError,
    CredentialInfo,
    InstallerCredential,
)
from ._published import PUBLISHED, published_secrets, refuse_published_secrets
from ._secrets import ENV_PREFIX, Secrets, load_secrets
from ._whsec import SECRET_PREFIX, WebhookSecretError, decode_secret

__all__ = [
    "CredentialError",
    "CredentialInfo",
    "ENV_PREFIX",
    "InstallerCredential",
    "MAX_LEN",
    "MIN_LEN",
    "PUBLISHED",
    "SECRET_PREFIX",
    "Secrets",
    "WebhookSecretError",
    "add_credential_parsers",
    "credentials_command",
    "decode_secret",
    "factory_reset_command",
    "load_secrets",
    "published_secrets",
    "refuse_published_secrets",
]
