"""Every use of a library's private internals, in one place.

aiortc, aioice and aiomqtt leave out a few things the panel needs; each is reached here, guarded, and
named in ``INTERNALS`` so ``tests/test_compat.py`` fails loudly (naming the library and the attribute)
when an upgrade removes one, instead of the panel silently losing the feature. Every function degrades to
"not available" rather than raising, and the callers log once what is lost.

- ``RTCRtpSender._send_keyframe`` (aiortc): pass a viewer's PLI/FIR to the shared encoder, which
  pre-encoded packets bypass;
- ``RTCDtlsTransport._get_stats`` (aiortc): bytes received, to end a session whose peer vanished;
- ``RTCIceGatherer._connection`` and ``Connection.get_component_candidates(timeout=)`` (aiortc, aioice):
  bound candidate gathering when a STUN/TURN server stops answering;
- ``aiomqtt.Client._client`` (paho inside aiomqtt): per-topic callbacks for commands (a queue hop less
  on the unlock path) and the panel's local address on the broker connection;
- ``aiomqtt.Client._connected`` (the CONNACK wait): fail a connect at once when the broker refuses the
  client certificate after a TLS 1.3 handshake (revoked), which aiomqtt would wait out for its whole timeout.
- ``sounddevice._terminate`` / ``_initialize``: PortAudio lists devices once, when it starts; restarting
  it is the only way to see a sound server or card that appeared later (the audio-device tests start
  their own PulseAudio; it closes every open stream, so the panel itself never calls it while running).
- ``uvicorn.Server.server_state`` and the HTTP protocol's constructor (``config``, ``server_state``,
  ``app_state``), called as ``uvicorn.Server.startup`` calls it: the API accepts its own connections
  (panel/api/connections.py) and hands each to uvicorn's protocol.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

# (module, class, attribute, on an instance rather than the class)
INTERNALS: tuple[tuple[str, str, str, bool], ...] = (
    ("aiortc", "RTCRtpSender", "_send_keyframe", False),
    ("aiortc", "RTCDtlsTransport", "_get_stats", False),
    ("aiortc", "RTCIceGatherer", "_connection", True),
    ("aiomqtt", "Client", "_client", True),
    ("aiomqtt", "Client", "_connected", True),
    ("uvicorn", "Server", "server_state", True),
)
# (module, function): module-level internals
MODULE_INTERNALS: tuple[tuple[str, str], ...] = (
    ("sounddevice", "_terminate"),
    ("sounddevice", "_initialize"),
)
UVICORN_PROTOCOL_ARGS = ("config", "server_state", "app_state")


def keyframe_hook(sender: Any) -> Callable[[], None] | None:
    """The sender's own keyframe request handler (aiortc calls it on a PLI/FIR), or None."""
    hook = getattr(sender, "_send_keyframe", None)
    return hook if callable(hook) else None


def set_keyframe_hook(sender: Any, hook: Callable[[], None]) -> None:
    sender._send_keyframe = hook


def dtls_bytes_received(dtls: Any) -> int:
    """Bytes a DTLS transport received (RTP, RTCP, SCTP), from aiortc's private stats; 0 if unavailable."""
    get_stats = getattr(dtls, "_get_stats", None)
    if get_stats is None:
        return 0
    return sum(getattr(stat, "bytesReceived", 0) for stat in get_stats().values())


def candidate_gathering(gatherer: Any) -> tuple[Any, Callable[..., Any]] | None:
    """(aioice connection, its get_component_candidates) when that takes a ``timeout``; else None."""
    connection = getattr(gatherer, "_connection", None)
    method = getattr(connection, "get_component_candidates", None)
    if method is None or "timeout" not in inspect.signature(method).parameters:
        return None
    return connection, method


def paho_client(client: Any) -> Any | None:
    """The paho client inside an aiomqtt client, or None."""
    return getattr(client, "_client", None)


def fail_connect(client: Any, error: BaseException) -> bool:
    """End an aiomqtt client's pending connect (its wait for CONNACK) with ``error``; False if it cannot.
    Call it on the client's event loop."""
    pending = getattr(client, "_connected", None)
    if not isinstance(pending, asyncio.Future) or pending.done():
        return False
    pending.set_exception(error)
    return True


def rescan_sound_devices() -> bool:
    """Restart PortAudio so it lists the sound devices present now; False if sounddevice cannot."""
    try:
        import sounddevice
    except (ImportError, OSError):
        return False
    terminate = getattr(sounddevice, "_terminate", None)
    initialize = getattr(sounddevice, "_initialize", None)
    if not callable(terminate) or not callable(initialize):
        return False
    terminate()
    initialize()
    return True


def uvicorn_protocol(server: Any) -> Callable[[], Any]:
    """A factory of uvicorn's HTTP protocol for ``server`` (loaded config, lifespan started), as its own
    ``startup`` makes them for the connections asyncio accepts."""
    config = server.config

    def make() -> Any:
        return config.http_protocol_class(config=config, server_state=server.server_state,
                                          app_state=server.lifespan.state)

    return make
