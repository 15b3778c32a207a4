"""Config validation: every bad key is named with its dotted path, the bad value and what is allowed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from panel.auth import load_secrets
from panel.errors import ConfigError, SecretsError
from panel.platform import SecretsConfig, leaf_keys, load_config, parse_config

from .support import ROOT, config_dict


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value.problems


def with_key(path: str, value: Any) -> dict[str, Any]:
    """The base config with one dotted key (``door.relays[0].hold_s``) set to ``value``."""
    data = config_dict()
    node: Any = data
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


def test_example_and_demo_configs_are_valid() -> None:
    for name in ("panel.example.toml", "demo.toml"):
        cfg = load_config(ROOT / "config" / name)
        assert cfg.door.relays[0].id == "main"


def test_example_and_every_profile_mention_every_key_and_run_media() -> None:
    """"Complete" means every key the models take is shown, set or commented with its default, and the
    sections a first panel needs (media included) are active, in the example and in every board profile."""
    keys = list(leaf_keys())
    assert len(keys) > 100
    for path in [ROOT / "config" / "panel.example.toml", *sorted((ROOT / "config" / "profiles").glob("*.toml"))]:
        text = path.read_text(encoding="utf-8")
        missing = [k for k in keys if not re.search(
            r"(^#?\s*|[{,]\s*)" + re.escape(k.rsplit(".", 1)[-1].removesuffix("[]")) + r"\s*=", text, re.M)]
        assert missing == [], f"{path.name} does not show {missing}"
        cfg = load_config(path)
        assert cfg.media is not None and cfg.media.video.source != "none", path.name
        assert cfg.links.enabled and cfg.buttons[0].unit.id, path.name


def test_demo_runs_the_whole_intercom_in_simulation() -> None:
    cfg = load_config(ROOT / "config" / "demo.toml")
    assert cfg.gpio.pin_factory == "mock" and cfg.media is not None
    assert (cfg.media.video.source, cfg.media.audio.input, cfg.media.audio.output) == ("synthetic", "synthetic",
                                                                                       "record")
    assert "303" in {b.unit.id for b in cfg.buttons}


def test_issue_example_message_exactly() -> None:
    assert problems(with_key("door.relays[0].hold_s", -1)) == [
        "door.relays[0].hold_s: -1 is not allowed; expected a number of seconds between 0.5 and 60"]


# Each row: a dotted key, a bad value, and words the message must contain.
BAD_KEYS = [
    ("panel.id", "Bad Id!", "lower-case letters"),
    ("panel.name", "", "between 1 and 64 characters"),
    ("gpio.pin_factory", "pigpio", "'lgpio', 'rpigpio', 'native' or 'mock'"),
    ("storage.outbox_max_events", 10, "between 100 and 10000000"),
    ("api.listen", "8080", "expected host:port"),
    ("buttons[0].pin", 40, "between 0 and 27"),
    ("buttons[0].pin", "GPIOX", "\"GPIO17\""),
    ("buttons[0].pin", "BOARD1", "header pin 1 is power"),
    ("buttons[0].pin", 0, "HAT ID EEPROM"),
    ("buttons[0].pull", "sideways", "'up', 'down' or 'none'"),
    ("buttons[0].active", 1, "'high' or 'low'"),
    ("buttons[0].debounce_ms", 5000, "milliseconds between 0 and 1000"),
    ("buttons[0].debounce_ms", "fast", "a whole number"),
    ("buttons[0].stuck_s", 0, "seconds between 1 and 86400"),
    ("buttons[0].unit", "303", "a table"),
    ("buttons[0].unit.label", "", "between 1 and 64"),
    ("door.relays[0].mode", "latching", "'monostable' or 'bistable'"),
    ("door.relays[0].hold_s", 61, "seconds between 0.5 and 60"),
    ("door.relays[0].max_on_s", 0.5, "seconds between 1 and 43200"),
    ("door.relays[0].lock", "magnetic", "'fail-secure' or 'fail-safe'"),
    ("door.relays[0].pin", 4, "pulled up at power-on"),
    ("door.relays[0].pin", 3, "fixed 1.8 kOhm pull-up"),
    ("door.relays[0].boot_pull_verified", "yes", "true or false"),
    ("door.held_open_s", 1, "seconds between 3 and 3600"),
    ("door.open_grace_s", -1, "seconds between 0 and 60"),
    ("door.relock_on_open", "sometimes", "true or false"),
    ("door.contact.active", "open", "'high' or 'low'"),
    ("door.exit_button.pin", -3, "between 0 and 27"),
    ("tamper.debounce_ms", -1, "between 0 and 1000"),
    ("lights[0].role", "party", "'status', 'call' or 'door'"),
    ("calls.ring_timeout_s", 1, "seconds between 5 and 600"),
    ("calls.call_type", "hologram", "'audio' or 'video'"),
    ("webhooks.url", "ftp://x", "expected an URL"),
    ("mqtt.port", 70000, "between 1 and 65535"),
    ("log.level", "loud", "'debug', 'info', 'warning' or 'error'"),
]


@pytest.mark.parametrize("path,value,expected", BAD_KEYS, ids=[f"{p}={v!r}" for p, v, _ in BAD_KEYS])
def test_every_bad_key_is_named_with_what_is_allowed(path: str, value: Any, expected: str) -> None:
    lines = problems(with_key(path, value))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: "), lines
    assert expected in lines[0], lines


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    data = config_dict()
    data["door"]["relays"][0]["hold"] = 5
    data["panle"] = {}
    lines = problems(data)
    assert any(line.startswith("door.relays[0].hold: unknown key") and "did you mean 'hold_s'?" in line
               for line in lines), lines
    assert any(line.startswith("panle: unknown key") and "did you mean 'panel'?" in line for line in lines), lines


def test_all_problems_are_reported_at_once() -> None:
    data = config_dict()
    data["door"]["relays"][0]["hold_s"] = 0
    data["buttons"][1]["pull"] = "x"
    del data["panel"]["name"]
    lines = problems(data)
    assert {line.split(":")[0] for line in lines} == {"door.relays[0].hold_s", "buttons[1].pull", "panel.name"}


def test_missing_required_sections_are_named() -> None:
    lines = problems(config_dict(door=None, buttons=None))
    assert any(line.startswith("door: is required") for line in lines)
    assert any(line.startswith("buttons: is required") for line in lines)


def test_cross_checks_name_both_places() -> None:
    data = config_dict()
    data["door"]["contact"]["pin"] = 17  # the first button's pin
    data["buttons"][1]["id"] = "b303"
    data["door"]["relays"][0]["max_on_s"] = 1
    lines = problems(data)
    assert "door.contact.pin: GPIO17 is already used by buttons[0].pin; every device needs its own pin" in lines
    assert "buttons[1].id: 'b303' is already used by buttons[0]; ids must be unique" in lines
    assert any(line.startswith("door.relays[0].max_on_s: 1 is not allowed; expected at least hold_s") for line in lines)


def test_relay_boot_level_rules() -> None:
    # An active-low relay needs a pin that is pulled *up* at power-on, and vice versa.
    assert "pulled down at power-on" in problems(with_key("door.relays[0]", {"id": "main", "pin": 26, "active": "low"}))[0]
    cfg = parse_config(with_key("door.relays[0]", {"id": "main", "pin": 5, "active": "low"}))
    assert cfg.door.relays[0].pin == 5
    cfg = parse_config(with_key("door.relays[0]", {"id": "main", "pin": 26, "active": "low", "boot_pull_verified": True}))
    assert cfg.door.relays[0].active == "low"


def test_pin_names_resolve_to_bcm() -> None:
    cfg = parse_config(with_key("buttons[0].pin", "BOARD11"))
    assert cfg.buttons[0].pin == 17  # header pin 11 is GPIO17
    data = with_key("buttons[0].pin", "GPIO5")
    assert parse_config(data).buttons[0].pin == 5


def test_toml_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[panel]\nid = \n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert "TOML syntax error" in exc.value.problems[0] and "line 2" in exc.value.problems[0]
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml")
    assert "copy config/panel.example.toml" in exc.value.problems[0]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "panel.toml"
    data = config_dict()
    data["storage"] = {"dir": "../var"}
    path.write_text(tomli_w.dumps(data))
    assert load_config(path).storage.dir == (tmp_path / "etc" / ".." / "var").absolute()


def test_config_check_cli_names_every_bad_key(tmp_path: Path) -> None:
    data = config_dict()
    data["door"]["relays"][0]["hold_s"] = -1
    data["tamper"]["pul"] = "up"
    path = tmp_path / "panel.toml"
    path.write_text(tomli_w.dumps(data))
    r = subprocess.run([sys.executable, "-m", "panel", "config", "check", str(path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "door.relays[0].hold_s: -1 is not allowed; expected a number of seconds between 0.5 and 60" in r.stderr
    assert "tamper.pul: unknown key" in r.stderr
    ok = subprocess.run([sys.executable, "-m", "panel", "config", "check", str(ROOT / "config/panel.example.toml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


# -- secrets --------------------------------------------------------------------------------------


def test_secrets_file_must_be_private(tmp_path: Path) -> None:
    f = tmp_path / "secrets.toml"
    f.write_text('installer_token = "0123456789abcdef0123"\n')
    f.chmod(0o644)
    with pytest.raises(SecretsError, match="chmod 600"):
        load_secrets(SecretsConfig(file=f), env={})
    f.chmod(0o600)
    assert load_secrets(SecretsConfig(file=f), env={}).installer_token == "0123456789abcdef0123"


def test_secrets_from_environment_and_no_value_echoed(tmp_path: Path) -> None:
    s = load_secrets(SecretsConfig(), env={"PANEL_SECRET_INSTALLER_TOKEN": "x" * 20})
    assert s.installer_token == "x" * 20
    with pytest.raises(SecretsError) as exc:
        load_secrets(SecretsConfig(), env={"PANEL_SECRET_INSTALLER_TOKEN": "hunter2"})
    assert "installer_token" in str(exc.value) and "hunter2" not in str(exc.value)
    f = tmp_path / "s.toml"
    f.write_text('passwrd = "x"\n')
    f.chmod(0o600)
    with pytest.raises(SecretsError, match="passwrd: unknown key"):
        load_secrets(SecretsConfig(file=f), env={})


def test_missing_secrets_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="install -m 600"):
        load_secrets(SecretsConfig(file=tmp_path / "none.toml"), env={})


def test_example_config_holds_no_secret() -> None:
    text = (ROOT / "config" / "panel.example.toml").read_text()
    for word in ("password =", "token =", "whsec_", "secret ="):
        assert word not in text
