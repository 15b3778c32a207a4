"""Schemathesis against the OpenAPI document a real `panel run --simulate` serves, without and with an
installer credential: no server errors, and every response (status, content type, body) as documented.

Left out, and covered by their own tests: the simulation routes (they block the loop, crash components
and hold buttons on purpose), the SSE stream (it never ends by design; tests/test_api_logs.py) and the
MJPEG stream (likewise; tests/test_mjpeg.py).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support import BASE_CONFIG, ROOT, PanelProcess, free_port, write_config

pytestmark = pytest.mark.slow

TOKEN = "schemathesis-installer-token-0123456789"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXCLUDE = r"^/api/v1/(sim/|events/stream$|video\.mjpeg$)"  # streams never end by design


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> PanelProcess:
    tmp = tmp_path_factory.mktemp("schemathesis")
    secrets = tmp / "secrets.toml"
    secrets.write_text(f'installer_token = "{TOKEN}"\n')
    secrets.chmod(0o600)
    cfg = copy.deepcopy(BASE_CONFIG)
    port = free_port()
    # Generous bounds: the run sends hundreds of requests from one address, logins among them.
    cfg["api"] = {"listen": f"127.0.0.1:{port}", "mutations_per_minute": 100_000, "login_backoff_s": 0.05,
                  "login_lockout_after": 100}
    cfg["secrets"] = {"file": str(secrets)}
    # Media on (small synthetic camera), so the media routes are served as on a real panel.
    cfg["media"] = {"video": {"width": 320, "height": 240, "fps": 10, "bitrate_kbps": 200}, "linger_s": 0,
                    "tones": {"enabled": False}, "snapshots": {"at_press": False}}
    p = PanelProcess(write_config(tmp, cfg), port).start()
    yield p
    p.stop()


def _run(panel: PanelProcess, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{panel.url}/api/v1/openapi.json",
           "--checks", CHECKS, "--exclude-path-regex", EXCLUDE, "--max-examples", "5", "--seed", "20261121",
           "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "10",
           "--suppress-health-check", "all", "--report-dir", str(tmp), *extra]
    # cwd: schemathesis keeps a cache in ./.schemathesis; it belongs to the test run, not the repository.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp, env=env)


@pytest.mark.parametrize("auth", ["unauthenticated", "installer"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(panel: PanelProcess, tmp_path: Path,
                                                                    auth: str) -> None:
    extra = ["-H", f"Authorization: Bearer {TOKEN}"] if auth == "installer" else []
    r = _run(panel, tmp_path, *extra)
    out = r.stdout + r.stderr
    report = tmp_path / "schemathesis-output.txt"
    report.write_text(out)
    assert r.returncode == 0, f"full report: {report}\n" + out[-6000:]
    assert "No issues found" in out or "passed" in out.lower(), out[-3000:]
    assert panel.proc is not None and panel.proc.poll() is None, "the panel died during the run"
    assert "Traceback" not in panel.log(), panel.log()[-3000:]
