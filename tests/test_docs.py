"""The docs that are generated from the code are up to date, complete and correct, and the
hand-written docs only show commands the CLI accepts and links that resolve."""

from __future__ import annotations

import ast
import difflib
import json
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from panel import docgen
from panel.api.app import openapi_document
from panel.cli import _parser
from panel.events import EVENT_MODELS
from panel.platform import Config

from .support import ROOT

HAND_WRITTEN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "hardware").glob("*.md"))]
# Written by other capabilities; a link to them may exist before they do.
PENDING_DOCS = {"docs/calls.md", "docs/webhooks.md", "docs/mqtt.md", "docs/media.md"}


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return docgen.render_all()


# -- generated files are current ------------------------------------------------------------------

@pytest.mark.parametrize("rel", sorted(docgen.GENERATED))
def test_generated_doc_is_up_to_date(rel: str, generated: dict[str, str]) -> None:
    path = ROOT / rel
    assert path.exists(), f"{rel} is missing; run scripts/gen-docs"
    on_disk = path.read_text(encoding="utf-8")
    if on_disk != generated[rel]:
        diff = "".join(list(difflib.unified_diff(on_disk.splitlines(True), generated[rel].splitlines(True),
                                                 f"{rel} (on disk)", f"{rel} (from the code)"))[:60])
        pytest.fail(f"{rel} is out of date with the code; run scripts/gen-docs and commit the result.\n{diff}")


