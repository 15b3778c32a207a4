"""The API of a real `panel run --simulate` process: HTTPS with the panel's own certificate, the
installer password shown once (terminal and `panel credentials`), changed while running, no secret in
the log, the live self-test pulsing a relay, and `panel factory-reset`."""

from __future__ import annotations

import copy
import os
import pty
import re
import select
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from panel.errors import ConfigError
from panel.platform import parse_config

from .eventually import eventually_sync
from .support import BASE_CONFIG, ROOT, PanelProcess, free_port, write_config

pytestmark = pytest.mark.slow


class HttpsPanel(PanelProcess):
    """PanelProcess over HTTPS, trusting exactly the certificate the panel made for itself."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cert(self) -> Path:
        return self.config_path.parent / "state" / "tls" / "api-cert.pem"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.cert)), timeout=20)

    def wait_ready(self, timeout: float = 20) -> None:
        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"panel exited with {self.proc.returncode}:\n{self.log()}")
            if not self.cert.exists():
                return False
            try:
                with self.client() as c:
                    return c.get("/api/v1/health").status_code == 200
            except httpx.HTTPError:
                return False

        eventually_sync(up, timeout, "the panel up", interval=0.05, detail=self.log)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panel", *args], capture_output=True, text=True, input=stdin,
                          timeout=60, cwd=ROOT)


def _config(tmp_path: Path, **api: Any) -> tuple[Path, int]:
    cfg = copy.deepcopy(BASE_CONFIG)
    port = free_port()
    cfg["api"] = {"listen": f"127.0.0.1:{port}", **api}
    return write_config(tmp_path, cfg), port


def test_https_credentials_selftest_and_factory_reset(tmp_path: Path) -> None:
    path, port = _config(tmp_path, tls="on")
    state = tmp_path / "state"
    panel = HttpsPanel(path, port).start()
    secrets: list[str] = []
    try:
        key = state / "tls" / "api-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on an HTTPS panel
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # and nobody trusts a self-signed certificate by default
            httpx.get(f"{panel.url}/api/v1/health", timeout=5)

        shown = _cli("credentials", "show-initial", "--config", str(path))
        assert shown.returncode == 0, shown.stderr
        password = shown.stdout.strip()
        secrets.append(password)
        assert re.fullmatch(r"[a-z2-9]{5}(-[a-z2-9]{5}){4}", password)
        assert "panel credentials show-initial" in panel.log()  # the log says where to find it...
        with panel.client() as c:
            r = c.post("/api/v1/auth/login", json={"password": password})
            assert r.status_code == 200, r.text
            session = r.json()["token"]
            secrets.append(session)
            auth = {"Authorization": f"Bearer {session}"}
            info = c.get("/api/v1/system", headers=auth).json()
            cert = x509.load_pem_x509_certificate(panel.cert.read_bytes())
            assert info["tls"]["enabled"] and info["tls"]["generated"]
            assert info["tls"]["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex(":").upper()
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert "localhost" in names.get_values_for_type(x509.DNSName)
            assert any(str(ip) == "127.0.0.1" for ip in names.get_values_for_type(x509.IPAddress))

            r = c.post("/api/v1/selftest", headers=auth, json={"pulse_relays": True})
            assert r.status_code == 200 and r.json()["passed"], r.text
            assert {row["check"]: row["result"] for row in r.json()["rows"]}["relay main"] == "PASS"
            log = c.get("/api/v1/logs/access", headers=auth).json()["entries"]
            assert [(e["cause"], e["actor"], e["method"]) for e in log] == [("installer", "installer", "api")]

            # first use: the generated password cannot be read back any more
            assert _cli("credentials", "show-initial", "--config", str(path)).returncode == 1
            # changed from the command line while the panel runs: the session ends at once
            new = "a passphrase set on the panel"
            secrets.append(new)
            done = _cli("credentials", "set", "--config", str(path), "--password-stdin", stdin=new + "\n")
            assert done.returncode == 0, done.stderr
            # the panel re-reads the credential file's generation at most once a second
            eventually_sync(lambda: c.get("/api/v1/auth/me", headers=auth).status_code == 401, 5, "the session ended")
            assert c.post("/api/v1/auth/login", json={"password": password}).status_code == 401
            assert c.post("/api/v1/auth/login", json={"password": new}).status_code == 200
            fingerprint = info["tls"]["fingerprint_sha256"]

        refused = _cli("factory-reset", "--config", str(path), "--yes")
        assert refused.returncode == 4 and "stop it first" in refused.stderr
        assert (state / "installer.cred").exists()
    finally:
        assert panel.stop() == 0
    for secret in secrets:
        assert secret not in panel.log(), "a secret reached the log"

    # the same certificate after a restart (clients that pinned it keep working)
    panel = HttpsPanel(path, port).start()
    try:
        with panel.client() as c:
            assert c.get("/api/v1/health").status_code == 200
        assert panel.cert.read_bytes() == cert.public_bytes(Encoding.PEM)
    finally:
        panel.stop()

    assert _cli("factory-reset", "--config", str(path)).returncode == 2  # no terminal, no --yes: nothing erased
    assert (state / "panel.db").exists()
    reset = _cli("factory-reset", "--config", str(path), "--yes")
    assert reset.returncode == 0, reset.stderr
    for name in ("panel.db", "installer.cred", "tls"):
        assert not (state / name).exists(), name
    assert path.exists()  # the installer's config is kept

    panel = HttpsPanel(path, port).start()
    try:
        again = _cli("credentials", "show-initial", "--config", str(path)).stdout.strip()
        assert again and again != password
        with panel.client() as c:
            session = c.post("/api/v1/auth/login", json={"password": again}).json()["token"]
            info = c.get("/api/v1/system", headers={"Authorization": f"Bearer {session}"}).json()
            assert info["tls"]["fingerprint_sha256"] != fingerprint
            assert c.get("/api/v1/logs/access", headers={"Authorization": f"Bearer {session}"}).json()["total"] == 0
    finally:
        panel.stop()


def test_the_generated_password_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    path, _ = _config(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "panel", "run", "--config", str(path), "--simulate"],
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=ROOT)
    os.close(slave)
    seen = b""
    try:
        def shown() -> bool:
            nonlocal seen
            if select.select([master], [], [], 0.2)[0]:  # blocks up to 0.2 s for the next output
                seen += os.read(master, 65536)
            return b"Installer password for this panel:" in seen and b"panel running" in seen

        eventually_sync(shown, 20, "the password and 'panel running' on the terminal", interval=0,
                        detail=lambda: seen.decode(errors="replace"))
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(master)
    m = re.search(rb"Installer password for this panel: ([a-z2-9-]{29})", seen)
    assert m is not None
    shown = _cli("credentials", "show-initial", "--config", str(path)).stdout.strip()
    assert shown == m.group(1).decode()


def test_plain_http_off_loopback_needs_an_explicit_setting() -> None:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["api"] = {"listen": "0.0.0.0:8443", "tls": "off"}
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert any(p.startswith("api.tls:") for p in e.value.problems)
    cfg["api"]["allow_plain_http"] = True
    assert not parse_config(cfg).api.https
    cfg["api"] = {"listen": "0.0.0.0:8443"}
    assert parse_config(cfg).api.https  # auto: HTTPS everywhere but loopback
    cfg["api"] = {"listen": "127.0.0.1:8080"}
    assert not parse_config(cfg).api.https
