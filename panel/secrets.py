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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import SecretsConfig, format_validation_errors
from .errors import SecretsError

ENV_PREFIX = "PANEL_SECRET_"


class Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    installer_token: str | None = Field(None, min_length=16, description="bearer token for installer routes")
    webhook_secrets: list[str] = Field([], description="whsec_... secrets; the first signs, all verify")
    mqtt_password: str | None = None
    command_key: str | None = Field(None, min_length=16, description="key that signs backend commands")


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
            data[name] = value.split(",") if name == "webhook_secrets" else value
    try:
        return Secrets.model_validate(data)
    except ValidationError as e:
        # Never echo a secret's value back: name the key and the rule only.
        lines = [line.split(":")[0] + ": " + line.split("; ", 1)[-1] for line in format_validation_errors(e, Secrets)]
        raise SecretsError("; ".join(lines)) from None
