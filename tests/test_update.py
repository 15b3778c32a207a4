"""The update agent in-process, with real parts: a real HTTPS release server (test CA), real releases built
from this tree and signed with Ed25519, the real store and journal, the launcher's real slot choice.

Every case ends with the same question: which release serves the door now, and what do the events say."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from panel.update import (
    Keyring,
    UpdateAgent,
    UpdateError,
    UpdateRequest,
    choose_slot,
    load_state,
    public_b64,
    sign_rotation,
)

from .api_support import STATIC_TOKEN, api_rig, bearer, served
from .rig import Rig, make_config
from .support import config_dict
from .update_support import (
    Release,
    ReleaseServer,
    Vendor,
    corrupt_signature,
    make_release,
    release_server,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server with every release the module needs (built once: each is a real archive of this tree)."""
    base = tmp_path_factory.mktemp("releases")
    with release_server(base) as server:
        vendor = Vendor.make(base / "keys")
        releases = {v: make_release(base, v) for v in ("2.0.0", "3.0.0", "0.9.0")}
        tampered = base / "tampered.tar.gz"
        data = bytearray(releases["2.0.0"].path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other bytes: what a compromised mirror would serve
        tampered.write_bytes(bytes(data))
        yield {"server": server, "vendor": vendor, "releases": releases, "tampered": tampered}


@pytest.fixture
def server(world: dict[str, Any]) -> Iterator[ReleaseServer]:
    srv: ReleaseServer = world["server"]
    srv.faults.truncate.clear()
    srv.faults.requests.clear()
    yield srv


class Restarts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, reason: str, failed: bool) -> None:
        self.calls.append((reason, failed))


def healthy() -> Callable[[], Awaitable[list[str]]]:
    async def check() -> list[str]:
        return []
    return check


