"""One table from error code to HTTP status and MQTT reply (panel/errors.py CODES), used everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

from panel.errors import CODES, http_status

ROOT = Path(__file__).resolve().parents[1]
# Exceptions whose first argument is the code (none takes a status: the table decides it).
CODE_FIRST = {"ApiError", "AuthError", "LinkRefused", "CommandRefused", "CallError", "UnlockRefused", "TokenRefused",
              "SessionRefused", "MjpegRefused", "CredentialError", "AccessError", "UpdateError", "UpdateRefused",
              "ConfigChangeRefused", "EnrolError"}


def raised_codes() -> list[tuple[str, int, str, int | None]]:
    """(file, line, code, status given at the raise) for every error constructed with a literal code."""
    out = []
    for path in (ROOT / "panel").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):  # ``code = "..."`` on an exception class
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["code"] \
                            and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                        out.append((str(path.relative_to(ROOT)), stmt.lineno, stmt.value.value, None))
                continue
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            args = node.args
            status: int | None = None
            if name not in CODE_FIRST or not args:
                continue
            if isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                code = args[0].value
            else:
                code = "<computed>"
            ints = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, int)]
            status = ints[0] if ints else None
            out.append((str(path.relative_to(ROOT)), node.lineno, code, status))
    return out


def test_every_code_raised_is_in_the_table() -> None:
    found = raised_codes()
    assert len(found) > 100  # the scan sees the code base
    missing = sorted({f"{f}:{line} {code}" for f, line, code, _ in found if code not in CODES and code != "<computed>"})
    assert not missing, "codes missing from panel/errors.py CODES:\n" + "\n".join(missing)


def test_no_error_is_raised_with_a_status_of_its_own() -> None:
    """Domain code never decides an HTTP status: no error constructor is given one."""
    wrong = sorted(f"{f}:{line} {code} given {status}" for f, line, code, status in raised_codes()
                   if status is not None and 100 <= status <= 599)
    assert not wrong, "\n".join(wrong)


def test_the_table_is_sane() -> None:
    for code, entry in CODES.items():
        assert code.isidentifier() and code == code.lower(), code
        assert 400 <= entry.status <= 599, code
        assert entry.meaning and not entry.meaning.endswith("."), code
    assert http_status("tamper_blocked") == 409 and http_status("no_such_code_anywhere") == 500
