"""Secrets that anyone can read: the examples in this project's README, docs and config files, and the
well-known defaults of the protocols the panel speaks. A panel outside simulation refuses to start with
any of them, naming the key, because a copied example is a published key to the door.

tests/test_safe_defaults.py scans docs/, config/, README.md and the scripts for secret-looking literals
and fails when one is missing here, so a new example in the docs cannot slip through.
"""

from __future__ import annotations

from ..errors import SecretsError
from ._secrets import Secrets
from ._whsec import WebhookSecretError, decode_secret

# value -> where it is published
PUBLISHED: dict[str, str] = {
    "demo-token-0123456789": "README.md (the demo's installer token)",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw": "docs/webhooks.md (the example webhook secret)",
    "example-command-key-0123456789": "docs/mqtt.md (the worked signature example)",
    "303132333435363738393a3b3c3d3e3f": "the OSDP standard (SCBK-D, the install-mode default key)",
}


def _key(value: str) -> str:
    """What two spellings of one secret have in common: the HMAC key of a whsec_ value, hex in lower case."""
    value = value.strip()
    try:
        return decode_secret(value).hex()
    except WebhookSecretError:
        return value.lower() if all(c in "0123456789abcdefABCDEF" for c in value) else value


_PUBLISHED_KEYS = {_key(value): where for value, where in PUBLISHED.items()}


def published_secrets(secrets: Secrets) -> list[str]:
    """One problem per secret that is a published one: the key and where it is published, never the value."""
    found: list[str] = []
    for name in Secrets.model_fields:
        value = getattr(secrets, name)
        values = value if isinstance(value, list) else [value]
        for i, one in enumerate(values):
            if isinstance(one, str) and (where := _PUBLISHED_KEYS.get(_key(one))) is not None:
                key = f"{name}[{i}]" if isinstance(value, list) else name
                found.append(f"{key} is the example published in {where}")
    return found


def refuse_published_secrets(secrets: Secrets) -> None:
    """Raise ``SecretsError`` naming every key whose secret is published (the panel then does not start)."""
    found = published_secrets(secrets)
    if found:
        raise SecretsError(
            "; ".join(found) + ": anyone can read it, so a panel outside simulation refuses it. "
            "Make a secret of your own (docs/configuration.md, Secrets file), e.g. with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
