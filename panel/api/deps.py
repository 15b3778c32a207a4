"""Request dependencies: the running panel and the caller's credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from .principals import Principal
from .roles import caller

if TYPE_CHECKING:
    from ..daemon import Panel as Panel  # re-exported for the routes' type hints


def get_panel(request: Request) -> Panel:
    return request.app.state.panel  # type: ignore[no-any-return]


PanelDep = Annotated["Panel", Depends(get_panel)]
# The authenticated caller; which roles reach a route is decided by panel/api/roles.py ACCESS.
Caller = Annotated[Principal, Depends(caller)]
# Kept for routes written before the role table; the table, not this name, decides who gets in.
Installer = Caller
