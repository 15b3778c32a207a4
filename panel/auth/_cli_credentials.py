"""``panel credentials`` and ``panel factory-reset``: the installer credential and erasing the panel.

Both work on the files under ``storage.dir`` directly (run them as the service user, on the panel):
- ``credentials show-initial`` prints the generated installer password until it is first used;
- ``credentials reset`` makes a new generated password (for an installer who lost theirs);
- ``credentials set`` takes a password from the terminal (twice) or stdin, never from argv;
- ``factory-reset --yes`` erases logs, snapshots, keys and credentials (see panel/platform/_reset.py).
A change takes effect on a running panel at once: sessions opened with the old password end.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 4


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cred = sub.add_parser("credentials", help="the installer credential (show the initial one, reset, set)")
    cred_sub = cred.add_subparsers(dest="credentials_command", required=True)
    show = cred_sub.add_parser("show-initial", help="print the generated installer password (until first use)")
    show.add_argument("--config", required=True, type=Path)
    reset = cred_sub.add_parser("reset", help="replace the installer password with a new generated one")
    reset.add_argument("--config", required=True, type=Path)
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    set_ = cred_sub.add_parser("set", help="set the installer password (asked on the terminal, or read from stdin)")
    set_.add_argument("--config", required=True, type=Path)
    set_.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    fr = sub.add_parser("factory-reset", help="erase logs, snapshots, keys and credentials (the panel must be "
                                              "stopped)")
    fr.add_argument("--config", required=True, type=Path)
    fr.add_argument("--yes", action="store_true", help="confirm without asking (required without a terminal)")


def _storage(config: Path) -> Path:
    from ..platform import load_config

    return load_config(config).storage.dir


def _confirm(question: str, expected: str = "yes") -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} ").strip() == expected


def credentials(args: argparse.Namespace) -> int:
    from ._credentials import CredentialError, InstallerCredential

    cred = InstallerCredential(_storage(args.config))
    c = args.credentials_command
    if c == "show-initial":
        password = cred.initial_password()
        if password is None:
            print("panel: there is no initial password to show: it was used or changed already (or the panel never "
                  "started). Use `panel credentials reset` to make a new one", file=sys.stderr)
            return 1
        print(password)
        return 0
    if c == "reset":
        if not args.yes and not _confirm("Replace the installer password with a new one? Type yes:"):
            print("panel: not confirmed; nothing changed (pass --yes)", file=sys.stderr)
            return EXIT_USAGE
        password = cred.reset()
        print(f"new installer password: {password}\n(shown by `panel credentials show-initial` until it is first "
              "used; sessions opened with the old password have ended)")
        return 0
    if c == "set":
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            if not sys.stdin.isatty():
                print("panel: no terminal to ask on; pass --password-stdin and pipe the password in", file=sys.stderr)
                return EXIT_USAGE
            password = getpass.getpass("new installer password: ")
            if getpass.getpass("again: ") != password:
                print("panel: the two entries differ; nothing changed", file=sys.stderr)
                return 1
        try:
            info = cred.set(password)
        except CredentialError as e:
            print(f"panel: {e.code}: {e}; nothing changed", file=sys.stderr)
            return 1
        print(f"installer password set (generation {info.generation}); sessions opened with the old one have ended")
        return 0
    return EXIT_USAGE


def factory_reset(args: argparse.Namespace) -> int:
    from ..platform import factory_reset as erase
    from ..platform import load_config, undelivered

    cfg = load_config(args.config)
    storage = cfg.storage.dir
    pending = undelivered(storage)
    warn = f" {pending} event(s) not yet delivered to the backend will be lost." if pending else ""
    if not args.yes and not _confirm(f"Erase logs, snapshots, keys and credentials of panel {cfg.panel.id} in "
                                     f"{storage}?{warn} Type the panel id ({cfg.panel.id}) to confirm:",
                                     cfg.panel.id):
        print("panel: not confirmed; nothing was erased (pass --yes to confirm without a terminal)", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = erase(storage)
    except OSError as e:
        print(f"panel: {e}; nothing was erased", file=sys.stderr)
        return EXIT_UNAVAILABLE
    for path in report.removed:
        print(f"erased {path}")
    if report.undelivered_events:
        print(f"{report.undelivered_events} undelivered event(s) were erased with the store")
    print("factory reset done: the next start makes a new installer password and HTTPS certificate; the config and "
          "secrets files were kept")
    return 0
