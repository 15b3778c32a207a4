from __future__ import annotations

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
