"""The backend link: signed webhooks from the durable outbox, and MQTT (commands, retained state,
freshness and replay protection, Home Assistant discovery).
"""


from ._commands import (
    COMMAND_MODELS,
    MAX_OFFER_PAYLOAD,
    MAX_SDP_BYTES,
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
    sign,
    signed,
    verify,
)
from ._control import Control
from ._freshness import CLOCK_SKEW_S, ClockSync, KernelClockSync, Nonces, check_fresh
from ._homeassistant import discovery_messages, installer_url
from ._mqtt import BACKOFF_FIRST_S, MqttLink, backoff_s
from ._outbox import DISABLED_KEY, Outbox, heartbeat
from ._replay import KEEP_AFTER_EXPIRY_S, SeenCommands
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
    "PublishCommand",
    "KEEP_AFTER_EXPIRY_S",
    "KernelClockSync",
    "MAX_OFFER_PAYLOAD",
    "MAX_SDP_BYTES",
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
    "discovery_messages",
    "heartbeat",
    "installer_url",
    "jcs",
    "parse",
    "parse_retry_after",
    "sign",
    "signed",
    "verify",
]
