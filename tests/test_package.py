"""The Debian package as an installer uses it, in a fresh Debian bookworm root made by debootstrap.

amd64: build (lintian must report no error), install, ``panel config check`` on the shipped config, start in
simulation and answer, upgrade to a newer build keeping config, secrets and state, purge leaving nothing.
arm64: build (every dependency has a cp311 manylinux2014_aarch64 wheel, or the build fails), install into an
arm64 root and run ``panel --version`` under qemu-user-static. systemd: boot the amd64 root with
``systemd-nspawn --boot`` and check Type=notify, the watchdog and the stop path under a real systemd.

The roots are cached under /var/cache/panel-test (PANEL_TEST_CACHE) and every test works on an overlay of
the cached root, so the cache stays pristine and a test's changes are exactly its overlay's upper layer.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .support import ROOT, free_port
from .update_support import Vendor, make_release, release_server

# host_network: debootstrap and pip download reach Debian's mirror and PyPI (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.host_network]

CACHE = Path(os.environ.get("PANEL_TEST_CACHE", "/var/cache/panel-test"))
PYTHON = os.environ.get("PANEL_BUILD_PYTHON", sys.executable)
INCLUDE = {"amd64": "python3,python3-venv,systemd,systemd-sysv,dbus,ca-certificates",
           "arm64": "python3,python3-venv,systemd,ca-certificates"}
MIRROR = os.environ.get("PANEL_TEST_MIRROR", "http://deb.debian.org/debian")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
       "DEBIAN_FRONTEND": "noninteractive"}
TOKEN = "installer-package-token-0123456789"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("debootstrap, chroot and mounts need root (CAP_SYS_ADMIN, CAP_SYS_CHROOT); run as root")


def bookworm(arch: str) -> Path:
    """The cached bookworm root for ``arch``, made with debootstrap on first use (minutes, once)."""
    path = CACHE / ("bookworm-root" if arch == "amd64" else f"bookworm-{arch}-root")
    if path.is_dir():
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={INCLUDE[arch]}", "bookworm",
                    str(tmp), MIRROR], check=True, capture_output=True)
    tmp.rename(path)
    return path


@contextlib.contextmanager
def overlay(lower: Path, work: Path) -> Iterator[tuple[Path, Path]]:
    """A writable root over the cached one: (merged root, upper layer holding exactly what changed)."""
    upper, wd, merged = work / "upper", work / "work", work / "root"
    for d in (upper, wd, merged):
        d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={wd}",
                    str(merged)], check=True, capture_output=True)
    try:
        yield merged, upper
    finally:
        for _ in range(3):
            if subprocess.run(["umount", "-R", str(merged)], capture_output=True).returncode == 0:
                break


@contextlib.contextmanager
def proc_mounted(root: Path) -> Iterator[None]:
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)


def chroot(root: Path, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def build(arch: str, version: str, out: Path, keys: Path | None = None) -> tuple[Path, float]:
    t0 = time.monotonic()
    args = [str(ROOT / "packaging" / "build-deb"), "--arch", arch, "--version", version, "--out", str(out)]
    if keys is not None:
        args += ["--keys", str(keys)]
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHON": PYTHON}, timeout=600)
    assert r.returncode == 0, f"build-deb failed (lintian errors fail it too):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    deb = out / f"panel_{version}_{arch}.deb"
    assert deb.is_file()
    return deb, time.monotonic() - t0


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Vendor:
    return Vendor.make(tmp_path_factory.mktemp("vendor-keys"))


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory, vendor: Vendor) -> dict[str, Path]:
    need_root()
    out = tmp_path_factory.mktemp("debs")
    old, t_old = build("amd64", "0.1.0", out, vendor.keys_dir)
    new, _ = build("amd64", "0.1.1", out, vendor.keys_dir)
    print(f"\namd64 build {t_old:.1f} s; {old.name} {old.stat().st_size / 1e6:.1f} MB")
    return {"old": old, "new": new}


def wait_health(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"the panel exited with {proc.returncode}:\n{err[-3000:]}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
            if r.status_code == 200:  # up; the version and the checks are in the detail, for the installer
                return httpx.get(f"http://127.0.0.1:{port}/api/v1/health/details", timeout=5,  # type: ignore[no-any-return]
                                 headers={"Authorization": f"Bearer {TOKEN}"}).json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no answer on port {port} within {timeout} s")


def run_simulated(root: Path, port: int) -> dict[str, object]:
    """Start the installed panel as systemd would (the launcher, as the panel user), in simulation; stop it."""
    proc = subprocess.Popen(["chroot", str(root), "setpriv", "--reuid=panel", "--regid=panel", "--init-groups",
                             "/usr/lib/panel/panel-launch", "--root", "/opt/panel", "--python",
                             "/opt/panel/venv/bin/python", "--", "run", "--config", "/etc/panel/panel.toml",
                             "--simulate"], env={**ENV, "LG_WD": "/var/lib/panel"}, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        health = wait_health(port, proc)
        update = httpx.get(f"http://127.0.0.1:{port}/api/v1/update", headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=5).json()["update"]
        health["update"] = update
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert code == 0, f"the panel stopped with {code}:\n{err[-3000:]}"
    return health


# Changes an install may leave after a purge: dpkg's and apt's own records, the system user (Debian policy
# keeps it) and caches rebuilt by triggers.
ALLOWED_AFTER_PURGE = re.compile(r"^(var/lib/dpkg/|var/lib/apt/|var/cache/|var/log/|tmp/|etc/(passwd|group|shadow|"
                                 r"gshadow|subuid|subgid)-?$|etc/ld\.so\.cache$|var/lib/systemd/deb-systemd-helper-"
                                 r"(enabled|masked)/?$|proc/?$|etc/\.pwd\.lock$)")


def test_amd64_installs_runs_upgrades_and_purges_in_a_fresh_bookworm(tmp_path: Path, debs: dict[str, Path]) -> None:
    need_root()
    base = bookworm("amd64")
    with overlay(base, tmp_path) as (root, upper), proc_mounted(root):
        (root / "tmp").mkdir(exist_ok=True)
        for deb in debs.values():
            shutil.copy(deb, root / "tmp" / deb.name)
        t0 = time.monotonic()
        chroot(root, "dpkg", "-i", f"/tmp/{debs['old'].name}")
        t_install = time.monotonic() - t0
        assert chroot(root, "/opt/panel/venv/bin/panel", "--version").stdout.strip() == "panel 0.1.0"
        check = chroot(root, "/opt/panel/venv/bin/panel", "config", "check", "/etc/panel/panel.toml")
        assert "OK" in check.stdout
        assert (root / "etc/panel/secrets.toml").stat().st_mode & 0o777 == 0o600
        assert os.readlink(root / "opt/panel/venv") == "venv-0.1.0"
        assert (root / "lib/systemd/system/panel.service").is_file()
        assert (root / "etc/systemd/system/multi-user.target.wants/panel.service").is_symlink(), "enabled"

        # The installer's edits: a port of this test's, a secret. The upgrade must keep both.
        port = free_port()
        cfg = root / "etc/panel/panel.toml"
        cfg.write_text(cfg.read_text().replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{port}"'))
        (root / "etc/panel/secrets.toml").write_text(f'installer_token = "{TOKEN}"\n')
        health = run_simulated(root, port)
        assert health["version"] == "0.1.0"
        assert health["update"]["enabled"] is True and health["update"]["running"]["slot"] == "factory"  # type: ignore[index]
        db = root / "var/lib/panel/panel.db"
        assert db.is_file()
        size_before = db.stat().st_size

        t0 = time.monotonic()
        chroot(root, "dpkg", "-i", f"/tmp/{debs['new'].name}")
        t_upgrade = time.monotonic() - t0
        assert chroot(root, "/opt/panel/venv/bin/panel", "--version").stdout.strip() == "panel 0.1.1"
        assert f'listen = "127.0.0.1:{port}"' in cfg.read_text(), "the changed config was kept"
        assert (root / "etc/panel/secrets.toml").read_text() == f'installer_token = "{TOKEN}"\n', "secret kept"
        assert db.stat().st_size >= size_before
        assert os.readlink(root / "opt/panel/venv") == "venv-0.1.1" and not (root / "opt/panel/venv-0.1.0").exists()
        health = run_simulated(root, port)
        assert health["version"] == "0.1.1"
        events = chroot(root, "/opt/panel/venv/bin/python", "-c",
                        "import sqlite3; c = sqlite3.connect('/var/lib/panel/panel.db'); "
                        "print([r[0] for r in c.execute(\"SELECT json_extract(data, '$.version') FROM events "
                        "WHERE type = 'panel.started' ORDER BY seq\")])").stdout
        assert events.strip() == "['0.1.0', '0.1.1']", "the state from before the upgrade is still there"

        chroot(root, "apt-get", "purge", "-y", "-q", "panel")
        assert chroot(root, "dpkg", "-s", "panel", check=False).returncode != 0
        for gone in ("opt/panel", "var/lib/panel", "etc/panel", "lib/systemd/system/panel.service",
                     "etc/systemd/system/multi-user.target.wants/panel.service", "usr/lib/panel",
                     "usr/share/panel"):
            assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    # Everything the overlay's upper layer still holds is dpkg's own bookkeeping (or the kept user).
    left = sorted(str(p.relative_to(upper)) + ("/" if p.is_dir() else "") for p in upper.rglob("*")
                  if not (p.is_char_device() and os.stat(p).st_rdev == 0))  # whiteouts: deletions
    # A folder of the base root shows up when something below it changed; any other folder is new.
    stray = [p for p in left if not ALLOWED_AFTER_PURGE.match(p) and not (p.endswith("/") and (base / p).is_dir())]
    assert stray == [], f"purge left these behind: {stray}"
    print(f"\namd64: install {t_install:.1f} s, upgrade {t_upgrade:.1f} s "
          f"(package {debs['old'].stat().st_size / 1e6:.1f} MB)")


def test_arm64_installs_and_runs_under_qemu(tmp_path: Path) -> None:
    need_root()
    if not Path("/usr/bin/qemu-aarch64-static").exists():
        pytest.fail("qemu-user-static is missing: scripts/test installs it")
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"binfmt_misc cannot be mounted here (a kernel capability): {r.stderr.strip()}")
    subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        pytest.skip("the kernel did not register the qemu-aarch64 binfmt handler")
    out = tmp_path / "debs"
    t0 = time.monotonic()
    deb, _ = build("arm64", "0.1.0", out)  # pip download --only-binary=:all: --platform manylinux2014_aarch64
    t_build = time.monotonic() - t0
    base = bookworm("arm64")
    with overlay(base, tmp_path / "ov") as (root, _upper), proc_mounted(root):
        assert chroot(root, "dpkg", "--print-architecture").stdout.strip() == "arm64"
        shutil.copy(deb, root / "tmp" / deb.name)
        t0 = time.monotonic()
        chroot(root, "dpkg", "-i", f"/tmp/{deb.name}", timeout=900)
        t_install = time.monotonic() - t0
        assert chroot(root, "/opt/panel/venv/bin/panel", "--version").stdout.strip() == "panel 0.1.0"
        machine = chroot(root, "/opt/panel/venv/bin/python", "-c", "import platform; print(platform.machine())")
        assert machine.stdout.strip() == "aarch64"
        # The compiled dependencies load on aarch64 (pydantic-core, cryptography's Rust, the JSON check).
        chroot(root, "/opt/panel/venv/bin/python", "-c",
               "import pydantic_core, cryptography.hazmat.bindings._rust, panel.daemon, panel.update")
    print(f"\narm64: build {t_build:.1f} s, {deb.stat().st_size / 1e6:.1f} MB, install under qemu {t_install:.1f} s")


CHECK_SCRIPT = r"""#!/bin/sh
# Runs inside the booted container once panel.service is up: what systemd says about the unit, a hung
# daemon (SIGSTOP) caught by the watchdog, and the stop path. Polls systemctl; results go to /results.
out=/results
wait_for() {  # wait_for <what> <shell condition>: poll every 0.1 s, at most 60 s
    n=0
    until eval "$2"; do n=$((n+1)); [ $n -gt 600 ] && { echo "timeout: $1" >> $out/errors; return 1; }; sleep 0.1; done
}
prop() { systemctl show -p "$1" --value panel.service; }
wait_for "panel active" '[ "$(prop ActiveState)" = active ]'
systemctl show panel.service -p Type -p NotifyAccess -p WatchdogUSec -p ActiveState -p SubState -p StatusText \
    -p MainPID -p NRestarts -p ExecStart > $out/started
