"""Structured logs: one JSON object per line on stderr, which journald captures as the message.

No secret reaches a log line: the one handler redacts, in the message, every extra field and every
traceback, what a secret looks like (signed URLs' ``sig=``, tokens in a query, ``Authorization``
values, passwords in a URL, the panel's token formats, ``whsec_`` keys) and every secret value the
panel registered (``redact_values``: the secrets file). Call sites do not log secrets either; this is
the net under them, for libraries' messages and for exceptions that quote a URL.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# uvicorn adds an ANSI-coloured copy of every message; it is noise in a JSON log.
_DROP = {"color_message"}
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


REDACTED = "[redacted]"
# Query parameters that carry a credential (a signed snapshot URL's sig, a webhook URL's token, ...)
_QUERY = re.compile(r"(?i)([?&;](?:sig|signature|token|access_token|auth|key|api_key|apikey|secret|password|passwd|pwd"
                    r"|credential|session)=)[^&#\s\"'<>\\]+")
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (_QUERY, r"\1" + REDACTED),
    # an Authorization value (capitalised as in the header, so prose like "basic checks" stays)
    (re.compile(r"\b(Bearer|Basic)( +)[A-Za-z0-9._~+/=-]{8,}"), r"\1\2" + REDACTED),
    (re.compile(r"(://[^/\s:@]+:)[^@/\s]+@"), r"\1" + REDACTED + "@"),  # user:password@host
    # the panel's own credentials: API tokens, media tokens, link subscriptions, call links
    (re.compile(r"\b(pnl|pmt|cls)_[A-Za-z0-9_-]{6,}"), r"\1_" + REDACTED),
    (re.compile(r"\bcl1\.[A-Za-z0-9_-]+\.[0-9A-Za-z-]+\.[0-9]+\.[A-Za-z0-9_=-]+"), "cl1." + REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{4,}"), "whsec_" + REDACTED),
]
_values: set[str] = set()
_MIN_VALUE = 6  # shorter "secrets" would redact ordinary words


def redact_values(values: Iterable[str | None]) -> None:
    """Register secret values (the secrets file's) that must never appear in a log line, whatever their form."""
    _values.update(v for v in values if v and len(v) >= _MIN_VALUE)


def redact(text: str) -> str:
    """``text`` with every secret-looking part and every registered secret replaced by [redacted]."""
    for value in sorted(_values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))  # what json.dumps(default=str) would print


class RedactSecrets(logging.Filter):
    """On the handler, so every record passes it, whichever logger (ours, uvicorn's, a library's) made it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = redact(record.getMessage())
        except Exception:  # a broken format string: keep the raw text, still redacted
            record.msg = redact(f"{record.msg} {record.args!r}")
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


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
        if record.exc_text or record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
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


def setup_logging(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactSecrets())
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
