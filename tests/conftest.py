from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import available, isolated
from .support import PanelProcess, start_panel

# The whole session (each pytest-xdist worker) runs in a network namespace of its own: loopback and one
# private address (tests/netns.py). Brokers, receivers, panels, browsers and WebRTC peers all start in it,
# so no test binds to or sends to the machine's LAN address and nothing leaves the machine (issue 9,
# item 7). PANEL_TEST_HOST_NETWORK=1 runs on the host's network instead (to compare, or without root).
HOST_NETWORK = os.environ.get("PANEL_TEST_HOST_NETWORK") == "1"


@pytest.fixture(scope="session", autouse=True)
def private_network() -> Iterator[None]:
    if HOST_NETWORK or available() is not None:
        yield
        return
    with isolated("suite") as ns, ns.entered():
        yield


@pytest.fixture
def panel_proc(tmp_path: Path) -> Iterator[PanelProcess]:
    """A simulated panel running as a subprocess with the base test config."""
    p = start_panel(tmp_path)
    yield p
    p.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PANEL_TEST_REVERSE=1 runs the tests in reverse order (with -p no:randomly): the quickest way to
    find a test that only passes because an earlier one set something up."""
    if os.environ.get("PANEL_TEST_REVERSE") == "1":
        items.reverse()
