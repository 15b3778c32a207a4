"""The platform under every subsystem: config, store, journal, clock, GPIO factory, supervisor,
systemd notify, logs, files, system info, retention and factory reset.
"""

from . import _sysinfo as sysinfo
from ._clock import Clock, FakeClock, LoopClock, TimerHandle, iso8601
from ._component import BaseComponent, Component, Hooks, Lifecycle, StopReason
from ._config import _SLUG as SLUG_PATTERN
from ._config import (
    BOARD_TO_BCM,
    BOOT_PULLED_UP,
    FIXED_PULLUP_PINS,
    RESERVED_PINS,
    AccessConfig,
    ApiConfig,
    Apply,
    ButtonConfig,
    Config,
    IceServerConfig,
    InputConfig,
    KeypadConfig,
    LightConfig,
    LinksConfig,
    MediaConfig,
    MjpegConfig,
    OsdpConfig,
    PanelInfo,
    RelayConfig,
    SecretsConfig,
    SnapshotsConfig,
    StorageConfig,
    TonesConfig,
    UpdateConfig,
    VideoConfig,
    declared_apply,
    format_validation_errors,
    key_apply,
    leaf_keys,
    load_config,
    parse_config,
    parse_pin,
    resolve_paths,
)
from ._config_service import ConfigChange, ConfigService, Reconfigure
from ._fds import fd_limit, open_fds, raise_fd_limit
from ._files import fsync_dir, write_atomic
from ._gpio import Hardware, make_pin_factory
from ._journal import Extra, Journal
from ._logs import RateLimit as LogRateLimit
from ._logs import setup_logging
from ._reset import factory_reset, lock_storage, undelivered
from ._retention import keep_history_bounded, prune
from ._sdnotify import Notifier, feed_watchdog
from ._selftest import Row as SelftestRow
from ._selftest import check_storage, format_table, run_selftest
from ._store import MIGRATIONS, AccessRow, EventRow, Store, Tx
from ._supervisor import Supervisor
from ._sysinfo import addresses
from ._sysinfo import snapshot as system_snapshot
from ._tasks import Background

__all__ = [
    "AccessConfig",
    "AccessRow",
    "ApiConfig",
    "addresses",
    "Apply",
    "Background",
    "BaseComponent",
    "BOARD_TO_BCM",
    "BOOT_PULLED_UP",
    "ButtonConfig",
    "check_storage",
    "Clock",
    "Component",
    "Config",
    "ConfigChange",
    "ConfigService",
    "declared_apply",
    "EventRow",
    "Extra",
    "factory_reset",
    "FakeClock",
    "fd_limit",
    "feed_watchdog",
    "FIXED_PULLUP_PINS",
    "format_table",
    "format_validation_errors",
    "fsync_dir",
    "Hardware",
    "Hooks",
    "IceServerConfig",
    "InputConfig",
    "iso8601",
    "Journal",
    "keep_history_bounded",
    "key_apply",
    "KeypadConfig",
    "leaf_keys",
    "Lifecycle",
    "LightConfig",
    "LinksConfig",
    "load_config",
    "lock_storage",
    "LogRateLimit",
    "LoopClock",
    "make_pin_factory",
    "MediaConfig",
    "MIGRATIONS",
    "MjpegConfig",
    "Notifier",
    "open_fds",
    "OsdpConfig",
    "PanelInfo",
    "parse_config",
    "parse_pin",
    "prune",
    "raise_fd_limit",
    "Reconfigure",
    "RelayConfig",
    "RESERVED_PINS",
    "resolve_paths",
    "run_selftest",
    "SecretsConfig",
    "SelftestRow",
    "setup_logging",
    "SLUG_PATTERN",
    "SnapshotsConfig",
    "StopReason",
    "StorageConfig",
    "Store",
    "Supervisor",
    "sysinfo",
    "system_snapshot",
    "TimerHandle",
    "TonesConfig",
    "Tx",
    "undelivered",
    "UpdateConfig",
    "VideoConfig",
    "write_atomic",
]
