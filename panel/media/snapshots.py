"""Pictures of the visitor: one at every press, stored with the call; on demand; and from just before.

At a press (the committed ``call.created`` event: the press and the event are never delayed) the
picture nearest the press time is encoded to JPEG in the JPEG thread and written under
``storage.dir/snapshots/<call guid>/`` together with the pre-press pictures, if that buffer is on.
Then ``call.snapshot`` is recorded, in the same transaction as the call log's ``snapshot`` column,
carrying a signed, expiring URL on the local API.

Storage is bounded (``media.snapshots``): at most ``max_calls`` calls' pictures and ``max_mb`` in all,
never leaving less than ``min_free_mb`` free on the disk; the oldest call's pictures go first. A
picture that cannot fit even then is not stored (and logged): the database needs the disk more.

The pre-press buffer keeps JPEGs (raw cameras) or the H.264 packets themselves (pass-through cameras,
decoded only at a press), bounded by seconds and by memory.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..events import CallSnapshot
from ..platform import EventRow, SnapshotsConfig, Store, Tx, fsync_dir, private_dir
from ..platform import iso8601 as iso
from .capture import Subscription, SubscriptionClosed
from .errors import MediaError
from .jpeg import Jpeg, JpegFrames, Picture, decode_gop
from .sources import EncodedFrame, RawFrame, is_key

if TYPE_CHECKING:
    from ..platform import Journal

log = logging.getLogger(__name__)
T = TypeVar("T")

GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NAME_RE = re.compile(r"^(press|pre-\d{2})\.jpg$")
PRESS = "press.jpg"
META = "meta.json"
KEY_KV = "snapshot_url_key"
# A press picture is taken from the camera's recent pictures if one is at most this old at the press.
RECENT_S = 1.0
# An on-demand snapshot reuses the newest picture if it is at most this old.
ON_DEMAND_MAX_AGE_S = 0.5
MIB = 1024 * 1024


class SnapshotError(MediaError):
    code = "snapshot_error"




# ---------------------------------------------------------------------------------------------------
# Files and retention


@dataclass
class Stored:
    guid: str
    bytes: int
    created: float  # wall clock, from the metadata (or the folder's mtime)


class SnapshotFiles:
    """The pictures on disk and their bounds. Blocking methods run in a worker thread."""

    def __init__(self, root: Path, cfg: SnapshotsConfig) -> None:
        self.root = root
        self.max_calls = cfg.max_calls
        self.max_bytes = int(cfg.max_mb * MIB)
        self.min_free = int(cfg.min_free_mb * MIB)
        self.index: collections.OrderedDict[str, Stored] = collections.OrderedDict()  # oldest first

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.index.values())

    def scan(self) -> None:
        """Read what is on disk (at start); leftovers of an interrupted write are removed."""
        private_dir(self.root)
        found = []
        for d in self.root.iterdir():
            if d.name.startswith(".tmp-"):
                shutil.rmtree(d, ignore_errors=True)
                continue
            if not d.is_dir() or not GUID_RE.match(d.name):
                continue
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
            created = d.stat().st_mtime
            try:
                created = float(json.loads((d / META).read_text())["created"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            found.append(Stored(d.name, size, created))
        found.sort(key=lambda s: s.created)
        self.index = collections.OrderedDict((s.guid, s) for s in found)

    def make_room(self, need: int) -> list[str]:
        """Delete the oldest calls' pictures until ``need`` more bytes fit every bound; returns the
        guids deleted. Raises ``SnapshotError``, deleting nothing, if they could not fit even then."""
        if need > self.max_bytes:
            raise SnapshotError(f"a call's pictures take {need} bytes, more than media.snapshots.max_mb allows")
        free, total = self._free(), self.total_bytes
        if free + total - need < self.min_free:
            raise SnapshotError(f"the disk holding {self.root} has {free // MIB} MiB free; storing {need // 1024} KiB "
                                "of pictures would leave less than media.snapshots.min_free_mb even with every "
                                "stored picture deleted; free space on the disk or lower min_free_mb")
        deleted: list[str] = []
        while self.index and (len(self.index) + 1 > self.max_calls or total + need > self.max_bytes
                              or free - need < self.min_free):
            guid, old = self.index.popitem(last=False)
            shutil.rmtree(self.root / guid, ignore_errors=True)
            deleted.append(guid)
            total -= old.bytes
            free += old.bytes
        return deleted

    def _free(self) -> int:
        return shutil.disk_usage(self.root).free

    def write(self, guid: str, files: dict[str, bytes], meta: dict[str, Any]) -> tuple[int, list[str]]:
        """Store one call's pictures atomically (a temporary folder renamed into place, fsynced)."""
        if not GUID_RE.match(guid):
            raise SnapshotError(f"{guid!r} is not a call guid")
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
        need = sum(len(b) for b in files.values()) + len(meta_bytes)
        deleted = self.make_room(need)
        tmp = self.root / f".tmp-{guid}"
        shutil.rmtree(tmp, ignore_errors=True)
        private_dir(tmp)  # a visitor's face: owner only, whatever the umask
        try:
            for name, data in [*files.items(), (META, meta_bytes)]:
                fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            final = self.root / guid
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            fsync_dir(self.root)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SnapshotError(f"cannot write the pictures of call {guid} under {self.root}: {e}") from None
        self.index[guid] = Stored(guid, need, float(meta["created"]))
        return need, deleted

    def read(self, guid: str, name: str = PRESS) -> bytes | None:
        if not GUID_RE.match(guid) or not (NAME_RE.match(name) or name == META):
            return None
        try:
            return (self.root / guid / name).read_bytes()
        except OSError:
            return None

    def meta(self, guid: str) -> dict[str, Any] | None:
        raw = self.read(guid, META)
        if raw is None:
            return None
        try:
            return json.loads(raw)  # type: ignore[no-any-return]
        except ValueError:
            return None


