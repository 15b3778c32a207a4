"""The backend link: signed webhooks from the durable outbox, and MQTT (commands, retained state,
freshness and replay protection, Home Assistant discovery).
"""


from ..sdp import MAX_SDP_BYTES
from ._commands import (
    COMMAND_MODELS,
    MAX_OFFER_PAYLOAD,
    REFUSALS,
    REPLY_MODELS,
    CommandRefused,
    EndCommand,
    Envelope,
    HangupCommand,
    OfferCommand,
    OpenCommand,
    PublishCommand,
    Reply,
    SensorbergCommand,
    canonical,
    check_sdp,
    decode,
    jcs,
    parse,
    reply_bytes,
    sign,
    signed,
    verify,
)
from ._control import Control
from ._freshness import CLOCK_SKEW_S, ClockSync, KernelClockSync, Nonces, check_fresh
from ._homeassistant import discovery_messages, installer_url
from ._mqtt import BACKOFF_FIRST_S, MqttLink, backoff_s
from ._mqtt import describe as describe_mqtt_error
from ._outbox import DISABLED_KEY, Outbox, heartbeat
from ._replay import KEEP_MARGIN_S, MAX_SPENT_IDS, SeenCommands
from ._webhooks import RETRY_AFTER_MAX_S, Sender, body_of, parse_retry_after

__all__ = [
    "BACKOFF_FIRST_S",
    "CLOCK_SKEW_S",
    "COMMAND_MODELS",
    "ClockSync",
    "CommandRefused",
    "Control",
    "DISABLED_KEY",
    "EndCommand",
    "Envelope",
    "HangupCommand",
    "KEEP_MARGIN_S",
    "PublishCommand",
    "KernelClockSync",
    "MAX_OFFER_PAYLOAD",
    "MAX_SDP_BYTES",
    "MAX_SPENT_IDS",
    "MqttLink",
    "Nonces",
    "OfferCommand",
    "OpenCommand",
    "Outbox",
    "REFUSALS",
    "REPLY_MODELS",
    "RETRY_AFTER_MAX_S",
    "Reply",
    "SeenCommands",
    "Sender",
    "SensorbergCommand",
    "backoff_s",
    "body_of",
    "canonical",
    "check_fresh",
    "check_sdp",
    "decode",
    "describe_mqtt_error",
    "discovery_messages",
    "heartbeat",
    "installer_url",
    "jcs",
    "parse",
    "parse_retry_after",
    "reply_bytes",
    "sign",
    "signed",
    "verify",
]
