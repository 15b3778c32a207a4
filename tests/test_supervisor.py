"""The supervisor: restart with backoff, fail loudly on a crash loop, stop in reverse order."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from panel.platform import Background, Supervisor

from .eventually import eventually

pytestmark = pytest.mark.timeout(30)


class Boom(RuntimeError):
    pass


async def test_a_crashing_component_is_restarted_with_growing_backoff() -> None:
    sup = Supervisor()
    starts: list[float] = []
    forever = asyncio.Event()

    async def flaky() -> None:
        starts.append(time.monotonic())
        if len(starts) <= 4:
            raise Boom(f"crash {len(starts)}")
        await forever.wait()

    sup.start("flaky", flaky, max_restarts=5, window_s=60, backoff_s=0.02, max_backoff_s=5)
    await eventually(lambda: len(starts) == 5, 5, "five starts")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Backoff doubles from 0.02 s with +-50 % jitter: each wait is at least half its nominal value.
    for i, gap in enumerate(gaps):
        assert gap >= 0.02 * 2 ** i * 0.5, (i, gaps)
    assert gaps[3] > gaps[0], gaps
    status = sup.status()["flaky"]
    assert status["state"] == "running" and status["restarts"] == 4 and status["crashes"] == 4
    assert status["last_error"] == "Boom: crash 4"
    assert not sup.failed.is_set() and sup.failure is None
    await sup.stop()
    assert sup.status()["flaky"]["state"] == "stopped"


async def test_too_many_crashes_within_the_window_is_fatal_and_names_the_component(
        caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor()
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise Boom("the broker certificate is unreadable")

    async def healthy() -> None:
        await asyncio.Event().wait()

    sup.start("healthy", healthy)
    with caplog.at_level(logging.ERROR, logger="panel.platform._supervisor"):
        sup.start("mqtt", broken, max_restarts=3, window_s=60, backoff_s=0.01)
        await asyncio.wait_for(sup.failed.wait(), 5)
    assert calls == 4  # the first run and three restarts
    assert sup.failure is not None
    assert sup.failure.startswith("component mqtt failed 4 times in 60 s")
    assert "Boom: the broker certificate is unreadable" in sup.failure
    assert sup.status()["mqtt"]["state"] == "failed"
    assert sup.status()["healthy"]["state"] == "running", "one component's failure stops nothing by itself"
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "mqtt" in critical[0].getMessage()
    assert sum(r.levelno == logging.ERROR for r in caplog.records) == 3
    await sup.stop()


async def test_crashes_spread_over_more_than_the_window_are_not_a_crash_loop() -> None:
    sup = Supervisor()
    starts: list[float] = []

    async def occasionally() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(0.12)  # runs for longer than the window, then crashes
        raise Boom("rare")

    sup.start("rare", occasionally, max_restarts=1, window_s=0.1, backoff_s=0.01)
    await eventually(lambda: len(starts) >= 5, 5, "five starts")
    assert not sup.failed.is_set(), sup.failure
    # A crash after a long healthy run starts the backoff afresh: no gap grew past the first backoff.
    assert max(b - a - 0.12 for a, b in itertools.pairwise(starts)) < 0.1
    await sup.stop()


async def test_stop_cancels_in_reverse_start_order_within_its_budget() -> None:
    sup = Supervisor()
    cancelled: list[str] = []

    started: list[str] = []

    def component(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            started.append(name)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(name)
                raise
        return run

    async def stubborn() -> None:
        started.append("stubborn")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("stubborn")
        await asyncio.sleep(1.0)  # ignores the cancellation for a while

    for name in ("store", "door", "api"):
        sup.start(name, component(name))
    sup.start("stubborn", stubborn)
    await eventually(lambda: len(started) == 4, 5, "every component running")
    t0 = time.monotonic()
    await sup.stop(timeout_s=0.2)
    assert time.monotonic() - t0 < 0.8
    assert cancelled == ["stubborn", "api", "door", "store"]
    assert [sup.status()[n]["state"] for n in ("store", "door", "api")] == ["stopped"] * 3


async def test_a_name_is_supervised_once() -> None:
    sup = Supervisor()

    async def idle() -> None:
        await asyncio.Event().wait()

    sup.start("api", idle)
    with pytest.raises(ValueError, match="already supervised"):
        sup.start("api", idle)
    await sup.stop()


async def test_a_component_that_returns_is_finished_not_restarted() -> None:
    sup = Supervisor()
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    sup.start("once", once)
    await eventually(lambda: sup.status()["once"]["state"] == "finished", 5, "the component finished")
    await asyncio.sleep(0.05)  # a window in which it may not be restarted
    assert runs == 1 and not sup.failed.is_set()


async def test_stop_keeps_to_its_total_budget_whatever_the_components_do() -> None:
    sup = Supervisor()

    started: list[str] = []

    async def deaf() -> None:
        started.append("deaf")
        while True:
            try:
                await asyncio.sleep(10)  # a component that runs until cancelled...
            except asyncio.CancelledError:
                await asyncio.sleep(0.6)  # ...and then takes its time to stop
                return

    for name in ("a", "b", "c"):
        sup.start(name, deaf)
    await eventually(lambda: len(started) == 3, 5, "every component running")
    t0 = time.monotonic()
    await sup.stop(timeout_s=0.5, total_s=0.3)
    assert time.monotonic() - t0 < 0.6  # not 3 x 0.5 s
    for comp in sup.tasks:
        assert comp.task is not None
        comp.task.cancel()
    await asyncio.gather(*(c.task for c in sup.tasks if c.task), return_exceptions=True)


async def test_background_tasks_are_kept_until_done_failures_logged_and_awaitable(
        caplog: pytest.LogCaptureFixture) -> None:
    background = Background("door")
    release = asyncio.Event()
    finished: list[str] = []

    async def unlock() -> None:
        await release.wait()
        finished.append("unlock")

    async def broken() -> None:
        raise Boom("no relay")

    with caplog.at_level(logging.ERROR, logger="panel.platform._tasks"):
        background.spawn(unlock(), "exit button unlock")
        failing = background.spawn(broken(), "a broken thing")
        await asyncio.wait([failing])
        assert len(background) == 1  # the finished one is let go, the waiting one held
        assert [(r.getMessage(), type(r.exc_info[1])) for r in caplog.records if r.exc_info] == [
            ("door: a broken thing failed", Boom)]
        release.set()
        await background.wait()
    assert finished == ["unlock"] and len(background) == 0
