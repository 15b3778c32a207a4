"""Home Assistant MQTT discovery: the panel as a device with a doorbell, its door and its call state.

Entities: the doorbell (``event``), the call's outcome (``event``: answered, declined, missed, ended,
canceled, failed), the call state (``sensor``), tamper and the tamper block (``binary_sensor``), the door
contact and door held open (``binary_sensor``, only with a contact configured), and the door lock.

Published retained under ``<discovery_prefix>/<component>/<panel id>/<object>/config`` when
``mqtt.homeassistant_discovery`` is on. Every entity's availability follows ``status``.

The door is a ``lock`` entity with ``payload_open`` only when ``mqtt.homeassistant_allow_open`` is
on: Home Assistant cannot sign, expire or number its commands, so its ``OPEN`` is guarded by the
broker's ACL alone (and still by the tamper block). Otherwise the door is a read-only
``binary_sensor`` (device class ``lock``), and the other one's config is cleared (empty retained
payload) so Home Assistant removes a stale entity.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .. import __version__
from ..platform import Config
from ._topics import CALL_OUTCOMES, OFFLINE, ONLINE, Topics

INSTALLER_PAGE = "/installer"


def installer_url(cfg: Config, local_address: str | None = None) -> str:
    """Where an installer opens the panel's installer page: ``links.base_url`` when set (how people on
    the LAN reach the panel), else the API's listen address; a wildcard listen address (0.0.0.0, ::)
    is replaced by ``local_address``, the panel's address on the connection to the broker, which is
    the network Home Assistant is on too."""
    if cfg.links.base_url is not None:
        return cfg.links.base_url + INSTALLER_PAGE
    api = cfg.api
    host = api.host
    if host in ("", "0.0.0.0", "::") and local_address:
        host = local_address
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name
    return f"{'https' if api.https else 'http'}://{host}:{api.port}{INSTALLER_PAGE}"


def discovery_messages(cfg: Config, topics: Topics, local_address: str | None = None) -> dict[str, dict[str, Any] | None]:
    """Discovery topic -> config payload (None: publish an empty retained payload to delete it)."""
    pid = cfg.panel.id
    device = {"identifiers": [f"panel_{pid}"], "name": cfg.panel.name, "manufacturer": "Door-station panel",
              "model": cfg.panel.board or "panel", "sw_version": __version__,
              "configuration_url": installer_url(cfg, local_address)}
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
    outcome = {
        **common, "name": "Call outcome", "unique_id": f"{pid}_call_outcome", "icon": "mdi:phone-log",
        "event_types": sorted(set(CALL_OUTCOMES.values())), "state_topic": topics.call_outcome,
    }
    tamper = {
        **common, "name": "Tamper", "unique_id": f"{pid}_tamper", "device_class": "tamper",
        "state_topic": topics.state("tamper"), "value_template": "{{ 'ON' if value_json.active else 'OFF' }}",
    }
    tamper_block = {
        **common, "name": "Remote unlock blocked", "unique_id": f"{pid}_tamper_blocked", "device_class": "problem",
        "entity_category": "diagnostic", "state_topic": topics.state("tamper"),
        "value_template": "{{ 'ON' if value_json.blocked else 'OFF' }}",
    }
    door_state = "{{ 'UNLOCKED' if value_json.released else 'LOCKED' }}"
    lock_topic = topics.discovery("lock", "door")
    sensor_topic = topics.discovery("binary_sensor", "door_lock")
    out: dict[str, dict[str, Any] | None] = {
        topics.discovery("event", "doorbell"): doorbell,
        topics.discovery("event", "call_outcome"): outcome,
        topics.discovery("sensor", "call"): call,
        topics.discovery("binary_sensor", "tamper"): tamper,
        topics.discovery("binary_sensor", "tamper_blocked"): tamper_block,
    }
    contact_topic = topics.discovery("binary_sensor", "door")
    held_topic = topics.discovery("binary_sensor", "door_held_open")
    if cfg.door.contact is not None:
        out[contact_topic] = {
            **common, "name": "Door contact", "unique_id": f"{pid}_door_contact", "device_class": "door",
            "state_topic": topics.state("door"), "value_template": "{{ 'ON' if value_json.open else 'OFF' }}",
        }
        out[held_topic] = {
            **common, "name": "Door held open", "unique_id": f"{pid}_door_held_open", "device_class": "problem",
            "state_topic": topics.state("door"), "value_template": "{{ 'ON' if value_json.held_open else 'OFF' }}",
        }
    else:
        # Without a contact there is nothing to show; clear what an earlier config announced.
        out[contact_topic] = None
        out[held_topic] = None
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
