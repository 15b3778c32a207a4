"""The ``panel`` command: run the daemon, check a config, self-test the wiring, drive a simulation."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, PanelError

EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_UNAVAILABLE = 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="panel", description="Door-station panel firmware")
    p.add_argument("--version", action="version", version=f"panel {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--simulate", action="store_true", help="mock GPIO pins and synthetic media; no Pi needed")

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", help="validate a config file")
    check.add_argument("path", type=Path)

    st = sub.add_parser("selftest", help="exercise the wired hardware and print a pass/fail table")
    st.add_argument("--config", required=True, type=Path)
    st.add_argument("--simulate", action="store_true")
    st.add_argument("--yes", action="store_true", help="pulse relays without asking")

    safe = sub.add_parser("safe-state", help="drive every relay off (systemd ExecStopPost)")
    safe.add_argument("--config", required=True, type=Path)

    tamper = sub.add_parser("tamper", help="tamper block")
    tamper.add_argument("action", choices=["clear"])
    _target_args(tamper)

    sim = sub.add_parser("sim", help="drive a running simulated panel")
    _target_args(sim)
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    for verb in ("press", "release"):
        s = sim_sub.add_parser(verb, help=f"{verb} a call button")
        s.add_argument("button")
    hold = sim_sub.add_parser("hold", help="hold a call button")
    hold.add_argument("button")
    hold.add_argument("--seconds", type=float, default=2.0)
    door = sim_sub.add_parser("door", help="open or close the door contact")
    door.add_argument("action", choices=["open", "close"])
    sim_sub.add_parser("exit", help="press the exit button")
    tam = sim_sub.add_parser("tamper", help="trip (on) or rest (off) the tamper switch")
    tam.add_argument("state", nargs="?", choices=["on", "off"], default="on")
    sim_sub.add_parser("state", help="print the panel's state and pin levels")
    return p


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="read the API address (and token) from this config")
    p.add_argument("--url", default=os.environ.get("PANEL_URL"), help="the panel's API, e.g. http://127.0.0.1:8080")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "config":
            return _config_check(args.path)
        if args.command == "selftest":
            return _selftest(args)
        if args.command == "safe-state":
            return _safe_state(args)
        if args.command == "sim":
            return _sim(args)
        if args.command == "tamper":
            return _tamper(args)
    except ConfigError as e:
        print(f"config {e.source or ''}: {len(e.problems)} problem(s):", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    except PanelError as e:
        print(f"panel: {e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .daemon import serve
    from .logs import setup_logging
    from .secrets import load_secrets

    cfg = load_config(args.config)
    setup_logging(cfg.log.level, cfg.log.format)
    secrets = load_secrets(cfg.secrets)
    try:
        return asyncio.run(serve(cfg, secrets, args.simulate))
    except OSError as e:
        print(f"panel: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _config_check(path: Path) -> int:
    from .config import load_config

    cfg = load_config(path)
    print(f"{path}: OK (panel {cfg.panel.id}, {len(cfg.buttons)} button(s), {len(cfg.door.relays)} relay(s))")
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from .config import load_config
    from .selftest import format_table, run_selftest

    cfg = load_config(args.config)

    def confirm(question: str) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            return False
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

    rows = run_selftest(cfg, simulate=args.simulate, confirm=confirm)
    print(format_table(rows))
    return 1 if any(r.result == "FAIL" for r in rows) else 0


def _safe_state(args: argparse.Namespace) -> int:
    from gpiozero import OutputDevice

    from .config import load_config
    from .gpio import make_pin_factory

    cfg = load_config(args.config)
    factory = make_pin_factory(cfg.gpio.pin_factory)
    for r in cfg.door.relays:
        dev = OutputDevice(f"GPIO{r.pin}", active_high=r.active == "high", initial_value=False, pin_factory=factory)
        dev.off()
        dev.close()
        print(f"relay {r.id} (GPIO{r.pin}) off")
    return 0


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if args.config is not None:
        from .config import load_config

        cfg = load_config(args.config)
        host = cfg.api.host if cfg.api.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{cfg.api.port}"
    return "http://127.0.0.1:8080"


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None) -> int:
    import httpx

    url = _base_url(args) + path
    try:
        r = httpx.request(method, url, json=body, headers=headers, timeout=700)
    except httpx.HTTPError as e:
        print(f"panel: cannot reach the panel at {url} ({e}); is `panel run --simulate` running? "
              "Pass --url or --config to point at it", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        payload = r.json()
    except ValueError:
        payload = {"code": "bad_response", "message": r.text[:200]}
    if r.status_code >= 400:
        print(f"panel: {payload.get('code')}: {payload.get('message')}", file=sys.stderr)
        return 1
    print(json.dumps(payload, indent=2))
    return 0


def _sim(args: argparse.Namespace) -> int:
    c = args.sim_command
    if c in ("press", "release"):
        return _call(args, "POST", f"/api/v1/sim/buttons/{args.button}/{c}")
    if c == "hold":
        return _call(args, "POST", f"/api/v1/sim/buttons/{args.button}/hold", {"seconds": args.seconds})
    if c == "door":
        return _call(args, "POST", f"/api/v1/sim/door/{args.action}")
    if c == "exit":
        return _call(args, "POST", "/api/v1/sim/exit")
    if c == "tamper":
        return _call(args, "POST", "/api/v1/sim/tamper", {"active": args.state == "on"})
    if c == "state":
        return _call(args, "GET", "/api/v1/state")
    return EXIT_USAGE


def _tamper(args: argparse.Namespace) -> int:
    from .config import load_config
    from .secrets import load_secrets

    token = os.environ.get("PANEL_SECRET_INSTALLER_TOKEN")
    if args.config is not None:
        token = load_secrets(load_config(args.config).secrets).installer_token or token
    if not token:
        print("panel: no installer token; pass --config (its secrets file) or set PANEL_SECRET_INSTALLER_TOKEN",
              file=sys.stderr)
        return EXIT_USAGE
    return _call(args, "POST", "/api/v1/tamper/clear", headers={"Authorization": f"Bearer {token}"})
