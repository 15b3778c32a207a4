"""The slot state and the launcher: which application slot a start runs, and the boot counter.

This module uses the standard library only and imports nothing from ``panel``: the package ships it
outside the slots as ``/usr/lib/panel/panel-launch`` (systemd's ``ExecStart``), so a broken release in
a slot can never break the code that decides to leave it.

Layout under the update root (``update.root``, ``/opt/panel`` in production)::

    slots/a, slots/b     two application slots, each a tree with ``panel/`` and ``release.json``
    current              a symlink to the slot in use (for people and tools; the state decides)
    update-state.json    the one source of truth, replaced atomically (temp, fsync, rename, fsync dir)

"factory" is the application the Debian package installed (its virtualenv); it is the slot in use
until the first update commits, and the one a package upgrade returns to.

A trial works like the Pi's tryboot: installing a release writes ``trial`` into the state (that write
is the switch); every start of the trial slot counts one boot *before* the release's code runs; a
start that finds the count over ``max_boots`` (the trial crashed or hung at start each time) goes back
to ``active`` by itself. The trial commits (``active`` becomes its slot) only after its health check.
The launcher cannot write to the store, so it queues the event that says so in the state's
``events``; the daemon journals them at its next start.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STATE_FILE = "update-state.json"
SLOTS = ("a", "b")
FACTORY = "factory"
DEFAULT_MAX_BOOTS = 2
SLOT_ENV = "PANEL_SLOT"
ROOT_ENV = "PANEL_UPDATE_ROOT"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def empty_state() -> dict[str, Any]:
    return {"active": FACTORY, "versions": {}, "trial": None, "events": [], "last": None, "pending": None}


def load_state(root: Path) -> dict[str, Any]:
    """The state; a missing or unreadable file is the factory state (a torn write cannot happen: see save)."""
    try:
        data = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return empty_state()
    if not isinstance(data, dict):
        return empty_state()
    state = empty_state()
    state.update(data)
    if state["active"] not in (FACTORY, *SLOTS):
        state["active"] = FACTORY
    return state


def save_state(root: Path, state: dict[str, Any]) -> None:
    """Atomically: a power cut leaves either the old state or the new one."""
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=root)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / STATE_FILE)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(root)


def slot_dir(root: Path, slot: str) -> Path | None:
    """The directory to put first on the import path for ``slot``; None for the factory application."""
    return None if slot == FACTORY else root / "slots" / slot


def inactive_slot(state: dict[str, Any]) -> str:
    """Where the next release goes: never the slot in use."""
    return "b" if state["active"] == "a" else "a"


def point_current(root: Path, slot: str) -> None:
    """Make ``current`` name ``slot`` (atomically: a new link renamed over the old)."""
    target = Path("slots") / slot if slot != FACTORY else Path(FACTORY)
    link = root / "current"
    try:
        if os.readlink(link) == str(target):
            return
    except OSError:
        pass
    tmp = root / ".current.tmp"
    try:
        os.unlink(tmp)
    except OSError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(root)


def choose_slot(root: Path, *, now: float | None = None) -> tuple[str, dict[str, Any]]:
    """Decide the slot this start runs, counting a trial's boot first; returns (slot, state as saved)."""
    state = load_state(root)
    trial = state.get("trial")
    slot = state["active"]
    if isinstance(trial, dict) and trial.get("slot") in SLOTS:
        boots = int(trial.get("boots", 0)) + 1
        max_boots = int(trial.get("max_boots", DEFAULT_MAX_BOOTS))
        complete = (root / "slots" / trial["slot"] / "release.json").is_file()
        if boots > max_boots or not complete:
            reason = (f"crashed or hung at start {boots - 1} times without passing its health check"
                      if complete else "the slot is incomplete")
            state["events"].append({"type": "update.rolled_back", "data": {
                "version": str(trial.get("version")), "slot": trial["slot"],
                "to_version": str(state["versions"].get(state["active"], "factory")), "to_slot": state["active"],
                "reason": reason, "boots": boots - 1}, "at": now if now is not None else time.time()})
            state["last"] = {"result": "rolled_back", "version": trial.get("version"), "reason": reason,
                             "at": now if now is not None else time.time()}
            state["trial"] = None
        else:
            trial["boots"] = boots
            slot = trial["slot"]
        save_state(root, state)  # the count is on disk before a line of the trial runs
    elif trial is not None:
        state["trial"] = None
        save_state(root, state)
    return slot, state


def pick(root: Path) -> str:
    """The slot to run. The launcher must never keep the panel from starting: when the state cannot be written
    (a read-only or full disk), the trial is not counted, so it is not run either; the active slot runs."""
    try:
        return choose_slot(root)[0]
    except OSError as e:
        slot = str(load_state(root)["active"])
        print(f"panel-launch: cannot update {root / STATE_FILE} ({e}); running slot {slot}", file=sys.stderr)
        return slot


def launch(root: Path, argv: list[str], *, python: str | None = None) -> None:
    """Choose the slot, then replace this process with ``python -m panel ARGV`` from that slot."""
    slot = pick(root)
    try:
        point_current(root, slot)
    except OSError:
        pass  # cosmetic: the state decides, the link only shows it
    env = dict(os.environ)
    env[SLOT_ENV] = slot
    env[ROOT_ENV] = str(root)
    directory = slot_dir(root, slot)
    if directory is not None:
        env["PYTHONPATH"] = str(directory) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    exe = python or sys.executable
    # -P: the working directory is not put first on the import path, so only the slot decides what runs.
    os.execve(exe, [exe, "-P", "-m", "panel", *argv], env)


def reset_to_factory(root: Path) -> None:
    """A package install or upgrade: run the package's own application next (slots and events are kept)."""
    state = load_state(root)
    state.update(active=FACTORY, trial=None, pending=None)
    save_state(root, state)


def main(argv: list[str] | None = None) -> int:
    """``panel-launch [--root DIR] [--python EXE] [--] PANEL-ARGS...`` or ``panel-launch --root DIR --reset``"""
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(os.environ.get(ROOT_ENV, "/opt/panel"))
    python: str | None = None
    if "--reset" in args:
        args.remove("--reset")
        if args[:1] == ["--root"] and len(args) >= 2:
            root = Path(args[1])
        reset_to_factory(root)
        return 0
    while args and args[0] in ("--root", "--python"):
        if len(args) < 2:
            print(f"panel-launch: {args[0]} needs a value", file=sys.stderr)
            return 2
        if args[0] == "--root":
            root = Path(args[1])
        else:
            python = args[1]
        args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    launch(root, args, python=python)
    return 0  # not reached: execve replaced the process


if __name__ == "__main__":
    sys.exit(main())