def test_generator_is_deterministic_and_rerunnable(tmp_path: Path) -> None:
    first = docgen.render_all()
    assert docgen.render_all() == first
    cmd = [sys.executable, "-m", "panel.docgen", "--root", str(tmp_path)]
    r1 = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r1.returncode == 0, r1.stderr
    assert all(f"wrote {rel}" in r1.stdout for rel in docgen.GENERATED)
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r2.returncode == 0 and all(f"{rel} up to date" in r2.stdout for rel in docgen.GENERATED), r2.stdout
    for rel, text in first.items():
        assert (tmp_path / rel).read_text(encoding="utf-8") == text
    check = [sys.executable, "-m", "panel.docgen", "--check", "--root", str(tmp_path)]
    assert subprocess.run(check, capture_output=True, timeout=60, cwd=ROOT).returncode == 0
    (tmp_path / "docs" / "events.md").write_text("stale\n")
    r3 = subprocess.run(check, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r3.returncode == 1
    assert "docs/events.md is out of date; run scripts/gen-docs" in r3.stderr
    assert (tmp_path / "docs" / "events.md").read_text() == "stale\n", "--check must not write"


# -- the configuration reference covers every key --------------------------------------------------

def _walk(model: type[BaseModel], prefix: str = "") -> typing.Iterator[tuple[str, type[BaseModel]]]:
    yield prefix, model
    for name, field in model.model_fields.items():
        tp, _ = docgen._strip(field.annotation)
        item = docgen._list_item(tp)
        if docgen._is_model(tp):
            yield from _walk(tp, f"{prefix}.{name}" if prefix else name)
        elif item is not None and docgen._is_model(item):
            yield from _walk(item, (f"{prefix}.{name}" if prefix else name) + "[]")


def _section(text: str, path: str) -> str:
    anchor = f'<a id="{docgen._anchor(path)}"></a>'
    assert anchor in text, f"configuration.md has no section for {path}"
    body = text.split(anchor, 1)[1]
    return body.split('<a id="', 1)[0]


def _row(section: str, key: str) -> list[str]:
    for line in section.splitlines():
        if line.startswith(f"| `{key}` |"):
            return [c.strip() for c in line.strip().strip("|").split(" | ")]
    raise AssertionError(f"no row for {key!r}")


def test_configuration_reference_lists_every_key_with_type_default_and_range(generated: dict[str, str]) -> None:
    text = generated["docs/configuration.md"]
    sections = 0
    for path, model in _walk(Config):
        if not path:
            continue
        sections += 1
        body = _section(text, path)
        for name, field in model.model_fields.items():
            cells = _row(body, name)
            where = f"{path}.{name}"
            assert len(cells) == 6, (where, cells)
            # when a change takes effect, from the model's classification (a table may leave it to its keys)
            tp, _ = docgen._strip(field.annotation)
            item = docgen._list_item(tp)
            table = docgen._is_model(tp) or (item is not None and docgen._is_model(item))
            apply = docgen.declared_apply(where)
            assert apply is not None, f"{where} is not classified live, restart or local-only"
            want = "per key" if table and name not in model.APPLY else docgen.APPLY_WORDS[apply]
            assert cells[5] == want, (where, cells[5])
            if field.is_required():
                assert cells[2] == "**required**", where
            tp, _ = docgen._strip(field.annotation)
            if typing.get_origin(tp) is typing.Literal:
                for value in typing.get_args(tp):
                    assert f"`{json.dumps(value)}`" in cells[3], f"{where}: {value!r} not listed as allowed"
            bounds = docgen._bounds(field)
            if "ge" in bounds and "le" in bounds and docgen._list_item(tp) is None:
                unit = docgen._unit(field)
                want = f"{docgen._num(bounds['ge'])} to {docgen._num(bounds['le'])}" + (f" {unit}" if unit else "")
                assert want in cells[3], f"{where}: range {want!r} not shown: {cells[3]!r}"
            if field.description:
                assert field.description.replace("|", "\\|") in cells[4], where
    assert sections >= 10


def test_configuration_reference_shows_real_validator_output(generated: dict[str, str]) -> None:
    text = generated["docs/configuration.md"]
    assert "door.relays[0].hold_s: -1 is not allowed; expected a number of seconds between 0.5 and 60" in text
    assert "buttons[0].pinn: unknown key" in text


def test_defaults_in_the_reference_are_the_models_defaults(generated: dict[str, str]) -> None:
    text = generated["docs/configuration.md"]
    assert _row(_section(text, "door.relays"), "hold_s")[2] == "`5`"
    assert _row(_section(text, "storage"), "dir")[2] == '`"/var/lib/panel"`'
    assert _row(_section(text, "door"), "relock_on_open")[2] == "`true`"
    assert _row(_section(text, "door.contact"), "stuck_s")[2] == "unset"
    assert _row(_section(text, "buttons"), "stuck_s")[2] == "`60`"


# -- the event catalogue covers every event ----------------------------------------------------------

def _event_section(text: str, type_: str) -> str:
    anchor = f'<a id="{type_}"></a>'
    assert anchor in text, f"docs/events.md has no section for {type_}; run scripts/gen-docs"
    return text.split(anchor, 1)[1].split('<a id="', 1)[0]


@pytest.mark.parametrize("type_", sorted(EVENT_MODELS))
def test_event_is_documented_with_fields_and_a_valid_example(type_: str, generated: dict[str, str]) -> None:
    model = EVENT_MODELS[type_]
    assert (model.__dict__.get("__doc__") or "").strip(), (
        f"{model.__name__} ({type_}) has no docstring; the docstring is the event's description in "
        "docs/events.md: add one in panel/events.py and run scripts/gen-docs")
    body = _event_section(generated["docs/events.md"], type_)
    assert docgen._doc(model) in body
    for name, field in model.model_fields.items():
        assert f"| `{name}` |" in body, f"{type_}: field {name} missing"
        tp, _ = docgen._strip(field.annotation)
        if docgen._is_model(tp):
            for sub in tp.model_fields:
                assert f"| `{name}.{sub}` |" in body, f"{type_}: field {name}.{sub} missing"
    m = re.search(r"```json\n(.*?)\n```", body, re.S)
    assert m, f"{type_}: no JSON example"
    example = json.loads(m.group(1))
    assert example.pop("panel") == {"id": "lobby-1", "name": "Main entrance"}
    assert set(example) == set(model.model_fields)
    model.model_validate(example)


def test_event_index_lists_every_type_in_catalogue_order(generated: dict[str, str]) -> None:
    text = generated["docs/events.md"]
    index = re.findall(r"^\| \[`([a-z_.]+)`\]", text, re.M)
    assert index == list(EVENT_MODELS)


# -- OpenAPI ---------------------------------------------------------------------------------------

def test_openapi_json_is_the_apps_document() -> None:
    on_disk = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert on_disk == openapi_document(), "docs/openapi.json is out of date; run scripts/gen-docs"
    assert "/api/v1/health" in on_disk["paths"]


# -- hand-written docs -----------------------------------------------------------------------------

def _code_blocks(text: str) -> typing.Iterator[str]:
    """The shell blocks (```, ```bash, ```sh, ```console) with line continuations joined."""
    lang: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                if lang in ("", "bash", "sh", "shell", "console"):
                    yield "\n".join(lines).replace("\\\n", " ")
                lang = None
        elif lang is not None:
            lines.append(line)


def _panel_commands(text: str) -> typing.Iterator[list[str]]:
    """Every invocation of the panel CLI in the fenced code blocks, as its argument list."""
    for block in _code_blocks(text):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip().lstrip("$ ").strip()
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
                try:
                    tokens = shlex.split(part)
                except ValueError:
                    continue
                for i, tok in enumerate(tokens):
                    is_prog = (tok.endswith("/bin/panel") or (tok == "panel" and i == 0)
                               or (tok == "panel" and i > 0 and tokens[i - 1] == "-m"))
                    if is_prog:
                        yield tokens[i + 1:]
                        break


def test_every_documented_panel_command_is_accepted_by_the_cli() -> None:
    parser = _parser()
    seen = 0
    for doc in HAND_WRITTEN:
        for args in _panel_commands(doc.read_text(encoding="utf-8")):
            seen += 1
            try:
                parser.parse_args(args)
            except SystemExit:
                pytest.fail(f"{doc.relative_to(ROOT)} documents `panel {' '.join(args)}`, which the CLI refuses")
    assert seen >= 10


def test_the_command_extractor_finds_invocations() -> None:
    text = "```bash\nsudo -u panel /opt/panel/.venv/bin/panel selftest --config /etc/panel/panel.toml\n" \
           "journalctl -u panel -f\n.venv/bin/panel sim press b303   # ring\npanel bogus\n```\n"
    assert list(_panel_commands(text)) == [["selftest", "--config", "/etc/panel/panel.toml"],
                                           ["sim", "press", "b303"], ["bogus"]]
    with pytest.raises(SystemExit):
        _parser().parse_args(["bogus"])


def test_scripts_named_in_the_docs_exist_and_are_executable() -> None:
    named = set()
    for doc in HAND_WRITTEN:
        named |= set(re.findall(r"(?<![\w/.])(scripts/[a-z][\w-]*|\.ci/run)\b", doc.read_text(encoding="utf-8")))
    assert {"scripts/demo", "scripts/test", "scripts/gen-docs", ".ci/run"} <= named
    for rel in sorted(named):
        path = ROOT / rel
        assert path.is_file(), f"the docs name {rel}, which does not exist"
        assert path.stat().st_mode & 0o111, f"{rel} is not executable"


@pytest.mark.parametrize("doc", HAND_WRITTEN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if rel in PENDING_DOCS:
            continue
        assert path.exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"


def test_every_test_a_page_cites_exists() -> None:
    """docs/security.md (and other pages) cite tests as the proof of a promise: a test renamed or removed
    must not leave a promise citing nothing."""
    cited, missing = 0, []
    for doc in HAND_WRITTEN:
        for m in re.finditer(r"tests/(\w+\.py)(?:::(\w+))?", doc.read_text(encoding="utf-8")):
            path = ROOT / "tests" / m.group(1)
            cited += 1
            if not path.exists():
                missing.append(f"{doc.name}: {m.group(0)}")
            elif m.group(2) is not None and m.group(2) not in _test_names(path):
                missing.append(f"{doc.name}: {m.group(0)}")
    assert not missing, "these pages cite tests that do not exist:\n" + "\n".join(missing)
    assert cited > 100  # security.md alone cites dozens: the pattern still finds them


def _test_names(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