# ---------------------------------------------------------------------------------------------------
# Signed URLs


class UrlSigner:
    """HMAC-signed, expiring snapshot links: the backend fetches a call's pictures with the URL alone.

    The key is random, made once and kept in the store (it survives restarts, so links delivered late
    by the outbox still work); expiry is by wall clock, the only clock the backend shares.
    """

    def __init__(self, key: bytes, ttl_s: float) -> None:
        self.key = key
        self.ttl_s = ttl_s

    @staticmethod
    async def load_key(store: Store) -> bytes:
        return await store.secret_key(KEY_KV)

    def _mac(self, guid: str, exp: int) -> str:
        digest = hmac.new(self.key, f"snapshot:{guid}:{exp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def sign(self, guid: str, now_wall: float | None = None) -> tuple[str, int]:
        """The query string for ``guid``'s pictures, and its expiry (epoch seconds)."""
        exp = int((time.time() if now_wall is None else now_wall) + self.ttl_s)
        return f"exp={exp}&sig={self._mac(guid, exp)}", exp

    def check(self, guid: str, exp: str | None, sig: str | None) -> str | None:
        """None if the signature is good and current, else why not (for the error message)."""
        if not exp or not sig:
            return "missing"
        try:
            exp_i = int(exp)
        except ValueError:
            return "invalid"
        # As bytes: compare_digest raises TypeError for str with non-ASCII characters (sig=%C3%A9).
        if not hmac.compare_digest(self._mac(guid, exp_i).encode(), sig.encode("utf-8", "surrogatepass")):
            return "invalid"
        if time.time() > exp_i:
            return "expired"
        return None


# ---------------------------------------------------------------------------------------------------
# The pre-press buffer


class PrePressBuffer:
    """The last ``seconds`` of pictures, kept while the panel runs (the camera stays on for it).

    Raw cameras: one JPEG every ``1/fps`` s (encoded once, shared) and references to the last second
    of raw pictures, for the exact press picture. Pass-through cameras: the H.264 packets from the
    keyframe before the window on, decoded only at a press.
    """

    def __init__(self, jpegs: JpegFrames, seconds: float, fps: float, max_bytes: int) -> None:
        self.jpegs = jpegs
        self.seconds = seconds
        self.interval = 1.0 / fps
        self.max_bytes = max_bytes
        self._jpegs: collections.deque[Jpeg] = collections.deque()
        self._recent: collections.deque[RawFrame] = collections.deque()
        self._packets: collections.deque[EncodedFrame] = collections.deque()
        self._packet_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._encodes: set[asyncio.Task[Any]] = set()
        self._last_sample = -1e9

    def start(self) -> None:
        run = self._run_passthrough if self.jpegs.passthrough else self._run_raw
        self._task = asyncio.get_running_loop().create_task(run(), name="pre-press buffer")

    async def _run_raw(self) -> None:
        sub: Subscription[RawFrame] = self.jpegs.stream.capture.subscribe(maxsize=2, overflow="latest")
        try:
            while True:
                raw = await sub.get()
                self._recent.append(raw)
                while self._recent and raw.mono - self._recent[0].mono > RECENT_S:
                    self._recent.popleft()
                if raw.mono - self._last_sample >= self.interval * 0.95:
                    self._last_sample = raw.mono
                    task = asyncio.ensure_future(self._sample(raw))
                    self._encodes.add(task)
                    task.add_done_callback(self._encodes.discard)
        except SubscriptionClosed:
            return
        finally:
            sub.close()

    async def _sample(self, raw: RawFrame) -> None:
        try:
            jpeg = await self.jpegs.encode(raw)
        except Exception as e:
            log.warning("pre-press picture not encoded: %s", e)
            return
        self._jpegs.append(jpeg)
        total = sum(len(j.data) for j in self._jpegs)
        while self._jpegs and (jpeg.mono - self._jpegs[0].mono > self.seconds + self.interval / 2
                               or total > self.max_bytes):
            total -= len(self._jpegs.popleft().data)

    async def _run_passthrough(self) -> None:
        capture = self.jpegs.stream.capture
        sub: Subscription[EncodedFrame] = capture.subscribe(maxsize=600, overflow="resync", is_key=is_key)
        try:
            while True:
                item = await sub.get()
                self._packets.append(item)
                self._packet_bytes += item.packet.size
                self._trim_packets(item.mono)
        except SubscriptionClosed:
            return
        finally:
            sub.close()

    def _trim_packets(self, now: float) -> None:
        # Keep from the last keyframe at or before the window's start; whole GOPs go when over memory.
        keys = [i for i, p in enumerate(self._packets) if p.keyframe]
        drop = 0
        for i in keys[1:]:
            if self._packets[i].mono <= now - self.seconds:
                drop = i
        if self._packet_bytes > self.max_bytes and len(keys) > 1:
            drop = max(drop, next((i for i in keys[1:] if i > drop), drop))
        for _ in range(drop):
            self._packet_bytes -= self._packets.popleft().packet.size

    # -- at a press -----------------------------------------------------------------------------------
    def press_picture(self, press_mono: float) -> Picture | None:
        """The raw picture captured nearest before the press (raw cameras), if the buffer has it."""
        before = [r for r in self._recent if r.mono <= press_mono]
        pick = before[-1] if before else (self._recent[0] if self._recent else None)
        if pick is None or abs(pick.mono - press_mono) > RECENT_S:
            return None
        return Picture(pick.frame, pick.seq, pick.mono, pick.wall)

    async def before(self, press_mono: float) -> tuple[list[Jpeg], Picture | None]:
        """The buffered pictures from the ``seconds`` before the press (oldest first), and the press
        picture where the buffer can tell it."""
        if not self.jpegs.passthrough:
            if self._encodes:
                await asyncio.gather(*list(self._encodes), return_exceptions=True)
            press = self.press_picture(press_mono)
            end = min(press_mono, press.mono) if press is not None else press_mono
            frames = [j for j in self._jpegs if press_mono - self.seconds - self.interval / 2 <= j.mono < end]
            return frames, press
        packets = [p for p in self._packets if p.mono <= press_mono]
        first_key = next((i for i, p in enumerate(packets) if p.keyframe), None)
        if first_key is None:
            return [], None
        decoded = await self.jpegs.run(decode_gop, packets[first_key:], self.jpegs.stream.codec)
        if not decoded:
            return [], None
        press_item, press_frame = decoded[-1]
        # A stale buffer (the camera stopped delivering) does not know the press picture.
        press = (Picture(press_frame, press_item.seq, press_item.mono, press_item.wall)
                 if press_mono - press_item.mono <= RECENT_S else None)
        picks: list[Picture] = []
        next_t = press_mono - self.seconds
        for item, frame in decoded[:-1]:
            if item.mono >= next_t - self.interval / 2:
                picks.append(Picture(frame, item.seq, item.mono, item.wall))
                next_t = item.mono + self.interval
        return [await self.jpegs.encode(p) for p in picks], press

    def status(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "fps": round(1 / self.interval, 3), "jpegs": len(self._jpegs),
                "jpeg_bytes": sum(len(j.data) for j in self._jpegs), "packets": len(self._packets),
                "packet_bytes": self._packet_bytes}

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._encodes) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None


