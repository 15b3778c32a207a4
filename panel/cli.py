"""The ``panel`` command: run the daemon, check a config, self-test the wiring, drive a simulation."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .auth import add_credential_parsers, credentials_command, factory_reset_command
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
    run.add_argument("--demo", action="store_true", help="with --simulate: print the pages, the installer password "
                     "and a resident's sign-in link with its QR code (scripts/demo)")

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
    # --url/--config work before or after the verb: `panel sim press b303 --url ...` too.
    for verb in ("press", "release"):
        s = sim_sub.add_parser(verb, help=f"{verb} a call button")
        s.add_argument("button")
        _target_args(s, nested=True)
    hold = sim_sub.add_parser("hold", help="hold a call button")
    hold.add_argument("button")
    hold.add_argument("--seconds", type=float, default=2.0)
    _target_args(hold, nested=True)
    door = sim_sub.add_parser("door", help="open or close the door contact")
    door.add_argument("action", choices=["open", "close"])
    _target_args(door, nested=True)
    _target_args(sim_sub.add_parser("exit", help="press the exit button"), nested=True)
    tam = sim_sub.add_parser("tamper", help="trip (on) or rest (off) the tamper switch")
    tam.add_argument("state", nargs="?", choices=["on", "off"], default="on")
    _target_args(tam, nested=True)
    _target_args(sim_sub.add_parser("state", help="print the panel's state"), nested=True)
    kp = sim_sub.add_parser("keypad", help="type on the simulated keypad, e.g. panel sim keypad \"1234#\"")
    kp.add_argument("keys", help="digits, * (clear) and # (submit), pressed in turn")
    _target_args(kp, nested=True)
    qr = sim_sub.add_parser("qr", help="hold a QR code up to the synthetic camera (no payload: take it away)")
    qr.add_argument("payload", nargs="?", help="what the QR carries, e.g. panel-access:480913")
    _target_args(qr, nested=True)
    add_credential_parsers(sub)
    # Declared here, not by panel.enrol: importing it (httpx, aiomqtt) would slow every command (safe-state too)
    enrol = sub.add_parser("enrol", help="enrolment to the backend (docs/enrolment.md)")
    enrol_sub = enrol.add_subparsers(dest="enrol_command", required=True)
    show = enrol_sub.add_parser("show", help="print the enrolment code (QR and short code), or the identity in force")
    show.add_argument("--config", required=True, type=Path)
    show.add_argument("--no-qr", action="store_true", help="the short code and the QR payload only")
    return p


def _target_args(p: argparse.ArgumentParser, nested: bool = False) -> None:
    # Nested copies default to SUPPRESS so they do not overwrite a value given before the verb.
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS if nested else None,
                   help="read the API address (and token) from this config")
    p.add_argument("--url", default=argparse.SUPPRESS if nested else os.environ.get("PANEL_URL"),
                   help="the panel's API, e.g. http://127.0.0.1:8080")


def entry() -> int:
    """The `panel` command as its own process (the console script, python -m panel)."""
    return main(own_process=True)


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    args = _parser().parse_args(argv)
    if own_process and args.command != "run":
        # `panel sim state | head` should end quietly, as any Unix tool does; the daemon keeps Python's default.
        # Only in a process of its own: a caller in the same process (a test, a tool) would otherwise be
        # killed by its next write to a closed socket.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
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
        if args.command == "credentials":
            return credentials_command(args)
        if args.command == "factory-reset":
            return factory_reset_command(args)
        if args.command == "enrol":
            from .enrol import enrol_command

            return enrol_command(args)
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
    from .auth import load_secrets
    from .daemon import serve
    from .platform import load_config, setup_logging

    if args.demo and not args.simulate:
        print("panel: --demo prints sign-ins to the terminal: only with --simulate", file=sys.stderr)
        return EXIT_USAGE
    # Whatever the shell or unit set: what the panel writes (the database, pictures of visitors, keys) and
    # what its libraries write is the service user's alone. Its own files are owner-only regardless.
    # (Only once it really runs: a refused command line leaves its caller's process as it was.)
    os.umask(0o077)
    cfg = load_config(args.config)
    setup_logging(cfg.log.level, cfg.log.format)
    secrets = load_secrets(cfg.secrets)
    from .welcome import welcome

    try:
        return asyncio.run(serve(cfg, secrets, args.simulate, config_path=args.config.absolute(),
                                 welcome=welcome if args.demo else None))
    except OSError as e:
        print(f"panel: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _config_check(path: Path) -> int:
    from .platform import load_config

    cfg = load_config(path)
    print(f"{path}: OK (panel {cfg.panel.id}, {len(cfg.buttons)} button(s), {len(cfg.door.relays)} relay(s))")
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from .platform import format_table, load_config, run_selftest

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
    """Drive every relay off. Runs after every stop (ExecStopPost), so it must work whatever state the
    config is in: an installer may have broken the file while the panel was running."""
    from gpiozero import OutputDevice

    from .platform import make_pin_factory

    relays, factory_name, problems = _relays_for_safe_state(args.config)
    for line in problems:
        print(f"panel safe-state: {line}", file=sys.stderr)
    if not relays:
        print("panel safe-state: no relay pin could be read from the config; nothing was switched off", file=sys.stderr)
        return EXIT_CONFIG
    factory = make_pin_factory(factory_name)
    failed = 0
    for rid, pin, active in relays:
        try:
            dev = OutputDevice(f"GPIO{pin}", active_high=active == "high", initial_value=False, pin_factory=factory)
            dev.off()
            dev.close()
        except Exception as e:  # one stuck line must not keep the others on
            failed += 1
            print(f"panel safe-state: relay {rid} (GPIO{pin}) could not be switched off: {e}", file=sys.stderr)
            continue
        print(f"relay {rid} (GPIO{pin}) off")
    return 1 if failed else 0


def _relays_for_safe_state(path: Path) -> tuple[list[tuple[str, int, str]], str, list[str]]:
    """(id, BCM pin, active level) of each relay and the pin factory; from the raw TOML if it is invalid."""
    import tomllib

    from .platform import load_config, parse_pin

    try:
        cfg = load_config(path)
        return [(r.id, r.pin, r.active) for r in cfg.door.relays], cfg.gpio.pin_factory, []
    except ConfigError as e:
        problems = [f"the config is invalid ({'; '.join(e.problems)}); using the relay pins it names anyway"]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return [], "lgpio", [*problems, f"cannot read {path}: {e}"]
    door = data["door"] if isinstance(data.get("door"), dict) else {}
    gpio = data["gpio"] if isinstance(data.get("gpio"), dict) else {}
    factory = gpio.get("pin_factory") if gpio.get("pin_factory") in ("lgpio", "rpigpio", "native", "mock") else "lgpio"
    relays: list[tuple[str, int, str]] = []
    for i, r in enumerate(door.get("relays") or []):
        if not isinstance(r, dict):
            continue
        try:
            pin = parse_pin(r.get("pin"))
        except Exception:
            problems.append(f"door.relays[{i}].pin: {r.get('pin')!r} is not a usable pin; that relay was not touched")
            continue
        active = r["active"] if r.get("active") in ("high", "low") else "high"
        relays.append((str(r.get("id", f"relays[{i}]")), pin, active))
    return relays, str(factory), problems


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if args.config is not None:
        from .platform import load_config

        cfg = load_config(args.config)
        host = cfg.api.host if cfg.api.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if cfg.api.https else 'http'}://{host}:{cfg.api.port}"
    return "http://127.0.0.1:8080"


def _verify(args: argparse.Namespace) -> Any:
    """Trust exactly the panel's own certificate when the config says where it is."""
    if getattr(args, "config", None) is None:
        return True
    import ssl

    from .api.tls import cert_paths
    from .platform import load_config

    cfg = load_config(args.config)
    cert = cfg.api.cert_file or cert_paths(cfg.storage.dir)[0]
    if not cfg.api.https or not cert.exists():
        return True
    return ssl.create_default_context(cafile=str(cert))


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None) -> int:
    import httpx

    url = _base_url(args) + path
    try:
        r = httpx.request(method, url, json=body, headers=headers, timeout=700, verify=_verify(args))
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
    if c == "keypad":
        return _call(args, "POST", "/api/v1/sim/keypad", {"keys": args.keys})
    if c == "qr":
        return _call(args, "POST", "/api/v1/sim/camera/qr", {"payload": args.payload})
    if c == "state":  # /api/v1/state needs a credential; the simulation's copy does not
        return _call(args, "GET", "/api/v1/sim/state")
    return EXIT_USAGE


def _tamper(args: argparse.Namespace) -> int:
    from .auth import load_secrets
    from .platform import load_config

    token = os.environ.get("PANEL_SECRET_INSTALLER_TOKEN")
    if args.config is not None:
        token = load_secrets(load_config(args.config).secrets).installer_token or token
    if not token:
        print("panel: no installer token; pass --config (its secrets file) or set PANEL_SECRET_INSTALLER_TOKEN",
              file=sys.stderr)
        return EXIT_USAGE
    return _call(args, "POST", "/api/v1/tamper/clear", headers={"Authorization": f"Bearer {token}"})
