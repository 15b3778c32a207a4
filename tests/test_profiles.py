"""Board profiles and the hardware docs: every profile is a valid config, every board has both a
profile and a wiring page, and each page's pin table says exactly what its profile configures."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from panel.docgen import BOARD_SECTIONS, PROFILE_MARKER, render_profile, toml_sections
from panel.platform import BOARD_TO_BCM, Config, load_config

from .support import ROOT

PROFILES = ROOT / "config" / "profiles"
HARDWARE = ROOT / "hardware"
EXAMPLE = ROOT / "config" / "panel.example.toml"
BCM_TO_BOARD = {bcm: board for board, bcm in BOARD_TO_BCM.items()}
NOT_BOARD_DOCS = {"README.md"}


def profile_paths() -> list[Path]:
    return sorted(PROFILES.glob("*.toml"))


def board_docs() -> list[Path]:
    return sorted(p for p in HARDWARE.glob("*.md") if p.name not in NOT_BOARD_DOCS)


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panel", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def devices(cfg: Config) -> dict[str, dict[str, Any]]:
    """Every device on a pin, keyed the way the pin tables name them (config path)."""
    out: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(cfg.door.relays):
        out[f"door.relays[{i}]"] = {"id": r.id, "pin": r.pin, "active": r.active, "pull": None}
    for i, b in enumerate(cfg.buttons):
        out[f"buttons[{i}]"] = {"id": b.id, "pin": b.pin, "active": b.active, "pull": b.pull}
    for name, inp in (("door.contact", cfg.door.contact), ("door.exit_button", cfg.door.exit_button),
                      ("tamper", cfg.tamper)):
        if inp is not None:
            out[name] = {"id": None, "pin": inp.pin, "active": inp.active, "pull": inp.pull}
    for i, light in enumerate(cfg.lights):
        out[f"lights[{i}]"] = {"id": light.id, "pin": light.pin, "active": light.active, "pull": None}
    return out


def pin_table(doc: Path) -> dict[str, dict[str, str]]:
    """The rows of the doc's pin table (the table whose header starts with "config key")."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^\|\s*config key\s*\|", line)), None)
    assert start is not None, f"{doc.relative_to(ROOT)} has no pin table (a table whose header starts with 'config key')"
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    assert header == ["config key", "GPIO", "header pin", "active", "pull", "connects to"], (
        f"{doc.relative_to(ROOT)}: pin table columns are {header}")
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|")), strict=True))
        m = re.fullmatch(r"`([^`]+)`(?:\s*\(([^)]+)\))?", cells["config key"])
        assert m, f"{doc.relative_to(ROOT)}: bad config key cell {cells['config key']!r}"
        key = m.group(1)
        assert key not in rows, f"{doc.relative_to(ROOT)}: {key} appears twice in the pin table"
        rows[key] = {**cells, "id": m.group(2) or ""}
    return rows


# -- every config we ship is valid ------------------------------------------------------------------

@pytest.mark.parametrize("path", [EXAMPLE, *profile_paths()], ids=lambda p: p.name)
def test_shipped_config_passes_config_check(path: Path) -> None:
    r = config_check(path)
    assert r.returncode == 0, f"panel config check {path.relative_to(ROOT)} failed:\n{r.stdout}{r.stderr}"
    assert "OK" in r.stdout


def test_there_are_profiles_for_the_documented_boards() -> None:
    names = {p.stem for p in profile_paths()}
    assert {"pi4-relayhat-v1", "waveshare-rpi-relay-board"} <= names


def test_waveshare_profile_is_refused_without_boot_pull_verified(tmp_path: Path) -> None:
    """The hardware doc says the validator refuses the active-low relays on pulled-down pins unless
    the external pull-ups are declared; prove it on the shipped profile."""
    data = tomllib.loads((PROFILES / "waveshare-rpi-relay-board.toml").read_text(encoding="utf-8"))
    for relay in data["door"]["relays"]:
        assert relay["active"] == "low" and relay["boot_pull_verified"] is True
        del relay["boot_pull_verified"]
    path = tmp_path / "panel.toml"
    path.write_text(tomli_w.dumps(data))
    r = config_check(path)
    assert r.returncode == 3, r.stdout + r.stderr
    for i, relay in enumerate(data["door"]["relays"]):
        line = next((ln for ln in r.stderr.splitlines() if f"door.relays[{i}].pin:" in ln), None)
        assert line is not None, f"door.relays[{i}].pin not named in:\n{r.stderr}"
        assert f"GPIO{relay['pin']} is pulled down at power-on" in line and "boot_pull_verified = true" in line


def test_profiles_share_every_board_independent_section_with_the_example() -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for path in profile_paths():
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        missing = sorted(set(example) - set(data))
        assert not missing, f"{path.relative_to(ROOT)} lacks {missing}; run scripts/gen-docs"
        for key in set(example) - BOARD_SECTIONS:
            assert data[key] == example[key], (
                f"{path.relative_to(ROOT)}: [{key}] differs from config/panel.example.toml; run scripts/gen-docs")


