"""The update agent: one component of the daemon that installs signed releases and judges trials.

At start it journals what the launcher queued (a rollback after crashes), removes what a cut-off
install left, and, when the running slot is on trial, runs the health check: a pass within
``update.health_deadline_s`` commits, a fail rolls back (state first, then a restart into the
previous slot). ``request`` checks an update (version, signature, one at a time) synchronously, so the
MQTT reply and the API response can refuse it, and carries out the rest in a task:
download -> verify (size, SHA-256) -> unpack into the inactive slot -> set the trial -> restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..events import (
    UpdateCommitted,
    UpdateFailed,
    UpdateInstalled,
    UpdateRolledBack,
    UpdateStage,
    UpdateStarted,
    UpdateVerified,
)
from ..platform import BaseComponent, Clock, Journal, StopReason, UpdateConfig, write_atomic
from . import _boot
from ._download import download
from ._release import Keyring, UpdateError, sha256_file, unpack, version_key

log = logging.getLogger(__name__)

HEALTH_POLL_S = 0.2


@dataclass(frozen=True)
class UpdateRequest:
    """One update, as the backend (MQTT) or an installer (API) asks for it."""

    version: str
    url: str
    size: int
    sha256: str
    signature: str
    key_id: str | None = None
    force: bool = False
    rotation_key: str | None = None  # a new vendor key, with rotation_signature by a trusted one
    rotation_signature: str | None = None
    actor: str = "backend"
    method: str = "mqtt"


HealthCheck = Callable[[], Awaitable[list[str]]]
Restart = Callable[[str, bool], None]


class UpdateAgent(BaseComponent):
    name = "update"
    stop_cap_s = 0.3

    def __init__(self, cfg: UpdateConfig, journal: Journal, clock: Clock, *, storage_dir: Path, running_version: str,
                 health_check: HealthCheck, restart: Restart, running_slot: str | None = None) -> None:
        assert cfg.root is not None
        self.cfg = cfg
        self.root: Path = cfg.root
        self.journal = journal
        self.clock = clock
        self.running_version = running_version
        self.running_slot = running_slot or os.environ.get(_boot.SLOT_ENV, _boot.FACTORY)
        self.health_check = health_check
        self.restart = restart
        self.rotated_dir = storage_dir / "update-keys"
        self.keyring = self._load_keys()
        self.phase = "idle"
        self.progress: dict[str, Any] | None = None
        self.trial_problems: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.state: dict[str, Any] = _boot.empty_state()
        self.key_id = ""
        self.last_failure: dict[str, Any] | None = None

    def _load_keys(self) -> Keyring:
        ring = Keyring.from_dir(self.cfg.keys_dir)
        ring.keys.update(Keyring.from_dir(self.rotated_dir).keys)
        return ring

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        (self.root / "slots").mkdir(parents=True, exist_ok=True)
        for left in (self.root / "slots").glob("*.new"):
            shutil.rmtree(left, ignore_errors=True)  # an install cut off by a crash or a power cut
        self.state = _boot.load_state(self.root)
        queued = self.state.get("events") or []
        for ev in queued:
            if ev.get("type") == "update.rolled_back":
                self.journal.record(UpdateRolledBack(**ev["data"]), key="update")
        dirty = bool(queued)
        pending = self.state.get("pending")
        if isinstance(pending, dict):
            # An update was under way when the process ended; nothing in use had changed (the switch clears this).
            stage: UpdateStage = {"verify": "verify", "install": "install"}.get(  # type: ignore[assignment]
                str(pending.get("stage")), "download")
            self.journal.record(UpdateFailed(version=str(pending.get("version")), stage=stage,
                                             code="update_interrupted",
                                             reason=f"the panel stopped during the {stage} (power cut, crash or "
                                                    f"kill); it still runs {self.running_version}"), key="update")
            await self.journal.flush()
            self.state["pending"] = None
            dirty = True
        if queued:
            await self.journal.flush()  # durable before the queue is cleared: at least once, never lost
            self.state["events"] = []
        if self.running_slot == self.state["active"] and \
                self.state["versions"].get(self.running_slot) != self.running_version:
            # What rollbacks and reports name as the release gone back to (the factory's version included).
            self.state["versions"][self.running_slot] = self.running_version
            dirty = True
        if dirty:
            await asyncio.to_thread(_boot.save_state, self.root, self.state)
        trial = self.state.get("trial")
        if isinstance(trial, dict) and trial.get("slot") == self.running_slot:
            self.phase = "trial"
            self._task = asyncio.create_task(self._judge_trial(trial, self.clock.monotonic()), name="update:trial")

    def stopping(self, reason: StopReason) -> None:
        self._stopping = True

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass

    def health(self) -> dict[str, Any]:
        return {"ok": True, "phase": self.phase}

    # -- the trial ---------------------------------------------------------------------------------------
    async def _judge_trial(self, trial: dict[str, Any], t0: float) -> None:
        deadline = t0 + self.cfg.health_deadline_s
        passed_at: float | None = None
        while True:
            try:
                problems = await self.health_check()
            except Exception as e:  # a check that raises is a failed check
                problems = [f"the health check raised {type(e).__name__}: {e}"]
            self.trial_problems = problems
            now = self.clock.monotonic()
            if problems:
                passed_at = None
            elif passed_at is None:
                passed_at = now
            if passed_at is not None and now - t0 >= self.cfg.commit_after_s:
                await self._commit(trial, now - t0)
                return
            if now >= deadline:
                await self._roll_back(trial, "health check failed: " + "; ".join(problems or ["no pass in time"]))
                return
            await self.clock.sleep(HEALTH_POLL_S)

    async def _commit(self, trial: dict[str, Any], health_s: float) -> None:
        state = _boot.load_state(self.root)
        from_version = str(state["versions"].get(state["active"], trial.get("from_version") or "factory"))
        state["active"] = trial["slot"]
        state["versions"][trial["slot"]] = trial["version"]
        state["trial"] = None
        state["last"] = {"result": "committed", "version": trial["version"], "at": self.clock.wall()}
        await asyncio.to_thread(_boot.save_state, self.root, state)
        self.state = state
        self.phase = "idle"
        await self.journal.record(UpdateCommitted(version=str(trial["version"]), slot=trial["slot"],
                                                  from_version=from_version, health_s=round(health_s, 3)),
                                  key="update")
        log.info("update committed", extra={"version": trial["version"], "slot": trial["slot"]})

    async def _roll_back(self, trial: dict[str, Any], reason: str) -> None:
        state = _boot.load_state(self.root)
        state["trial"] = None  # the switch back: the next start runs the active slot
        state["last"] = {"result": "rolled_back", "version": trial["version"], "reason": reason,
                         "at": self.clock.wall()}
        await asyncio.to_thread(_boot.save_state, self.root, state)
        self.state = state
        self.phase = "rolled_back"
        await self.journal.record(UpdateRolledBack(
            version=str(trial["version"]), slot=trial["slot"], to_slot=state["active"],
            to_version=str(state["versions"].get(state["active"], "factory")), reason=reason,
            boots=int(trial.get("boots", 1))), key="update")
        log.error("update rolled back", extra={"version": trial["version"], "reason": reason})
        self.restart(f"update rolled back: {reason}", True)

    # -- an update -------------------------------------------------------------------------------------
    def request(self, req: UpdateRequest) -> None:
        """Refuse now (``UpdateError``, journalled as ``update.failed``) or start the update in the background."""
        try:
            self._check(req)
        except UpdateError as e:
            self._failed(req.version, "request" if e.code in ("update_busy", "update_in_trial", "update_not_newer",
                                                              "update_too_large") else "verify", e)
            raise
        self.phase = "downloading"
        self.progress = {"version": req.version, "size": req.size}
        self.journal.record(UpdateStarted(version=req.version, from_version=self.running_version, url=req.url,
                                          size=req.size, forced=req.force, actor=req.actor,
                                          method="api" if req.method == "api" else "mqtt"), key="update")
        self._task = asyncio.create_task(self._run(req), name="update:install")

    def _check(self, req: UpdateRequest) -> None:
        if self._stopping:
            raise UpdateError("update_busy", "the panel is stopping")
        if self._task is not None and not self._task.done():
            raise UpdateError("update_in_trial" if self.phase == "trial" else "update_busy",
                              f"an update is in progress ({self.phase}); one at a time")
        if isinstance(_boot.load_state(self.root).get("trial"), dict):
            raise UpdateError("update_in_trial", "a release is on trial; wait until it commits or rolls back")
        if req.size > self.cfg.max_size_mb * 1024 * 1024 or req.size <= 0:
            raise UpdateError("update_too_large", f"size {req.size} is outside 1 byte to update.max_size_mb "
                              f"({self.cfg.max_size_mb:g} MiB)")
        if req.rotation_key is not None:
            kid = self.keyring.accept_rotation(req.rotation_key, req.rotation_signature or "")
            write_atomic(self.rotated_dir / f"{kid}.pub", (req.rotation_key.strip() + "\n").encode())
            log.info("vendor key rotated", extra={"key_id": kid})
        self.key_id = self.keyring.verify(req.signature, req.version, req.url, req.size, req.sha256, req.key_id)
        if not req.force and version_key(req.version) <= version_key(self.running_version):
            raise UpdateError("update_not_newer", f"version {req.version} is not newer than the running "
                              f"{self.running_version}; an installer can force it")

    def _failed(self, version: str, stage: UpdateStage, e: UpdateError) -> None:
        log.warning("update failed", extra={"version": version, "stage": stage, "code": e.code, "reason": str(e)})
        self.journal.record(UpdateFailed(version=version, stage=stage, code=e.code, reason=str(e)), key="update")
        # Not in the state file: a failure before the switch changed nothing there.
        self.last_failure = {"result": "failed", "version": version, "code": e.code, "reason": str(e),
                             "at": self.clock.wall()}

    async def _run(self, req: UpdateRequest) -> None:
        stage: UpdateStage = "download"
        part = self.root / "downloads" / f"{req.sha256}.part"
        try:
            await self._pending(req.version, stage)
            for other in part.parent.glob("*.part") if part.parent.is_dir() else []:
                if other != part:
                    other.unlink(missing_ok=True)  # one download at a time: another release's leftovers go
            await download(req.url, part, req.size, verify=self._tls())
            stage = "verify"
            self.phase = "verifying"
            await self._pending(req.version, stage)
            digest = await asyncio.to_thread(sha256_file, part)
            if digest != req.sha256.lower():
                part.unlink(missing_ok=True)  # never resumed: the bytes are wrong, not short
                raise UpdateError("update_hash_mismatch", f"the download's SHA-256 is {digest}, the signed one "
                                  f"{req.sha256}")
            self.journal.record(UpdateVerified(version=req.version, sha256=digest, key_id=self.key_id), key="update")
            stage = "install"
            self.phase = "installing"
            await self._pending(req.version, stage)
            slot = await asyncio.to_thread(self._install, part, req.version)
            stage = "switch"
            trial = {"slot": slot, "version": req.version, "from_version": self.running_version,
                     "from_slot": self.running_slot, "boots": 0, "max_boots": self.cfg.max_boots,
                     "at": self.clock.wall()}
            state = _boot.load_state(self.root)
            state["trial"] = trial
            state["pending"] = None
            state["versions"].pop(slot, None)  # that slot's old release is gone
            await asyncio.to_thread(_boot.save_state, self.root, state)  # the switch
            self.state = state
            part.unlink(missing_ok=True)
            self.phase = "restarting"
            await self.journal.record(UpdateInstalled(version=req.version, slot="a" if slot == "a" else "b",
                                                      max_boots=self.cfg.max_boots),
                                      key="update")
            self.restart(f"update: restarting into {req.version}", False)
        except UpdateError as e:
            self.phase = "idle"
            await self._pending(None, stage)
            self._failed(req.version, stage, e)
        except asyncio.CancelledError:
            self.phase = "idle"  # a stop: the next start reports the update as interrupted
            raise
        except Exception as e:
            self.phase = "idle"
            log.exception("update failed")
            await self._pending(None, stage)
            self._failed(req.version, stage, UpdateError("update_install_failed" if stage != "download"
                                                         else "update_download_failed", f"{type(e).__name__}: {e}"))
        finally:
            self.progress = None

    async def _pending(self, version: str | None, stage: str) -> None:
        """Note (or clear) the update under way, so a start after a crash can say it was interrupted."""
        state = _boot.load_state(self.root)
        state["pending"] = {"version": version, "stage": stage} if version is not None else None
        await asyncio.to_thread(_boot.save_state, self.root, state)

    def _tls(self) -> ssl.SSLContext | bool:
        if self.cfg.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.cfg.ca_file))

    def _install(self, archive: Path, version: str) -> str:
        """Unpack into the inactive slot (never the running one) and make it durable."""
        state = _boot.load_state(self.root)
        slot = _boot.inactive_slot(state)
        if slot == self.running_slot:  # belt and braces: the state and the process disagree
            slot = "b" if slot == "a" else "a"
        slots = self.root / "slots"
        new = slots / f"{slot}.new"
        shutil.rmtree(new, ignore_errors=True)
        try:
            unpack(archive, new, version)
            for dirpath, _dirs, files in os.walk(new):
                for name in files:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                _boot._fsync_dir(Path(dirpath))
            shutil.rmtree(slots / slot, ignore_errors=True)
            os.replace(new, slots / slot)
            _boot._fsync_dir(slots)
        except OSError as e:
            shutil.rmtree(new, ignore_errors=True)
            raise UpdateError("update_install_failed", f"could not write slot {slot}: {e}") from None
        return slot

    # -- state -----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        state = _boot.load_state(self.root)
        trial = state.get("trial")
        return {
            "enabled": True,
            "phase": self.phase,
            "running": {"version": self.running_version, "slot": self.running_slot},
            "active_slot": state["active"],
            "slots": {s: state["versions"].get(s) for s in _boot.SLOTS},
            "trial": ({"version": trial.get("version"), "slot": trial.get("slot"), "boots": trial.get("boots"),
                       "max_boots": trial.get("max_boots"), "problems": self.trial_problems}
                      if isinstance(trial, dict) else None),
            "progress": self._progress(),
            "last": max((x for x in (state.get("last"), self.last_failure) if x), key=lambda x: x.get("at") or 0,
                        default=None),
            "keys": sorted(self.keyring.keys),
        }

    def _progress(self) -> dict[str, Any] | None:
        if self.progress is None:
            return None
        part = self.root / "downloads"
        have = sum(p.stat().st_size for p in part.glob("*.part")) if part.is_dir() else 0
        return {**self.progress, "downloaded": have}


def disabled_status() -> dict[str, Any]:
    return {"enabled": False, "phase": "disabled", "reason": "update.root is not set"}
