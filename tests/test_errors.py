"""One table from error code to HTTP status and MQTT reply (panel/errors.py CODES), used everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

from panel.errors import CODES, http_status

ROOT = Path(__file__).resolve().parents[1]
# Exceptions whose first argument is the code; ApiError and LinkRefused took (status, code) historically.
CODE_FIRST = {"CommandRefused", "CallError", "UnlockRefused", "TokenRefused", "SessionRefused", "CredentialError",
              "AccessRefused", "UpdateRefused", "ConfigRefused"}


def raised_codes() -> list[tuple[str, int, str, int | None]]:
    """(file, line, code, status given at the raise) for every error constructed with a literal code."""
    out = []
    for path in (ROOT / "panel").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            args = node.args
            status: int | None = None
            if name in CODE_FIRST and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                code = args[0].value
            elif name in ("ApiError", "LinkRefused") and len(args) >= 2 and isinstance(args[1], ast.Constant) \
                    and isinstance(args[1].value, str):
                code = args[1].value
                if isinstance(args[0], ast.Constant) and isinstance(args[0].value, int):
                    status = args[0].value
            else:
                continue
            out.append((str(path.relative_to(ROOT)), node.lineno, code, status))
    return out


def test_every_code_raised_is_in_the_table() -> None:
    found = raised_codes()
    assert len(found) > 100  # the scan sees the code base
    missing = sorted({f"{f}:{line} {code}" for f, line, code, _ in found if code not in CODES})
    assert not missing, "codes missing from panel/errors.py CODES:\n" + "\n".join(missing)


def test_no_route_answers_a_code_with_another_status_than_the_table() -> None:
    wrong = sorted(f"{f}:{line} {code} -> {status}, table says {CODES[code].status}"
                   for f, line, code, status in raised_codes()
                   if status is not None and code in CODES and status != CODES[code].status)
    assert not wrong, "\n".join(wrong)


def test_the_table_is_sane() -> None:
    for code, entry in CODES.items():
        assert code.isidentifier() and code == code.lower(), code
        assert 400 <= entry.status <= 599, code
        assert entry.meaning and not entry.meaning.endswith("."), code
    assert http_status("tamper_blocked") == 409 and http_status("no_such_code_anywhere") == 500