# ---------------------------------------------------------------------------------------------------
# The service


@dataclass(frozen=True)
class TakenSnapshot:
    guid: str
    width: int
    height: int
    bytes: int
    offset_ms: float
    pre_press: int
    event: CallSnapshot


class Snapshots:
    """Takes, stores, serves and signs the visitor's pictures."""

    def __init__(self, cfg: SnapshotsConfig, storage_dir: Path, jpegs: JpegFrames, journal: Journal) -> None:
        self.cfg = cfg
        self.jpegs = jpegs
        self.journal = journal
        self.files = SnapshotFiles(storage_dir / "snapshots", cfg)
        self.signer: UrlSigner | None = None
        self.prebuffer: PrePressBuffer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._io_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="snapshot-io")
        self.taken = 0
        self.failed = 0

    def reconfigure(self, cfg: SnapshotsConfig) -> None:
        """Live keys (at_press, max_calls, max_mb, min_free_mb): the next press and the next stored picture
        follow them; pictures already kept are trimmed to the new bounds when the next one is stored."""
        self.cfg = cfg
        self.files.max_calls = cfg.max_calls
        self.files.max_bytes = int(cfg.max_mb * MIB)
        self.files.min_free = int(cfg.min_free_mb * MIB)

    async def start(self) -> None:
        await self._io(self.files.scan)
        self.signer = UrlSigner(await UrlSigner.load_key(self.journal.store), self.cfg.url_ttl_s)
        if self.cfg.prebuffer_s > 0:
            self.prebuffer = PrePressBuffer(self.jpegs, self.cfg.prebuffer_s, self.cfg.prebuffer_fps,
                                            int(self.cfg.prebuffer_max_mb * MIB))
            self.prebuffer.start()

    def on_event(self, row: EventRow) -> None:
        """Journal subscriber: a committed ``call.created`` starts the press picture (in a task)."""
        if row.type != "call.created" or not self.cfg.at_press:
            return
        guid = str(row.data.get("guid"))
        task = asyncio.ensure_future(self._take_logged(guid, row.mono))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_logged(self, guid: str, press_mono: float) -> TakenSnapshot | None:
        try:
            return await self.take_for_call(guid, press_mono)
        except (MediaError, OSError) as e:
            self.failed += 1
            log.warning("no snapshot for call %s: %s", guid, e, extra={"call": guid})
            return None

    async def take_for_call(self, guid: str, press_mono: float) -> TakenSnapshot:
        """Take, store and announce the press picture of call ``guid`` (and the pre-press pictures)."""
        pre: list[Jpeg] = []
        picture: Picture | None = None
        if self.prebuffer is not None:
            pre, picture = await self.prebuffer.before(press_mono)
        if picture is None:
            picture = await self.jpegs.latest_picture(max_age_s=RECENT_S)
        jpeg = await self.jpegs.encode(picture)
        files = {PRESS: jpeg.data}
        frames: list[dict[str, Any]] = [{"name": PRESS, "taken_at": iso(jpeg.wall),
                                         "offset_ms": round((jpeg.mono - press_mono) * 1000, 1), "seq": jpeg.seq}]
        for i, j in enumerate(pre):
            name = f"pre-{i:02d}.jpg"
            files[name] = j.data
            frames.append({"name": name, "taken_at": iso(j.wall), "offset_ms": round((j.mono - press_mono) * 1000, 1),
                           "seq": j.seq})
        meta = {"guid": guid, "created": time.time(), "width": jpeg.width, "height": jpeg.height, "frames": frames}
        size, deleted = await self._io(self.files.write, guid, files, meta)
        assert self.signer is not None
        query, exp = self.signer.sign(guid)
        path = f"/api/v1/calls/{guid}/snapshot.jpg?{query}"
        event = CallSnapshot(guid=guid, url=(self.cfg.base_url or "") + path, expires_at=iso(exp),
                             taken_at=iso(jpeg.wall), offset_ms=frames[0]["offset_ms"], width=jpeg.width,
                             height=jpeg.height, bytes=len(jpeg.data), pre_press=len(pre))
        rel = f"snapshots/{guid}/{PRESS}"

        def link(tx: Tx, event_id: str) -> None:
            tx.execute("UPDATE calls SET snapshot=? WHERE guid=?", (rel, guid))
            for old in deleted:  # pictures removed by retention are no longer referenced
                tx.execute("UPDATE calls SET snapshot=NULL WHERE guid=?", (old,))

        await self.journal.record(event, key=guid, extra=link)
        self.taken += 1
        log.info("snapshot of call %s stored (%d bytes, %d pre-press, %.0f ms after the press)", guid, size, len(pre),
                 event.offset_ms, extra={"call": guid})
        return TakenSnapshot(guid, jpeg.width, jpeg.height, len(jpeg.data), event.offset_ms, len(pre), event)

    async def on_demand(self) -> Jpeg:
        """The newest picture now (shares the encode with the MJPEG viewers)."""
        return await self.jpegs.latest(max_age_s=ON_DEMAND_MAX_AGE_S)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        # Disk work has its own thread: an fsync on a slow SD card must not hold up the JPEG encoder.
        return await asyncio.get_running_loop().run_in_executor(self._io_thread, fn, *args)

    async def read(self, guid: str, name: str = PRESS) -> bytes | None:
        return await self._io(self.files.read, guid, name)

    async def listing(self, guid: str) -> dict[str, Any] | None:
        return await self._io(self.files.meta, guid)

    def status(self) -> dict[str, Any]:
        return {"taken": self.taken, "failed": self.failed, "stored_calls": len(self.files.index),
                "stored_bytes": self.files.total_bytes, "max_calls": self.files.max_calls,
                "max_bytes": self.files.max_bytes,
                "prebuffer": self.prebuffer.status() if self.prebuffer is not None else None}

    async def close(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.prebuffer is not None:
            await self.prebuffer.close()
        self._io_thread.shutdown(wait=False)
