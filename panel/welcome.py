"""The demo's welcome (``panel run --simulate --demo``): the pages, and sign-ins ready to use.

Printed once the panel runs, on standard output (the terminal of ``scripts/demo``), never to the log:
the installer password while it is still the generated one, and a single-use sign-in link (with its QR
code) for a resident of the first unit, made through the same directory service the installer page
uses. Only a simulated panel prints it: a real panel never writes a sign-in to a terminal or a journal.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, TextIO

from .auth import InstallerCredential
from .directory import SIGNIN_TTL_S, terminal_text

if TYPE_CHECKING:
    from .daemon import Panel

DEMO_RESIDENT = "Demo resident"


def base_url(panel: Panel) -> str:
    assert panel.api is not None
    host = panel.cfg.api.host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    host = f"[{host}]" if ":" in host else host
    return f"{panel.api.scheme}://{host}:{panel.api.bound_port}"


async def welcome(panel: Panel, out: TextIO = sys.stdout) -> None:
    base = base_url(panel)
    unit = panel.directory.units()[0]
    resident = await panel.directory.find(unit.id, DEMO_RESIDENT)
    if resident is None:
        link = await panel.directory.add(unit.id, DEMO_RESIDENT, by="demo")
    else:
        link = await panel.directory.new_link(resident.id, by="demo")
    url = base + link.path
    password = await asyncio.to_thread(InstallerCredential(panel.cfg.storage.dir).initial_password)
    config = str(panel.config_path or "config/demo.toml")
    # The command as it was started (scripts/demo: .venv/bin/panel), so the lines below can be pasted.
    command = sys.argv[0] if os.path.basename(sys.argv[0]) == "panel" else "panel"
    pw_line = (
        f"Installer password: {password}"
        if password
        else f"Installer password: changed since the first start (`{command} credentials reset --config {config}` "
        "makes a new one)"
    )
    button = unit.buttons[0]
    print(
        f"""
  The panel runs in simulation: mock GPIO pins, a synthetic camera and microphone, a recording speaker.

  Pages
    Resident    {base}/resident
    Installer   {base}/installer
    API docs    {base}/api/v1/docs

  Sign in
    {pw_line}
    A resident of unit {unit.label}: open this link (it works once, for {int(SIGNIN_TTL_S // 60)} minutes; a new one at \
every start)
      {url}
{_indent(terminal_text(url))}
  Then ring: press "{button}" on the installer page (Simulation), or in another terminal
      {command} sim press {button}
  The resident page rings: Answer shows the entrance and talks both ways; Open door releases the relay.
  Stop with Ctrl-C.
""",
        file=out,
        flush=True,
    )


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").split("\n"))