class Box:
    """A panel (in-process rig) with its update root, and an agent as a given slot and version would run it."""

    def __init__(self, tmp_path: Path, world: dict[str, Any], **update: Any) -> None:
        self.root = tmp_path / "opt"
        self.vendor: Vendor = world["vendor"]
        self.server: ReleaseServer = world["server"]
        section = {"root": str(self.root), "keys_dir": str(self.vendor.keys_dir), "ca_file": str(self.server.ca),
                   "commit_after_s": 0, "health_deadline_s": 5, "max_boots": 2, **update}
        self.rig = Rig(make_config(tmp_path, config_dict(update=section)))
        self.restarts = Restarts()
        self.agent: UpdateAgent | None = None

    async def boot(self, version: str, slot: str | None = None,
                   health: Callable[[], Awaitable[list[str]]] | None = None) -> UpdateAgent:
        """What a start does: the launcher picks the slot (counting a trial's boot), then the agent starts."""
        if slot is None:
            slot, _ = await asyncio.to_thread(choose_slot, self.root)
        self.restarts = Restarts()
        self.agent = UpdateAgent(self.rig.cfg.update, self.rig.journal, self.rig.clock,
                                 storage_dir=self.rig.cfg.storage.dir, running_version=version,
                                 health_check=health or healthy(), restart=self.restarts, running_slot=slot)
        await self.agent.start()
        return self.agent

    def request(self, release: Release, key: Ed25519PrivateKey | None = None, **over: Any) -> UpdateRequest:
        body = release.command(self.server, key or self.vendor.key, **over)
        force = body.pop("force", False)
        return UpdateRequest(**body, force=force)

    async def run(self, req: UpdateRequest) -> None:
        assert self.agent is not None
        self.agent.request(req)
        assert self.agent._task is not None
        await self.agent._task
        await self.rig.settle()

    def events(self) -> list[dict[str, Any]]:
        return self.rig.events("update.")

    def state(self) -> dict[str, Any]:
        return load_state(self.root)

    async def close(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
        await self.rig.close()


@pytest.fixture
async def box(tmp_path: Path, world: dict[str, Any], server: ReleaseServer) -> Any:
    b = Box(tmp_path, world)
    yield b
    await b.close()


async def test_a_signed_release_goes_into_the_inactive_slot_runs_on_trial_and_commits(box: Box,
                                                                                      world: dict[str, Any]) -> None:
    v2: Release = world["releases"]["2.0.0"]
    await box.boot("1.0.0")
    await box.run(box.request(v2))
    assert box.restarts.calls == [("update: restarting into 2.0.0", False)]
    assert [e["type"] for e in box.events()] == ["update.started", "update.verified", "update.installed"]
    assert box.events()[1]["key_id"] == box.vendor.key_id
    state = box.state()
    assert state["active"] == "factory" and state["trial"]["slot"] == "a" and state["trial"]["boots"] == 0
    assert json.loads((box.root / "slots" / "a" / "release.json").read_text()) == {"version": "2.0.0"}
    assert "__version__ = '2.0.0'" in (box.root / "slots" / "a" / "panel" / "__init__.py").read_text()
    assert not list((box.root / "downloads").glob("*.part")), "the download is removed once installed"

    # The restart: the launcher runs the trial (one boot counted) and its health check commits it.
    agent = await box.boot("2.0.0")
    assert agent.running_slot == "a" and box.state()["trial"]["boots"] == 1
    assert agent._task is not None
    await agent._task
    await box.rig.settle()
    state = box.state()
    assert state["active"] == "a" and state["trial"] is None and state["versions"]["a"] == "2.0.0"
    assert box.events()[-1]["type"] == "update.committed"
    assert box.events()[-1]["from_version"] == "1.0.0" and box.events()[-1]["slot"] == "a"
    assert box.restarts.calls == []

    # The next release goes into the other slot, never the running one.
    await box.run(box.request(world["releases"]["3.0.0"]))
    assert box.state()["trial"]["slot"] == "b"
    assert json.loads((box.root / "slots" / "a" / "release.json").read_text()) == {"version": "2.0.0"}


async def test_a_bad_signature_another_key_and_an_older_version_are_refused_before_a_byte_is_downloaded(
        box: Box, world: dict[str, Any], server: ReleaseServer) -> None:
    v2: Release = world["releases"]["2.0.0"]
    await box.boot("1.0.0")
    stranger = Ed25519PrivateKey.generate()
    cases: list[tuple[UpdateRequest, str]] = [
        (box.request(v2, signature=corrupt_signature(v2.command(server, box.vendor.key)["signature"])),
         "update_bad_signature"),
        (box.request(v2, key=stranger), "update_bad_signature"),  # no key id: verifies with no pinned key
        (box.request(v2, key=stranger, key_id="0123456789abcdef"), "update_untrusted_key"),
        (box.request(v2, version="2.0.1"), "update_bad_signature"),  # the version is signed too
        (box.request(world["releases"]["0.9.0"]), "update_not_newer"),
        (box.request(v2, size=10**12), "update_too_large"),
    ]
    for req, code in cases:
        with pytest.raises(UpdateError) as e:
            box.agent.request(req)  # type: ignore[union-attr]
        assert e.value.code == code, (req, e.value)
    await box.rig.settle()
    assert [(e["type"], e["code"]) for e in box.events()] == [("update.failed", c) for _, c in cases]
    assert server.faults.requests == [], "nothing was downloaded"
    assert box.state()["trial"] is None and not (box.root / "slots" / "a").exists()

    # An installer may force an older release (a downgrade).
    await box.run(box.request(world["releases"]["0.9.0"], force=True))
    assert box.state()["trial"]["version"] == "0.9.0"
    assert [e for e in box.events() if e["type"] == "update.started"][-1]["forced"] is True


async def test_a_wrong_hash_is_caught_before_anything_is_unpacked(box: Box, world: dict[str, Any],
                                                                  server: ReleaseServer) -> None:
    v2: Release = world["releases"]["2.0.0"]
    await box.boot("1.0.0")
    # Signed for v2's hash; the server serves other bytes of the same size.
    await box.run(box.request(v2, url=server.url(world["tampered"].name)))
    failed = box.events()[-1]
    assert (failed["type"], failed["code"], failed["stage"]) == ("update.failed", "update_hash_mismatch", "verify")
    assert box.restarts.calls == [] and box.state()["trial"] is None
    assert not (box.root / "slots" / "a").exists()
    assert not list((box.root / "downloads").glob("*.part")), "wrong bytes are never resumed"
    assert box.agent is not None and box.agent.status()["last"]["code"] == "update_hash_mismatch"


async def test_a_truncated_download_resumes_with_a_range_request(box: Box, world: dict[str, Any],
                                                                 server: ReleaseServer) -> None:
    v2: Release = world["releases"]["2.0.0"]
    await box.boot("1.0.0")
    path = "/" + v2.path.name
    server.faults.truncate[path] = (v2.size // 3, 1)
    await box.run(box.request(v2))
    ranges = [r for p, r in server.faults.requests if p == path]
    assert len(ranges) == 2 and ranges[0] is None
    # Resumed from what reached the disk (whole chunks), not from the start.
    assert ranges[1] is not None and 0 < int(ranges[1][6:-1]) <= v2.size // 3
    assert box.events()[-1]["type"] == "update.installed"


async def test_a_download_cut_short_every_time_fails_and_touches_nothing(box: Box, world: dict[str, Any],
                                                                         server: ReleaseServer) -> None:
    v2: Release = world["releases"]["2.0.0"]
    await box.boot("1.0.0")
    server.faults.truncate["/" + v2.path.name] = (1000, 100)  # never more than the first 1000 bytes
    await box.run(box.request(v2))
    failed = box.events()[-1]
    assert (failed["type"], failed["code"], failed["stage"]) == ("update.failed", "update_size_mismatch",
                                                                   "download")
    assert box.state()["trial"] is None and not (box.root / "slots" / "a").exists()
    # What did arrive stays for a later resume (it is named by the signed hash).
    assert (box.root / "downloads" / f"{v2.sha256}.part").stat().st_size == 1000


async def test_one_update_at_a_time(box: Box, world: dict[str, Any], server: ReleaseServer) -> None:
    await box.boot("1.0.0")
    assert box.agent is not None
    box.agent.request(box.request(world["releases"]["2.0.0"]))
    with pytest.raises(UpdateError) as e:
        box.agent.request(box.request(world["releases"]["3.0.0"]))
    assert e.value.code == "update_busy"
    assert box.agent._task is not None
    await box.agent._task


async def test_a_release_that_fails_its_health_check_is_rolled_back(box: Box, world: dict[str, Any]) -> None:
    await box.boot("1.0.0")
    await box.run(box.request(world["releases"]["2.0.0"]))

    async def door_dead() -> list[str]:
        return ["door: a relay is not in its commanded state"]

    agent = await box.boot("2.0.0", health=door_dead)
    assert agent.status()["trial"]["slot"] == "a"
    assert agent._task is not None
    elapsed = 0.0
    while not agent._task.done() and box.state()["trial"] is not None and elapsed < 10:
        box.rig.clock.advance(0.1)
        elapsed += 0.1
        await box.rig.settle()
        await asyncio.sleep(0.01)  # the state file is written in a thread
    await agent._task
    await box.rig.settle()
    assert 5.0 <= elapsed < 5.5, f"rolled back {elapsed:.1f} s into the trial; the deadline is 5 s"
    assert box.restarts.calls and box.restarts.calls[0][1] is True  # a failed stop: exit code 1, systemd restarts
    state = box.state()
    assert state["trial"] is None and state["active"] == "factory" and state["last"]["result"] == "rolled_back"
    rolled = box.events()[-1]
    assert rolled["type"] == "update.rolled_back" and (rolled["to_slot"], rolled["to_version"]) == ("factory", "1.0.0")
    assert "health check failed: door: a relay is not in its commanded state" == rolled["reason"]
    # The next start runs the previous release again.
    slot, _ = choose_slot(box.root)
    assert slot == "factory"


async def test_a_release_that_crashes_at_start_is_left_after_max_boots(box: Box, world: dict[str, Any]) -> None:
    await box.boot("1.0.0")
    await box.run(box.request(world["releases"]["2.0.0"]))
    # Two starts of the trial that never reach the agent (a crash, a hang killed by the watchdog) ...
    assert choose_slot(box.root)[0] == "a"
    assert choose_slot(box.root)[0] == "a"
    # ... and the third goes back by itself, before a line of the release runs.
    slot, state = choose_slot(box.root)
    assert slot == "factory" and state["trial"] is None
    assert state["events"][0]["data"]["reason"].startswith("crashed or hung at start 2 times")
    # The previous release journals what the launcher could not.
    await box.boot("1.0.0", slot=slot)
    await box.rig.settle()
    rolled = box.events()[-1]
    assert (rolled["type"], rolled["version"], rolled["boots"], rolled["to_slot"], rolled["to_version"]) == (
        "update.rolled_back", "2.0.0", 2, "factory", "1.0.0")
    assert box.state()["events"] == []


async def test_what_a_power_cut_mid_install_leaves_is_cleaned_up(box: Box) -> None:
    half = box.root / "slots" / "b.new" / "panel"
    half.mkdir(parents=True)
    (half / "__init__.py").write_text("half a file")
    (box.root / "slots" / "a").mkdir(parents=True)  # a slot without release.json: an incomplete install
    from panel.update import save_state

    save_state(box.root, {"active": "factory", "versions": {}, "events": [], "last": None,
                          "trial": {"slot": "a", "version": "2.0.0", "boots": 0, "max_boots": 2},
                          "pending": {"version": "2.0.0", "stage": "install"}})
    slot, state = choose_slot(box.root)
    assert slot == "factory", "an incomplete slot is never started"
    assert state["events"][0]["data"]["reason"] == "the slot is incomplete"
    await box.boot("1.0.0", slot=slot)
    await box.rig.settle()
    assert not (box.root / "slots" / "b.new").exists()
    said = [(e["type"], e.get("code"), e.get("stage")) for e in box.events()]
    assert ("update.failed", "update_interrupted", "install") in said
    assert ("update.rolled_back", None, None) in said
    assert box.state()["pending"] is None


async def test_a_key_rotation_signed_by_the_pinned_key_is_trusted_from_then_on(box: Box,
                                                                               world: dict[str, Any]) -> None:
    v2: Release = world["releases"]["2.0.0"]
    await box.boot("1.0.0")
    assert box.agent is not None
    new = Ed25519PrivateKey.generate()
    stranger = Ed25519PrivateKey.generate()
    bad = box.request(v2, key=new)
    with pytest.raises(UpdateError) as e:
        box.agent.request(UpdateRequest(**{**bad.__dict__, "rotation_key": public_b64(new.public_key()),
                                          "rotation_signature": sign_rotation(stranger, new.public_key())}))
    assert e.value.code == "update_bad_rotation"
    req = box.request(v2, key=new)
    await box.run(UpdateRequest(**{**req.__dict__, "rotation_key": public_b64(new.public_key()),
                                   "rotation_signature": sign_rotation(box.vendor.key, new.public_key())}))
    assert box.events()[-1]["type"] == "update.installed"
    # Persisted: a restarted agent trusts the new key without the rotation.
    ring = Keyring.from_dir(box.rig.cfg.storage.dir / "update-keys")
    assert len(ring.keys) == 1


async def test_the_panel_health_check_names_what_is_wrong(tmp_path: Path) -> None:
    rig = Rig(make_config(tmp_path))
    try:
        assert await rig.panel.update_health() == []
        rig.door.relays["main"].guard.stop()  # the relay's guard thread gone: the door loop is not safe
        rig.store.close()  # and the store does not open
        problems = await rig.panel.update_health()
        assert any(p.startswith("door:") for p in problems), problems
        assert any(p.startswith("store:") for p in problems), problems
    finally:
        await rig.close()


async def test_media_that_fails_blocks_a_commit_but_media_packages_the_installation_lacks_do_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slots hold the application only; the packages are the installation's, the same for every release."""
    from panel.media import service

    data = config_dict(media={"video": {"source": "synthetic"}, "audio": {"input": "none", "output": "none"}})
    rig = Rig(make_config(tmp_path, data))
    try:
        assert rig.panel.media is None  # configured, not started: what a failed start leaves
        assert "media: configured but not running" in await rig.panel.update_health()
        monkeypatch.setattr(service, "MEDIA_PACKAGES", ("av", "no_such_media_package"))
        assert service.missing_media_packages() == ["no_such_media_package"]
        assert not [p for p in await rig.panel.update_health() if p.startswith("media:")]
    finally:
        await rig.close()


async def test_the_api_starts_an_update_and_reports_the_agent_in_system(tmp_path: Path, world: dict[str, Any],
                                                                       server: ReleaseServer) -> None:
    root = tmp_path / "opt"
    rig = api_rig(tmp_path, update={"root": str(root), "keys_dir": str(world["vendor"].keys_dir),
                                    "ca_file": str(server.ca)})
    try:
        await rig.panel.lifecycle.start(rig.panel._update_agent())
        v2: Release = world["releases"]["2.0.0"]
        async with served(rig) as client:
            body = v2.command(server, world["vendor"].key)
            r = await client.post("/api/v1/update", json={**body, "signature": corrupt_signature(body["signature"])},
                                  headers=bearer(STATIC_TOKEN))
            assert (r.status_code, r.json()["code"]) == (422, "update_bad_signature")
            r = await client.post("/api/v1/update", json=body, headers=bearer(STATIC_TOKEN))
            assert r.status_code == 200, r.text
            assert r.json()["update"]["phase"] == "downloading"
            agent = rig.panel.updates
            assert agent is not None and agent._task is not None
            await agent._task
            r = await client.get("/api/v1/system", headers=bearer(STATIC_TOKEN))
            update = r.json()["update"]
            assert update["trial"]["version"] == "2.0.0" and update["phase"] == "restarting"
            assert rig.panel.stop_requested.is_set()
    finally:
        await rig.close()


# -- over MQTT: the backend's update command through a real Mosquitto --------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from .mosquitto import Broker
    from .test_mqtt import A

    with Broker(tmp_path_factory.mktemp("broker"), panels=[A]) as b:
        yield b


async def test_the_update_command_over_mqtt_is_checked_answered_and_carried_out(
        tmp_path: Path, world: dict[str, Any], server: ReleaseServer, broker: Any) -> None:
    from .mosquitto import Client
    from .test_mqtt import A, cmd, panel_config, start

    data = panel_config(broker, tmp_path / "state", require_signed_commands=True)
    data["update"] = {"root": str(tmp_path / "opt"), "keys_dir": str(world["vendor"].keys_dir),
                      "ca_file": str(server.ca)}
    panel = await start(data, broker)
    try:
        v2: Release = world["releases"]["2.0.0"]
        fields = v2.command(server, world["vendor"].key)
        async with Client(broker) as backend:
            bad = await backend.request(A, cmd("update", **{**fields, "signature": corrupt_signature(
                fields["signature"])}))
            assert bad["code"] == "update_bad_signature", bad
            # Older than anything this tree runs as; refused before its (absent) file would be fetched.
            ancient = Release("0.0.1", v2.path, v2.size, v2.sha256)
            older = await backend.request(A, cmd("update", **ancient.command(server, world["vendor"].key)))
            assert older["code"] == "update_not_newer", older
            forced = await backend.request(A, cmd("update", force=True, **fields))
            assert forced["code"] == "malformed" and "force" in forced["message"], "force is the installer's alone"
            reply = await backend.request(A, cmd("update", **fields))
            assert reply["code"] == "ok", reply
            assert reply["update"]["phase"] == "downloading" and reply["update"]["running"]["slot"] == "factory"
            await asyncio.wait_for(panel.stop_requested.wait(), 30)  # installed: it asks for the restart
            update_events = await asyncio.to_thread(lambda: [e["type"] for e in panel.store.read_sync(
                lambda c: [{"type": r[0]} for r in c.execute(
                    "SELECT type FROM events WHERE type LIKE 'update.%' ORDER BY seq")])])
            assert update_events == ["update.failed", "update.failed", "update.started", "update.verified",
                                     "update.installed"]
            assert load_state(tmp_path / "opt")["trial"]["version"] == "2.0.0"
    finally:
        await panel.stop("test over")


@pytest.mark.parametrize("name,kind", [("../escaped.txt", tarfile.REGTYPE), ("/abs.txt", tarfile.REGTYPE),
                                       ("panel/link", tarfile.SYMTYPE)], ids=["dotdot", "absolute", "symlink"])
def test_an_archive_reaching_outside_its_slot_is_not_a_release(tmp_path: Path, name: str, kind: bytes) -> None:
    from panel.update._release import unpack

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member_name, data in (("release.json", b'{"version": "2.0.0"}'), ("panel/__main__.py", b"")):
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        bad = tarfile.TarInfo(name)
        bad.type = kind
        bad.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        tar.addfile(bad, io.BytesIO(b""))
    dest = tmp_path / "slots" / "a.new"
    with pytest.raises(UpdateError) as e:
        unpack(archive, dest, "2.0.0")
    assert e.value.code == "update_bad_release"
    assert not dest.exists() and not (tmp_path / "slots" / "escaped.txt").exists()


async def test_the_update_agent_starts_after_the_api_and_before_housekeeping(tmp_path: Path, world: dict[str, Any],
                                                                            server: ReleaseServer) -> None:
    data = config_dict(update={"root": str(tmp_path / "opt"), "keys_dir": str(world["vendor"].keys_dir)})
    data["storage"] = {"dir": str(tmp_path / "state")}
    data["api"] = {"listen": "127.0.0.1:0"}
    from panel.auth import Secrets
    from panel.daemon import Panel
    from panel.platform import parse_config

    panel = Panel(parse_config(data), Secrets(), simulate=True)
    await panel.start()
    try:
        names = panel.lifecycle.names()
        assert names[names.index("api") + 1] == "update" and names[-1] == "housekeeping"
        assert panel.updates is not None and panel.updates.status()["running"]["slot"] == "factory"
    finally:
        await panel.stop("test over")


def test_the_vendor_tool_makes_keys_releases_signatures_and_rotations_the_panel_accepts(tmp_path: Path) -> None:
    import subprocess
    import sys

    def tool(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "panel.update", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    tool("keygen", str(tmp_path / "vendor"))
    tool("keygen", str(tmp_path / "next"))
    assert (tmp_path / "vendor").stat().st_mode & 0o777 == 0o600
    tool("build", "7.0.0", str(tmp_path / "panel-7.0.0.tar.gz"))
    url = "https://updates.example.net/panel-7.0.0.tar.gz"
    fields = json.loads(tool("sign", str(tmp_path / "vendor"), str(tmp_path / "panel-7.0.0.tar.gz"), "7.0.0", url))
    ring = Keyring.from_texts([(tmp_path / "vendor.pub").read_text()])
    assert ring.verify(fields["signature"], "7.0.0", url, fields["size"], fields["sha256"],
                       fields["key_id"]) == fields["key_id"]
    rotation = json.loads(tool("rotate", str(tmp_path / "vendor"), str(tmp_path / "next.pub")))
    new_id = ring.accept_rotation(rotation["key"], rotation["signature"])
    signed_by_next = json.loads(tool("sign", str(tmp_path / "next"), str(tmp_path / "panel-7.0.0.tar.gz"), "7.0.0",
                                     url))
    assert signed_by_next["key_id"] == new_id
    assert ring.verify(signed_by_next["signature"], "7.0.0", url, fields["size"], fields["sha256"]) == new_id


def test_a_state_that_cannot_be_written_runs_the_active_slot_never_an_uncounted_trial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from panel.update import _boot, save_state

    root = tmp_path / "opt"
    (root / "slots" / "b").mkdir(parents=True)
    (root / "slots" / "b" / "release.json").write_text('{"version": "3.0.0"}')
    save_state(root, {"active": "a", "versions": {"a": "2.0.0"}, "events": [], "last": None, "pending": None,
                      "trial": {"slot": "b", "version": "3.0.0", "boots": 0, "max_boots": 2}})
    assert _boot.pick(root) == "b"  # counted: boot 1 of the trial

    def full_disk(*_a: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_boot, "save_state", full_disk)
    assert _boot.pick(root) == "a"
    assert load_state(root)["trial"]["boots"] == 1, "the uncounted start did not run the trial"
