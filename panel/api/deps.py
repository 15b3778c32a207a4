"""Request dependencies: the running panel and the caller's credentials."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request

from .errors import ApiError

if TYPE_CHECKING:
    from ..daemon import Panel


def get_panel(request: Request) -> "Panel":
    return request.app.state.panel  # type: ignore[no-any-return]


PanelDep = Annotated["Panel", Depends(get_panel)]


def require_installer(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    panel = get_panel(request)
    token = panel.secrets.installer_token
    if token is None:
        raise ApiError(403, "no_installer_credential",
                       "no installer credential is set; put installer_token in the secrets file")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "unauthenticated", "send Authorization: Bearer <installer token>",
                       headers={"WWW-Authenticate": 'Bearer realm="panel"'})
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "unauthenticated", "the installer token is wrong",
                       headers={"WWW-Authenticate": 'Bearer realm="panel", error="invalid_token"'})
    return "installer"


Installer = Annotated[str, Depends(require_installer)]
