"""Structured logs: one JSON object per line on stderr, which journald captures as the message."""

from __future__ import annotations

import faulthandler
import json
import logging
import sys
import threading
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# uvicorn adds an ANSI-coloured copy of every message; it is noise in a JSON log.
_DROP = {"color_message"}
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROP and not key.startswith("_"):
                out[key] = value
        if record.threadName and record.threadName != "MainThread":
            out["thread"] = record.threadName
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # "<N>" lets journald set the priority from a plain stderr stream (SyslogLevelPrefix=yes).
        return f"<{priority(record.levelno)}>" + json.dumps(out, default=str)


class RateLimit(logging.Filter):
    """At most ``burst`` records of one message (logger, level, template) at once, then one every
    ``every_s``; the next record that passes says how many were dropped before it (``suppressed``).

    For loggers that write a line per remote event (uvicorn's "Invalid HTTP request received." for each
    bad request, asyncio's per-accept errors): a flood of input must not become a flood of log."""

    def __init__(self, burst: int = 10, every_s: float = 1.0, max_keys: int = 256) -> None:
        super().__init__()
        self.burst = burst
        self.every_s = every_s
        self.max_keys = max_keys
        self._buckets: dict[tuple[str, int, str], list[float]] = {}  # key -> [tokens, at, dropped]
        self._lock = threading.Lock()  # records come from helper threads too

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._buckets.pop(next(iter(self._buckets)))
                bucket = self._buckets[key] = [float(self.burst), now, 0.0]
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) / self.every_s)
            bucket[1] = now
            if bucket[0] < 1:
                bucket[2] += 1
                return False
            bucket[0] -= 1
            if bucket[2]:
                record.suppressed = int(bucket[2])
                bucket[2] = 0
        return True


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (custom levels round down to the next standard one)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("panel.thread").critical(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aioice", "aiortc", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for per_input in ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(per_input)
        logger.filters[:] = [f for f in logger.filters if not isinstance(f, RateLimit)]
        logger.addFilter(RateLimit())
    # Python warnings and crashes in helper threads go through the same structured stream...
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    # ...and when the systemd watchdog aborts a hung daemon (SIGABRT), every thread's stack lands
    # in the journal, showing where the event loop was stuck.
    if not faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr, all_threads=True)
