"""Home Assistant MQTT discovery: the panel as a device with a doorbell, its door and its call state.

Published retained under ``<discovery_prefix>/<component>/<panel id>/<object>/config`` when
``mqtt.homeassistant_discovery`` is on. Every entity's availability follows ``status``.

The door is a ``lock`` entity with ``payload_open`` only when ``mqtt.homeassistant_allow_open`` is
on: Home Assistant cannot sign, expire or number its commands, so its ``OPEN`` is guarded by the
broker's ACL alone (and still by the tamper block). Otherwise the door is a read-only
``binary_sensor`` (device class ``lock``), and the other one's config is cleared (empty retained
payload) so Home Assistant removes a stale entity.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..platform import Config
from ._topics import OFFLINE, ONLINE, Topics


def discovery_messages(cfg: Config, topics: Topics) -> dict[str, dict[str, Any] | None]:
    """Discovery topic -> config payload (None: publish an empty retained payload to delete it)."""
    pid = cfg.panel.id
    device = {"identifiers": [f"panel_{pid}"], "name": cfg.panel.name, "manufacturer": "Door-station panel",
              "model": cfg.panel.board or "panel", "sw_version": __version__}
    common = {"availability": [{"topic": topics.status, "payload_available": ONLINE,
                                "payload_not_available": OFFLINE}],
              "device": device}
    doorbell = {
        **common, "name": "Doorbell", "unique_id": f"{pid}_doorbell", "device_class": "doorbell",
        "event_types": ["ring"], "state_topic": topics.doorbell,
    }
    call = {
        **common, "name": "Call", "unique_id": f"{pid}_call", "icon": "mdi:phone-ring",
        "state_topic": topics.state("call"), "value_template": "{{ value_json.status }}",
        "json_attributes_topic": topics.state("call"),
        "json_attributes_template": "{{ (value_json.call or {}) | tojson }}",
    }
    tamper = {
        **common, "name": "Tamper", "unique_id": f"{pid}_tamper", "device_class": "tamper",
        "state_topic": topics.state("tamper"), "value_template": "{{ 'ON' if value_json.active else 'OFF' }}",
    }
    door_state = "{{ 'UNLOCKED' if value_json.released else 'LOCKED' }}"
    lock_topic = topics.discovery("lock", "door")
    sensor_topic = topics.discovery("binary_sensor", "door_lock")
    out: dict[str, dict[str, Any] | None] = {
        topics.discovery("event", "doorbell"): doorbell,
        topics.discovery("sensor", "call"): call,
        topics.discovery("binary_sensor", "tamper"): tamper,
    }
    if cfg.mqtt.homeassistant_allow_open:
        out[lock_topic] = {
            **common, "name": "Door", "unique_id": f"{pid}_door", "command_topic": topics.ha_lock_set,
            "payload_open": "OPEN", "payload_unlock": "UNLOCK", "payload_lock": "LOCK",
            "state_topic": topics.state("door"), "value_template": door_state,
            "state_locked": "LOCKED", "state_unlocked": "UNLOCKED", "optimistic": False, "retain": False, "qos": 1,
        }
        out[sensor_topic] = None
    else:
        out[sensor_topic] = {
            **common, "name": "Door lock", "unique_id": f"{pid}_door_lock", "device_class": "lock",
            "state_topic": topics.state("door"),
            # binary_sensor "lock": on means unlocked
            "value_template": "{{ 'ON' if value_json.released else 'OFF' }}",
        }
        out[lock_topic] = None
    return out
