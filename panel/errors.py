"""Exception types. Each message tells the installer (or the API client) what to do next."""

from __future__ import annotations


class PanelError(Exception):
    """Base class for every error the panel raises on purpose."""

    code = "panel_error"


class ConfigError(PanelError):
    """The configuration is unusable. ``problems`` holds one line per bad key."""

    code = "config_invalid"

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


class SecretsError(PanelError):
    """The secrets file is missing, unreadable, or readable by others."""

    code = "secrets_invalid"


class HardwareError(PanelError):
    """A GPIO device could not be set up (pin busy, no GPIO chip, wrong pin name)."""

    code = "hardware_error"


class UnlockRefused(PanelError):
    """An unlock request was refused; nothing moved. ``code`` says why, stably."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class CallError(PanelError):
    """A call command could not be carried out; nothing changed. ``code`` says why, stably:
    no_call, already_answered, call_over, unknown_call, busy, not_answered, invalid_actor."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class StoreError(PanelError):
    """The durable store failed (disk full, corrupt database, read-only file system)."""

    code = "store_error"


class AccessError(PanelError):
    """A credential could not be created, changed or revoked; nothing changed. ``code`` says why, stably:
    code_too_short, code_not_digits, bad_window, bad_uses, unknown_door, code_unavailable, card_enrolled,
    unknown_credential, not_your_credential, not_configured."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