def test_render_profile_copies_new_example_sections_and_keeps_the_board_part(tmp_path: Path) -> None:
    example = tmp_path / "example.toml"
    example.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n# a new capability\n[newthing]\nknob = 3\n")
    src = PROFILES / "waveshare-rpi-relay-board.toml"
    out = render_profile(src, example)
    data = tomllib.loads(out)
    assert data["newthing"] == {"knob": 3}
    assert "# a new capability\n[newthing]" in out
    assert out.split(PROFILE_MARKER)[0] == src.read_text(encoding="utf-8").split(PROFILE_MARKER)[0]
    assert [r["pin"] for r in data["door"]["relays"]] == [26, 20, 21]
    no_marker = tmp_path / "bare.toml"
    no_marker.write_text("[panel]\nid = \"x\"\n")
    with pytest.raises(ValueError, match="lacks the line"):
        render_profile(no_marker, example)


def test_toml_sections_attach_a_comment_paragraph_to_the_next_header() -> None:
    text = "# top\n\n[a]\nx = 1\n# about b\n[[b]]\ny = 2\n\n[[b]]\ny = 3\n[b.c]\nz = 4\n"
    assert toml_sections(text) == [("", "# top"), ("a", "[a]\nx = 1"), ("b", "# about b\n[[b]]\ny = 2"),
                                   ("b", "[[b]]\ny = 3"), ("b", "[b.c]\nz = 4")]


def test_each_profile_names_its_board() -> None:
    for path in profile_paths():
        cfg = load_config(path)
        assert cfg.panel.board == path.stem, f"{path.relative_to(ROOT)}: panel.board must be {path.stem!r}"


def test_example_is_wired_like_its_board_profile() -> None:
    example = load_config(EXAMPLE)
    assert example.panel.board is not None
    profile = load_config(PROFILES / f"{example.panel.board}.toml")
    assert devices(example) == devices(profile), (
        f"config/panel.example.toml says board = {example.panel.board!r} but its pins differ from that profile")


# -- hardware docs and profiles match one to one ----------------------------------------------------

def test_every_board_doc_has_a_profile_and_vice_versa() -> None:
    docs = {p.stem for p in board_docs()}
    profiles = {p.stem for p in profile_paths()}
    assert docs - profiles == set(), f"hardware docs without a profile in config/profiles/: {sorted(docs - profiles)}"
    assert profiles - docs == set(), f"profiles without a wiring page in hardware/: {sorted(profiles - docs)}"


def test_hardware_readme_lists_every_board() -> None:
    readme = (HARDWARE / "README.md").read_text(encoding="utf-8")
    for doc in board_docs():
        assert f"]({doc.name})" in readme, f"hardware/README.md does not link {doc.name}"
        assert f"config/profiles/{doc.stem}.toml" in readme


@pytest.mark.parametrize("doc", board_docs(), ids=lambda p: p.stem)
def test_board_doc_names_its_profile(doc: Path) -> None:
    assert f"config/profiles/{doc.stem}.toml" in doc.read_text(encoding="utf-8")


def pin_table_problems(doc: Path, cfg: Config) -> list[str]:
    want = devices(cfg)
    rows = pin_table(doc)
    rel = doc.name
    if set(rows) != set(want):
        return [f"{rel}: the pin table lists {sorted(rows)} but the profile has {sorted(want)}"]
    problems = []
    for key, dev in want.items():
        row = rows[key]
        pin = dev["pin"]
        if row["GPIO"] != f"GPIO{pin}":
            problems.append(f"{rel}: {key} is on GPIO{pin} in the profile, {row['GPIO']} in the doc")
        if row["header pin"] != str(BCM_TO_BOARD[pin]):
            problems.append(f"{rel}: {key}: GPIO{pin} is header pin {BCM_TO_BOARD[pin]}, the doc says {row['header pin']}")
        if row["active"] != dev["active"]:
            problems.append(f"{rel}: {key} is active-{dev['active']} in the profile, {row['active']} in the doc")
        if row["pull"] != (dev["pull"] or "—"):
            problems.append(f"{rel}: {key} has pull {dev['pull'] or '—'} in the profile, {row['pull']} in the doc")
        if dev["id"] is not None and row["id"] != dev["id"]:
            problems.append(f"{rel}: {key} is {dev['id']!r} in the profile, ({row['id']}) in the doc")
    return problems


@pytest.mark.parametrize("doc", board_docs(), ids=lambda p: p.stem)
def test_pin_table_matches_profile(doc: Path) -> None:
    problems = pin_table_problems(doc, load_config(PROFILES / f"{doc.stem}.toml"))
    assert not problems, "the wiring page and its profile disagree:\n" + "\n".join(problems)


@pytest.mark.parametrize("edit, expected", [
    (("| GPIO26 | 37 |", "| GPIO19 | 35 |"), "door.relays[0] is on GPIO26 in the profile, GPIO19 in the doc"),
    (("| GPIO22 | 15 | high | up |", "| GPIO22 | 15 | low | up |"), "door.contact is active-high in the profile"),
    (("| GPIO27 | 13 |", "| GPIO27 | 12 |"), "GPIO27 is header pin 13, the doc says 12"),
    (("| `lights[1]` (door) |", "| `lights[2]` (door) |"), "the pin table lists"),
])
def test_pin_table_check_catches_drift(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    """The comparison can fail: a page with one detail changed no longer matches its profile."""
    doc = HARDWARE / "pi4-relayhat-v1.md"
    text = doc.read_text(encoding="utf-8")
    assert edit[0] in text
    bad = tmp_path / doc.name
    bad.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    problems = pin_table_problems(bad, load_config(PROFILES / "pi4-relayhat-v1.toml"))
    assert any(expected in p for p in problems), problems
