"""The private internals the panel relies on (panel/compat.py) still exist in the installed libraries.

When an upgrade removes one, this fails naming the library and the attribute, instead of the panel
silently losing the feature it carries (keyframes for late viewers, vanished-peer detection, bounded ICE
gathering, the fast MQTT command path)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import aiomqtt
import pytest
import uvicorn
from aiortc import RTCIceGatherer

from panel import compat


async def _asgi(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")


def _instance(module: str, cls: str) -> Any:
    if (module, cls) == ("aiortc", "RTCIceGatherer"):
        return RTCIceGatherer()
    if (module, cls) == ("aiomqtt", "Client"):
        return aiomqtt.Client("127.0.0.1")  # connects only when entered
    if (module, cls) == ("uvicorn", "Server"):
        return uvicorn.Server(uvicorn.Config(_asgi))
    raise AssertionError(f"no instance recipe for {module}.{cls}")


@pytest.mark.parametrize("module, cls, attr, on_instance", compat.INTERNALS,
                         ids=[f"{m}.{c}.{a}" for m, c, a, _ in compat.INTERNALS])
async def test_every_private_internal_the_panel_uses_still_exists(module: str, cls: str, attr: str,
                                                                  on_instance: bool) -> None:
    owner = getattr(importlib.import_module(module), cls)
    target = _instance(module, cls) if on_instance else owner
    assert hasattr(target, attr), f"{module}.{cls}.{attr} is gone: panel/compat.py must be updated"


@pytest.mark.parametrize("module, name", compat.MODULE_INTERNALS, ids=[f"{m}.{n}" for m, n in compat.MODULE_INTERNALS])
def test_every_private_module_function_the_panel_uses_still_exists(module: str, name: str) -> None:
    assert callable(getattr(importlib.import_module(module), name, None)), \
        f"{module}.{name} is gone: panel/compat.py must be updated"


async def test_bounded_gathering_still_takes_a_timeout() -> None:
    found = compat.candidate_gathering(RTCIceGatherer())
    assert found is not None, "aioice's get_component_candidates lost its timeout: ICE gathering is unbounded"
    _, method = found
    assert "timeout" in inspect.signature(method).parameters


async def test_the_helpers_read_what_they_promise() -> None:
    client = aiomqtt.Client("127.0.0.1")
    e = aiomqtt.MqttError("unused")
    assert compat.paho_client(client) is not None and hasattr(compat.paho_client(client), "message_callback_add")
    assert compat.paho_client(object()) is None and compat.keyframe_hook(object()) is None
    assert compat.dtls_bytes_received(object()) == 0 and compat.candidate_gathering(object()) is None
    assert compat.fail_connect(client, aiomqtt.MqttError("refused")) is True  # its CONNACK wait ends with it
    assert compat.fail_connect(client, aiomqtt.MqttError("twice")) is False and compat.fail_connect(object(), e) is False
    with pytest.raises(aiomqtt.MqttError, match="refused"):
        await client._connected


@pytest.mark.parametrize("http", ["h11", "auto"])
async def test_uvicorn_protocols_are_built_the_way_the_api_builds_them(http: str) -> None:
    """panel/api/connections.py accepts connections itself and makes uvicorn's protocol for each."""
    server = uvicorn.Server(uvicorn.Config(_asgi, http=http, lifespan="off"))
    server.config.load()
    server.lifespan = server.config.lifespan_class(server.config)
    params = inspect.signature(server.config.http_protocol_class).parameters
    assert set(compat.UVICORN_PROTOCOL_ARGS) <= params.keys(), f"uvicorn's protocol takes {list(params)} now"
    protocol = compat.uvicorn_protocol(server)()
    assert callable(getattr(protocol, "connection_made", None)) and callable(getattr(protocol, "data_received", None))
