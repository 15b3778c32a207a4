"""Media errors. Each has a stable ``code`` and a message saying what to do."""

from __future__ import annotations

from ..errors import PanelError


class MediaError(PanelError):
    code = "media_error"


class DeviceError(MediaError):
    """A capture or playback device failed; the capture retries it."""

    code = "media_device_error"


class SessionRefused(MediaError):
    """A session could not be created or changed; nothing was set up (the code's HTTP status is in the table)."""

    def __init__(self, code: str, message: str, retry_after_s: int | None = None) -> None:
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(message)


class TokenRefused(MediaError):
    """A session credential is missing, unknown, expired or revoked."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
