"""The config service on its own: every key is classified in the models, an update validates the whole
file before anything is written, refuses local-only keys, hands live keys only to the components that
declared them, and saves restart keys without applying them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w

from panel.errors import ConfigChangeRefused, ConfigError
from panel.platform import (
    Config,
    ConfigService,
    declared_apply,
    key_apply,
    leaf_keys,
    parse_config,
    resolve_paths,
)

from .support import config_dict


def test_every_leaf_key_is_classified() -> None:
    keys = leaf_keys()
    assert len(keys) > 100 and "door.relays[].hold_s" in keys and "media.snapshots.max_calls" in keys
    unclassified = [k for k in keys if declared_apply(k) is None]
    assert unclassified == []


# What the brief and the attacks on the old route name as never changeable from outside.
MUST_BE_LOCAL_ONLY = [
    "gpio.pin_factory", "door.relays[].pin", "door.relays[].active", "door.relays[].boot_pull_verified",
    "door.relays[].mode", "door.relays[].lock", "lights[].pin", "lights[].active", "buttons[].pin",
    "buttons[].active", "buttons[].pull", "tamper.pin", "tamper.active", "door.contact.pin", "door.exit_button.pin",
    "door.exit_button_overrides_tamper", "mqtt.host", "mqtt.port", "mqtt.username", "mqtt.client_id", "mqtt.tls",
    "mqtt.ca_file", "mqtt.topic_prefix", "mqtt.require_signed_commands", "mqtt.command_max_age_s",
    "mqtt.homeassistant_allow_open", "webhooks.url", "media.ice_servers[].credential_env", "media.ice_servers[].urls",
    "media.video.command", "media.video.file", "media.video.device", "links.base_url", "links.enabled",
    "media.snapshots.base_url", "media.monitor", "media.monitor_audio", "media.join_view_only", "media.mjpeg.enabled",
    "storage.history_max_rows", "storage.outbox_max_events", "storage.dir", "secrets.file", "api.listen", "api.tls",
    "api.allow_plain_http", "api.cert_file", "api.key_file", "panel.id",
]


@pytest.mark.parametrize("key", MUST_BE_LOCAL_ONLY)
def test_wiring_identity_security_and_access_keys_are_local_only(key: str) -> None:
    assert key in leaf_keys()
    assert key_apply(key) == "local-only"


@pytest.mark.parametrize("path, expected", [
    ("door.relays[0].hold_s", "live"),  # concrete indexes read like the generic []
    ("tamper", "local-only"),  # a local-only table: adding or removing it
    ("tamper.debounce_ms", "local-only"),  # ... and everything in it, whatever the key is elsewhere
    ("buttons[0].debounce_ms", "restart"),
    ("buttons", "local-only"),  # adding or removing a button is wiring
    ("lights", "local-only"),
    ("media", "local-only"),  # switching media on runs devices and commands
    ("buttons[0].unit.label", "live"),
    ("calls.ring_timeout_s", "live"),
])
def test_classification_along_a_path(path: str, expected: str) -> None:
    assert key_apply(path) == expected


def test_unknown_keys_are_treated_as_local_only() -> None:
    assert declared_apply("calls.nope") is None and key_apply("calls.nope") == "local-only"


def _service(tmp_path: Path, **sections: Any) -> tuple[ConfigService, Path]:
    data = config_dict(**sections)
    data["storage"] = {"dir": str(tmp_path / "state")}
    path = tmp_path / "panel.toml"
    path.write_text("# keep me\n" + tomli_w.dumps(data))
    cfg = resolve_paths(parse_config(data), tmp_path)
    return ConfigService(cfg, path), path


async def test_live_keys_reach_only_the_components_that_declared_them(tmp_path: Path) -> None:
    service, path = _service(tmp_path)
    seen: dict[str, list[Config]] = {"door": [], "calls": [], "api": []}
    service.subscribe(("door",), seen["door"].append)
    service.subscribe(("calls", "buttons"), seen["calls"].append)
    service.subscribe(("api",), seen["api"].append)
    change = await service.update({"door.relays[0].hold_s": 3, "buttons[1].unit.label": "Flat 4"})
    assert change.changed == change.applied == ["buttons[1].unit.label", "door.relays[0].hold_s"]
    assert change.restart_required == [] and not change.dry_run
    [door_cfg] = seen["door"]
    [calls_cfg] = seen["calls"]
    assert door_cfg is calls_cfg is service.current
    assert door_cfg.relay("main").hold_s == 3 and calls_cfg.button("b304").unit.label == "Flat 4"
    assert seen["api"] == []
    assert "# keep me" in path.read_text() and "hold_s = 3" in path.read_text()


async def test_restart_keys_are_saved_not_applied(tmp_path: Path) -> None:
    service, path = _service(tmp_path)
    called: list[Config] = []
    service.subscribe(("buttons", "webhooks", "log"), called.append)
    before = service.current
    change = await service.update({"buttons[0].debounce_ms": 50, "log.format": "text"})
    assert change.changed == change.restart_required == ["buttons[0].debounce_ms", "log.format"]
    assert change.applied == [] and called == [] and service.current is before
    assert "debounce_ms = 50" in path.read_text()
    text, pending = service.pending()
    assert pending == ["buttons[0].debounce_ms", "log.format"] and text is not None


async def test_an_invalid_change_writes_and_applies_nothing(tmp_path: Path) -> None:
    service, path = _service(tmp_path)
    called: list[Config] = []
    service.subscribe(("door", "calls"), called.append)
    before, text = service.current, path.read_bytes()
    with pytest.raises(ConfigError) as e:
        await service.update({"calls.ring_timeout_s": 20, "door.relays[0].hold_s": 7})  # 7 > max_on_s 6
    assert any("door.relays[0].max_on_s" in p for p in e.value.problems)
    with pytest.raises(ConfigChangeRefused) as refused:
        await service.update({"calls.ring_timeout_s": 20, "door.relays[0].pin": 19})
    assert refused.value.code == "config_local_only" and refused.value.keys == ["door.relays[0].pin"]
    assert "can only be changed in the config file on the panel itself" in str(refused.value)
    assert path.read_bytes() == text and service.current is before and called == []


async def test_dry_run_validates_without_writing(tmp_path: Path) -> None:
    service, path = _service(tmp_path)
    text = path.read_bytes()
    change = await service.update({"calls.max_call_s": 600}, dry_run=True)
    assert change.changed == ["calls.max_call_s"] and change.applied == [] and change.dry_run
    assert path.read_bytes() == text and service.current.calls.max_call_s == 300


async def test_one_failing_component_does_not_keep_the_others_stale(tmp_path: Path) -> None:
    service, _ = _service(tmp_path)
    got: list[float] = []

    def broken(cfg: Config) -> None:
        raise RuntimeError("bug in a component")

    service.subscribe(("calls",), broken)
    service.subscribe(("calls",), lambda cfg: got.append(cfg.calls.ring_timeout_s))
    change = await service.update({"calls.ring_timeout_s": 20})
    assert change.applied == ["calls.ring_timeout_s"] and got == [20]
    assert service.current.calls.ring_timeout_s == 20


async def test_without_a_file_nothing_can_change(tmp_path: Path) -> None:
    service, _ = _service(tmp_path)
    service.path = None
    with pytest.raises(ConfigChangeRefused) as e:
        await service.update({"calls.ring_timeout_s": 20})
    assert e.value.code == "no_config_file"
