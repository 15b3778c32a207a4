"""A FUSE file system that loses, at a simulated power cut, every write that was not fsynced.

The same idea as LazyFS (the file system Jepsen uses to test databases): file contents live in memory in two
layers, what the programs see (``current``) and what a disk would still hold after a power cut
(``durable``). ``write`` and ``truncate`` change ``current`` only; ``fsync``/``fdatasync`` make a file's
``current`` durable; a ``cut`` throws ``current`` away and goes back to ``durable`` for every file.
Names (create, rename, unlink, mkdir) are durable at once, as LazyFS keeps them by default: the test is about
lost data, which is what SQLite's ``synchronous=FULL`` and the panel's write-then-act order must survive.

Run as a process, in the foreground: ``python -m tests.lazyfs MOUNTPOINT``. It prints ``ready`` on stdout once
the mount answers, then takes one command a line on stdin and answers one line on stdout:
``cut`` -> ``cut <bytes lost>``; ``stats`` -> ``stats <fsyncs> <bytes unsynced>``. Closing stdin unmounts.
Requests are served on one thread (``nothreads``) and a cut takes the same mutex: a request a killed
process already sent is finished before the cut, never half-applied across it.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import mfusepy as fuse  # type: ignore[import-untyped]


@dataclass
class Node:
    mode: int
    current: bytearray = field(default_factory=bytearray)
    durable: bytearray = field(default_factory=bytearray)
    dirty: bool = False  # current differs from durable
    mtime: int = field(default_factory=time.time_ns)
    children: set[str] | None = None  # a directory's names

    @property
    def is_dir(self) -> bool:
        return self.children is not None


class LazyFS(fuse.Operations):  # type: ignore[misc]
    use_ns = True  # times in nanoseconds

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.nodes: dict[str, Node] = {"/": Node(stat.S_IFDIR | 0o755, children=set())}
        self.fsyncs = 0
        self.handles = 0

    # -- control ----------------------------------------------------------------------------------
    def cut(self) -> int:
        with self.mutex:
            lost = 0
            for node in self.nodes.values():
                if node.dirty:
                    lost += max(len(node.current), len(node.durable))
                    node.current = bytearray(node.durable)
                    node.dirty = False
            return lost

    def unsynced(self) -> int:
        with self.mutex:
            return sum(len(n.current) for n in self.nodes.values() if n.dirty)

    # -- helpers ----------------------------------------------------------------------------------
    def _node(self, path: str) -> Node:
        node = self.nodes.get(path)
        if node is None:
            raise fuse.FuseOSError(errno.ENOENT)
        return node

    def _parent(self, path: str) -> Node:
        parent = self._node(os.path.dirname(path))
        if not parent.is_dir:
            raise fuse.FuseOSError(errno.ENOTDIR)
        return parent

    def _add(self, path: str, node: Node) -> None:
        parent = self._parent(path)
        if path in self.nodes:
            raise fuse.FuseOSError(errno.EEXIST)
        assert parent.children is not None
        parent.children.add(os.path.basename(path))
        self.nodes[path] = node

    def _remove(self, path: str) -> Node:
        node = self._node(path)
        parent = self._parent(path)
        assert parent.children is not None
        parent.children.discard(os.path.basename(path))
        del self.nodes[path]
        return node

    def init(self, path: str) -> None:
        # The kernel sends FUSE_INIT once the mount is in place: from here on the mount point is this file system.
        print("ready", flush=True)

    # -- metadata ---------------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self.mutex:
            node = self._node(path)
            return {"st_mode": node.mode, "st_nlink": 2 if node.is_dir else 1, "st_size": len(node.current),
                    "st_uid": os.getuid(), "st_gid": os.getgid(), "st_mtime": node.mtime,
                    "st_atime": node.mtime, "st_ctime": node.mtime}

    def readdir(self, path: str, fh: int) -> list[str]:
        with self.mutex:
            node = self._node(path)
            return [".", "..", *sorted(node.children or ())]

    def mkdir(self, path: str, mode: int) -> int:
        with self.mutex:
            self._add(path, Node(stat.S_IFDIR | (mode & 0o7777), children=set()))
        return 0

    def rmdir(self, path: str) -> int:
        with self.mutex:
            if self._node(path).children:
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            self._remove(path)
        return 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self.mutex:
            self._add(path, Node(stat.S_IFREG | (mode & 0o7777)))
            self.handles += 1
            return self.handles

    def open(self, path: str, flags: int) -> int:
        with self.mutex:
            self._node(path)
            self.handles += 1
            return self.handles

    def unlink(self, path: str) -> int:
        with self.mutex:
            self._remove(path)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            node = self._remove(old)
            if new in self.nodes:
                self._remove(new)
            self._add(new, node)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        with self.mutex:
            node = self._node(path)
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        with self.mutex:
            self._node(path).mtime = times[1] if times else time.time_ns()
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19, "f_bavail": 1 << 19,
                "f_files": 1 << 16, "f_ffree": 1 << 15, "f_namemax": 255}

    # -- data: lazy until fsync -------------------------------------------------------------------
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self.mutex:
            return bytes(self._node(path).current[offset:offset + size])

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self.mutex:
            node = self._node(path)
            buf = node.current
            if offset > len(buf):
                buf.extend(bytes(offset - len(buf)))
            buf[offset:offset + len(data)] = data
            node.dirty = True
            node.mtime = time.time_ns()
            return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self.mutex:
            node = self._node(path)
            if length < len(node.current):
                del node.current[length:]
            else:
                node.current.extend(bytes(length - len(node.current)))
            node.dirty = True
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            node = self._node(path)
            if node.dirty:
                node.durable = bytearray(node.current)
                node.dirty = False
            self.fsyncs += 1
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # names are durable at once (see the module's docstring)

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() is not a barrier: only fsync is

    def release(self, path: str, fh: int) -> int:
        return 0


def _control(fs: LazyFS, mountpoint: str) -> None:
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "cut":
            reply = f"cut {fs.cut()}"
        elif cmd == "stats":
            reply = f"stats {fs.fsyncs} {fs.unsynced()}"
        else:
            reply = f"error unknown command {cmd!r}"
        print(reply, flush=True)
    subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)


def main() -> None:
    mountpoint = sys.argv[1]
    fs = LazyFS()
    threading.Thread(target=_control, args=(fs, mountpoint), daemon=True).start()
    # attr/entry timeouts 0: after a cut the kernel must not answer from a cached (pre-cut) size. Without
    # kernel_cache the page cache is dropped at every open, so a new process reads what this file system holds.
    fuse.FUSE(fs, mountpoint, foreground=True, nothreads=True, attr_timeout=0, entry_timeout=0,
              negative_timeout=0)


if __name__ == "__main__":
    main()
