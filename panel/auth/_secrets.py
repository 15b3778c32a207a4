"""Secrets: a separate TOML file readable only by the service user, or the environment.

Nothing secret lives in the main config (which installers copy around and paste into tickets), and
there are no defaults: a secret that is not set leaves its feature off or refuses to start it.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from ..errors import SecretsError
from ..platform import SecretsConfig, format_validation_errors
from ._whsec import WebhookSecretError, decode_secret

ENV_PREFIX = "PANEL_SECRET_"


def _webhook_secret(value: str) -> str:
    value = value.strip()
    try:
        decode_secret(value)
    except WebhookSecretError as e:
        raise PydanticCustomError("whsec", str(e)) from None
    return value


class Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    installer_token: str | None = Field(None, min_length=16, description="bearer token for installer routes")
    webhook_secrets: list[Annotated[str, AfterValidator(_webhook_secret)]] = Field(
        [], description="whsec_<base64> secrets (Standard Webhooks); every delivery is signed with each, so "
        "the backend can rotate: add the new secret, switch the backend, then remove the old one")
    mqtt_password: str | None = None
    command_key: str | None = Field(None, min_length=16, description="key that signs backend commands")
    whip_tokens: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")],
                      Annotated[str, Field(min_length=8, max_length=4096)]] = Field(
        {}, description="Bearer tokens for WHIP publishing, a table: target id (media.publish.targets[].id) = token; "
        "in the environment: id=token,id=token")
    osdp_scbk: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$", description="the OSDP secure channel base "
                                  "key shared with the card reader (32 hex digits); required with "
                                  "access.osdp.secure_channel")


def check_file_private(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretsError(f"secrets file {path} does not exist; create it (see docs/configuration.md) "
                           f"with: install -m 600 /dev/null {path}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(f"secrets file {path} has mode {stat.S_IMODE(st.st_mode):04o}, so other users can "
                           f"read it; run: chmod 600 {path}")
    if st.st_uid != os.geteuid():
        raise SecretsError(f"secrets file {path} is owned by uid {st.st_uid}, not by the service user "
                           f"(uid {os.geteuid()}); run: chown $(id -un) {path}")


def _from_env(name: str, value: str) -> object:
    if name == "webhook_secrets":
        return value.split(",")
    if name == "whip_tokens":  # target=token,target=token
        return dict(item.partition("=")[::2] for item in value.split(",") if item)
    return value


def load_secrets(cfg: SecretsConfig, env: Mapping[str, str] = os.environ) -> Secrets:
    data: dict[str, object] = {}
    if cfg.file is not None:
        check_file_private(cfg.file)
        try:
            data = tomllib.loads(cfg.file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise SecretsError(f"{cfg.file}: TOML syntax error: {e}") from None
    for name in Secrets.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value:
            data[name] = _from_env(name, value)
    try:
        return Secrets.model_validate(data)
    except ValidationError as e:
        # Never echo a secret's value back: name the key and the rule only.
        raise SecretsError("; ".join(format_validation_errors(e, Secrets, redact=True))) from None
