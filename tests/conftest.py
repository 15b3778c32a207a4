from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import PanelProcess, start_panel


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
