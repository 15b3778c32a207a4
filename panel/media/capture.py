"""One capture per physical device, shared by every consumer, and retried when the device fails.

A ``DeviceCapture`` runs a source (camera, microphone) while anybody holds it, fans each item out to
its subscribers and keeps the latest one. When the source fails (unplugged, busy, crashed command) it
reports ``media.device_lost`` once, retries with backoff, and reports ``media.device_recovered`` when
items flow again. Consumers never see the failure as an exception: they just get nothing until the
device is back, so a call goes on without the camera rather than ending.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Literal, Protocol, TypeVar

from ..events import EventData, MediaDevice, MediaDeviceLost, MediaDeviceRecovered

log = logging.getLogger(__name__)

T = TypeVar("T")
Emit = Callable[[T], None]
HealthReport = Callable[[EventData], Any]
Overflow = Literal["latest", "drop_oldest", "resync"]


class Source(Protocol[T]):  # type: ignore[misc]
    name: str

    async def run(self, emit: Callable[[T], None]) -> None:
        """Produce items until cancelled; raise (e.g. ``DeviceError``) when the device fails."""


class SubscriptionClosed(Exception):
    pass


class Subscription(Generic[T]):
    """A consumer's bounded queue. On overflow, ``latest`` keeps the newest item only, ``drop_oldest``
    drops the oldest, and ``resync`` (encoded video) drops everything up to the next keyframe, since a
    picture that lost its predecessor cannot be decoded."""

    def __init__(self, maxsize: int, overflow: Overflow, on_close: Callable[[Subscription[T]], None] | None = None,
                 is_key: Callable[[T], bool] | None = None) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._overflow = overflow
        self._is_key = is_key
        self._waiter: asyncio.Future[None] | None = None
        self._on_close = on_close
        self.closed = False
        self.dropped = 0
        # Until the first keyframe nothing is decodable, so a resync subscription starts out waiting.
        self.waiting_for_key = overflow == "resync"
        self.on_resync: Callable[[], None] | None = None

    def put(self, item: T) -> None:
        if self.closed:
            return
        if self.waiting_for_key:
            assert self._is_key is not None
            if not self._is_key(item):
                self.dropped += 1
                return
            self.waiting_for_key = False
        if len(self._items) >= self._maxsize:
            if self._overflow == "resync":
                self.dropped += len(self._items) + 1
                self._items.clear()
                self.waiting_for_key = True
                if self.on_resync is not None:
                    self.on_resync()
                return
            self.dropped += 1
            if self._overflow == "latest":
                self._items.clear()
            else:
                self._items.popleft()
        self._items.append(item)
        self._wake()

    def put_front(self, items: list[T]) -> None:
        """Queue ``items`` ahead of anything else (a catch-up burst for a new viewer)."""
        if self.closed or not items:
            return
        self._items.extendleft(reversed(items))
        self.waiting_for_key = False
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> T:
        while not self._items:
            if self.closed:
                raise SubscriptionClosed()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._items.clear()
        self._wake()
        if self._on_close is not None:
            self._on_close(self)


class Fanout(Generic[T]):
    """The feeds of one shared stream and the task that fills them, which runs only while somebody is
    subscribed (the camera's encoded stream, the encoded microphone)."""

    def __init__(self, pump: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self.feeds: list[Subscription[T]] = []
        self._pump = pump
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def add(self, feed: Subscription[T]) -> Subscription[T]:
        self.feeds.append(feed)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pump(), name=self._name)
        return feed

    def remove(self, feed: Subscription[T]) -> None:
        if feed in self.feeds:
            self.feeds.remove(feed)
        if not self.feeds and self._task is not None:
            self._task.cancel()
            self._task = None

    def put(self, item: T) -> None:
        for feed in list(self.feeds):
            feed.put(item)

    async def close(self) -> None:
        for feed in list(self.feeds):
            feed.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class DeviceCapture(Generic[T]):
    """Runs ``make_source()`` while held; shares its items; reports and retries failures."""

    def __init__(self, device: MediaDevice, name: str, make_source: Callable[[], Source[T]], report: HealthReport,
                 *, linger_s: float = 0.0, backoff_min_s: float = 1.0, backoff_max_s: float = 30.0) -> None:
        self.device = device
        self.name = name
        self._make_source = make_source
        self._report = report
        self.linger_s = linger_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._holders = 0
        self._subs: list[Subscription[T]] = []
        self._task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.latest: T | None = None
        self.latest_mono: float | None = None
        self.state: Literal["stopped", "starting", "running", "lost"] = "stopped"
        self.last_error: str | None = None
        self.items = 0
        self._lost_since: float | None = None
        self.source: Source[T] | None = None
        self._closed = False

    # -- holding -----------------------------------------------------------------------------------------
    def acquire(self) -> None:
        if self._closed:
            return
        self._holders += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._task is None or self._task.done():
            self.state = "starting"
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"capture:{self.device}")

    def release(self) -> None:
        self._holders = max(0, self._holders - 1)
        if self._holders == 0 and self._task is not None:
            if self.linger_s <= 0:
                self._stop_task()
            elif self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(self.linger_s, self._stop_task)

    def subscribe(self, *, maxsize: int = 1, overflow: Overflow = "latest",
                  is_key: Callable[[T], bool] | None = None) -> Subscription[T]:
        sub: Subscription[T] = Subscription(maxsize, overflow, self._unsubscribe, is_key)
        self._subs.append(sub)
        self.acquire()
        return sub

    def _unsubscribe(self, sub: Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self.release()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _stop_task(self) -> None:
        self._linger = None
        if self._holders == 0 and self._task is not None:
            self._task.cancel()
            self._task = None
            self.state = "stopped"
            self.source = None

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.close()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.state = "stopped"

    # -- running -----------------------------------------------------------------------------------------
    def _emit(self, item: T) -> None:
        self.latest = item
        self.latest_mono = time.monotonic()
        self.items += 1
        if self.state != "running":
            self.state = "running"
            if self._lost_since is not None:
                down = time.monotonic() - self._lost_since
                self._lost_since = None
                log.warning("%s %s works again after %.1f s", self.device, self.name, down)
                self._report(MediaDeviceRecovered(device=self.device, name=self.name, down_s=round(down, 3)))
        for sub in list(self._subs):
            sub.put(item)

    async def _run(self) -> None:
        backoff = self.backoff_min_s
        while True:
            self.source = source = self._make_source()
            started_items = self.items
            try:
                await source.run(self._emit)
                raise EOFError("the source ended")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                error = str(e) or type(e).__name__
            if self.items > started_items:
                backoff = self.backoff_min_s  # it worked for a while: retry soon
            self.last_error = error
            if self._lost_since is None:
                self._lost_since = time.monotonic()
                log.error("%s %s failed: %s; retrying in %.1f s", self.device, self.name, error, backoff)
                self._report(MediaDeviceLost(device=self.device, name=self.name, error=error[:500],
                                             retry_s=round(backoff, 3)))
            else:
                log.info("%s %s still failing: %s; retrying in %.1f s", self.device, self.name, error, backoff)
            self.state = "lost"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def status(self) -> dict[str, Any]:
        return {"device": self.device, "name": self.name, "state": self.state, "holders": self._holders,
                "subscribers": len(self._subs), "items": self.items, "last_error": self.last_error}


async def run_in_thread(work: Callable[[threading.Event, Callable[[T], None]], None], emit: Callable[[T], None],
                        name: str) -> None:
    """Run a blocking producer in its own thread; its items reach ``emit`` on the event loop.

    On cancellation the thread is told to stop and is not waited for: a read blocked on a vanished
    device may never return, and the loop must not hang on it.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    stop = threading.Event()

    def deliver(item: T) -> None:
        if not stop.is_set():
            loop.call_soon_threadsafe(_deliver, item)

    def _deliver(item: T) -> None:
        if not stop.is_set():
            emit(item)

    def finish(exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def target() -> None:
        exc: BaseException | None = None
        try:
            work(stop, deliver)
        except BaseException as e:  # handed to the loop, which decides
            exc = e
        try:
            loop.call_soon_threadsafe(finish, exc)
        except RuntimeError:
            pass  # the loop is gone: nobody is waiting any more

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        await done
    finally:
        stop.set()