# The host sends a signed update now; systemd restarts the daemon into the new slot, which commits.
wait_for "update committed" 'grep -q "\"active\": \"a\"" /opt/panel/update-state.json 2>/dev/null'
systemctl show panel.service -p NRestarts -p MainPID -p ActiveState > $out/updated
readlink /opt/panel/current > $out/current
pid=$(prop MainPID)
t0=$(date +%s.%N)
kill -STOP "$pid"
wait_for "watchdog restart" '[ "$(prop NRestarts)" -ge 1 ] && [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$pid" ]'
echo "$t0 $(date +%s.%N)" > $out/watchdog_times
systemctl show panel.service -p NRestarts -p MainPID -p ActiveState > $out/watchdog
t0=$(date +%s.%N)
systemctl stop panel.service
echo "$t0 $(date +%s.%N)" > $out/stop_times
systemctl show panel.service -p ActiveState -p Result -p ExecMainStatus -p ExecMainCode > $out/stopped
# The maintainer scripts under systemd: an upgrade restarts the running service (and returns it to the
# package's application), a removal stops it.
systemctl start panel.service
wait_for "started again" '[ "$(prop ActiveState)" = active ]'
pid=$(prop MainPID)
dpkg -i /debs/panel_0.1.1_amd64.deb > $out/upgrade.log 2>&1
wait_for "restarted by the upgrade" '[ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$pid" ] && [ "$(prop MainPID)" != 0 ]'
/opt/panel/venv/bin/python -c "import sqlite3; print(sqlite3.connect('/var/lib/panel/panel.db').execute(\"SELECT json_extract(data, '$.version') FROM events WHERE type = 'panel.started' ORDER BY seq DESC LIMIT 1\").fetchone()[0])" > $out/running_after_upgrade 2>&1
readlink /opt/panel/current > $out/current_after_upgrade
journalctl -u panel.service --no-pager -o cat > $out/journal
dpkg -r panel > $out/remove.log 2>&1
systemctl show panel.service -p ActiveState -p LoadState > $out/removed
for p in /proc/[0-9]*; do [ "$(stat -c %U "$p" 2>/dev/null)" = panel ] && echo "$p"; done > $out/left_processes
systemctl poweroff
"""


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_the_unit_under_a_real_systemd_notify_update_watchdog_and_stop(tmp_path: Path, debs: dict[str, Path],
                                                                        vendor: Vendor) -> None:
    """systemd-nspawn --boot of the bookworm root with the package installed: Type=notify (active only after
    READY=1), a signed update through the sandboxed unit (systemd restarts it into the new slot, it commits),
    the watchdog (a SIGSTOPped daemon is aborted and restarted), and the stop (in order, relays off)."""
    need_root()
    if not shutil.which("systemd-nspawn"):
        pytest.fail("systemd-nspawn is missing: scripts/test installs systemd-container")
    base = bookworm("amd64")
    results = tmp_path / "results"
    results.mkdir()
    with overlay(base, tmp_path) as (root, _upper):
        with proc_mounted(root):
            shutil.copy(debs["old"], root / "tmp" / debs["old"].name)
            chroot(root, "dpkg", "-i", f"/tmp/{debs['old'].name}")
        port = free_port()
        cfg = root / "etc/panel/panel.toml"
        cfg.write_text(cfg.read_text().replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{port}"')
                       .replace('pin_factory = "lgpio"', 'pin_factory = "mock"')  # no GPIO chip in a container
                       .replace("commit_after_s = 10", 'commit_after_s = 1\nca_file = "/etc/panel/release-ca.pem"'))
        (root / "etc/panel/secrets.toml").write_text(f'installer_token = "{TOKEN}"\n')
        # A shorter watchdog than the shipped 10 s keeps the test short; the mechanism is the same.
        dropin = root / "etc/systemd/system/panel.service.d"
        dropin.mkdir(parents=True)
        (dropin / "test.conf").write_text("[Service]\nWatchdogSec=3s\nRestartSec=0.5s\n")
        (root / "usr/local/bin/panel-check").write_text(CHECK_SCRIPT)
        (root / "usr/local/bin/panel-check").chmod(0o755)
        (root / "etc/systemd/system/panel-check.service").write_text(
            "[Unit]\nAfter=panel.service\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/panel-check\n"
            "[Install]\nWantedBy=multi-user.target\n")
        (root / "etc/systemd/system/multi-user.target.wants/panel-check.service").symlink_to(
            "/etc/systemd/system/panel-check.service")
        releases = tmp_path / "releases"
        release = make_release(releases, "5.0.0")
        stack = contextlib.ExitStack()
        server = stack.enter_context(release_server(releases))
        shutil.copy(server.ca, root / "etc/panel/release-ca.pem")
        t0 = time.monotonic()
        boot = subprocess.Popen(["systemd-nspawn", "--register=no", "--keep-unit", "-q", "-D", str(root),
                                 f"--bind={results}:/results", f"--bind-ro={debs['new'].parent}:/debs", "--boot"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            health = wait_health(port, boot, timeout=90)  # the host shares the container's network
            t_ready = time.monotonic() - t0
            r = httpx.post(f"http://127.0.0.1:{port}/api/v1/update", headers={"Authorization": f"Bearer {TOKEN}"},
                           json=release.command(server, vendor.key), timeout=10)
            assert r.status_code == 200, r.text
            t1 = time.monotonic()
            deadline = t1 + 60
            updated: dict[str, object] = {}
            while time.monotonic() < deadline:
                try:
                    updated = httpx.get(f"http://127.0.0.1:{port}/api/v1/update", timeout=2,
                                        headers={"Authorization": f"Bearer {TOKEN}"}).json()["update"]
                    if updated["running"] == {"version": "5.0.0", "slot": "a"} and updated["phase"] == "idle":
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.1)
            t_update = time.monotonic() - t1
            assert updated.get("running") == {"version": "5.0.0", "slot": "a"}, updated
            try:
                out, _ = boot.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                boot.kill()
                out, _ = boot.communicate()
                raise AssertionError(f"the container did not power off:\n{out.decode(errors='replace')[-4000:]}") from None
        finally:
            if boot.poll() is None:
                boot.kill()
                boot.wait()
            stack.close()
    console = out.decode(errors="replace")
    if "Failed to create" in console and not (results / "started").exists():
        pytest.skip(f"systemd could not boot in a container here (a kernel capability): {console[-1500:]}")
    assert not (results / "errors").exists(), (results / "errors").read_text() + console[-3000:]
    assert health["version"] == "0.1.0"
    started = _props((results / "started").read_text())
    assert started["Type"] == "notify" and started["NotifyAccess"] == "main"
    assert started["ActiveState"] == "active", "active only after READY=1"
    assert started["StatusText"] == "panel lobby-1 running"
    assert started["WatchdogUSec"] == "3s"
    assert "/usr/lib/panel/panel-launch" in started["ExecStart"]
    assert (results / "current").read_text().strip() == "slots/a"
    assert int(_props((results / "updated").read_text())["NRestarts"]) >= 1, "systemd started it again"
    watchdog = _props((results / "watchdog").read_text())
    assert int(watchdog["NRestarts"]) >= 1
    journal = (results / "journal").read_text()
    assert "Watchdog timeout" in journal, journal[-3000:]
    stopped = _props((results / "stopped").read_text())
    assert stopped["ActiveState"] == "inactive" and stopped["Result"] == "success", stopped
    assert '"msg": "panel stopped"' in journal or "panel stopped" in journal
    assert (results / "running_after_upgrade").read_text().strip() == "0.1.1", "the upgrade restarted the service"
    assert (results / "current_after_upgrade").read_text().strip() == "factory", "a package runs its own application"
    removed = _props((results / "removed").read_text())
    assert removed["ActiveState"] == "inactive", removed
    assert (results / "left_processes").read_text() == "", "no process of the panel user after the removal"
    w0, w1 = map(float, (results / "watchdog_times").read_text().split())
    s0, s1 = map(float, (results / "stop_times").read_text().split())
    assert s1 - s0 < 5.0, "systemctl stop within TimeoutStopSec"
    print(f"\nnspawn: ready {t_ready:.1f} s after boot, update -> committed under systemd {t_update:.1f} s, "
          f"hung -> restarted by the watchdog {w1 - w0:.1f} s, stop {s1 - s0:.2f} s")
