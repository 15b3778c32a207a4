from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import available, isolated, moved_to
from .support import PanelProcess, start_panel

# The whole session (each pytest-xdist worker) runs in a network namespace of its own: loopback and one
# private address (tests/netns.py). Brokers, receivers, panels, browsers and WebRTC peers all start in it,
# so no test binds to or sends to the machine's LAN address and nothing leaves the machine (issue 9,
# item 7). A module marked ``host_network`` (the Debian package's, which downloads) runs on the machine's
# own network; PANEL_TEST_HOST_NETWORK=1 runs everything there (to compare, or without root).
HOST_NETWORK = os.environ.get("PANEL_TEST_HOST_NETWORK") == "1"


@pytest.fixture(scope="session", autouse=True)
def private_network() -> Iterator[int | None]:
    """The machine's own namespace (an open descriptor) while the session runs in its private one."""
    if HOST_NETWORK or available() is not None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        home = stack.enter_context(open("/proc/thread-self/ns/net", "rb"))
        try:
            ns = stack.enter_context(isolated("suite"))
        except RuntimeError as e:  # root without CAP_SYS_ADMIN (some containers): say so, run anyway
            warnings.warn(f"the tests run on the host's network: no namespace could be made ({e})", stacklevel=1)
            yield None
            return
        stack.enter_context(ns.entered())
        yield home.fileno()


@pytest.fixture(scope="module", autouse=True)
def module_network(request: pytest.FixtureRequest, private_network: int | None) -> Iterator[None]:
    # Module scope: the module's own module-scoped fixtures (a debootstrap root) need it too.
    if private_network is None or request.node.get_closest_marker("host_network") is None:
        yield
        return
    with moved_to(private_network):
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
