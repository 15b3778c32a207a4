"""The platform under every subsystem: config, store, journal, clock, GPIO factory, supervisor,
systemd notify, logs, files, system info, retention and factory reset.
"""


from ._component import BaseComponent, Component, Hooks, Lifecycle, StopReason
from ._clock import Clock, FakeClock, LoopClock, TimerHandle
from ._config import (
    BOARD_TO_BCM,
    ButtonConfig,
    Config,
    IceServerConfig,
    InputConfig,
    LightConfig,
    LinksConfig,
    MediaConfig,
    MjpegConfig,
    PanelInfo,
    RelayConfig,
    SecretsConfig,
    SnapshotsConfig,
    StorageConfig,
    TonesConfig,
    UpdateConfig,
    VideoConfig,
    format_validation_errors,
    load_config,
    parse_config,
    parse_pin,
    resolve_paths,
)
from ._files import fsync_dir, write_atomic
from ._gpio import Hardware, make_pin_factory
from ._journal import Extra, Journal
from ._logs import setup_logging
from ._reset import factory_reset, lock_storage, undelivered
from ._retention import keep_history_bounded, prune
from ._sdnotify import Notifier, feed_watchdog
from ._selftest import format_table, run_selftest
from ._store import MIGRATIONS, AccessRow, EventRow, Store, Tx
from ._supervisor import Supervisor
from ._sysinfo import addresses

__all__ = [
    "BaseComponent",
    "Component",
    "Hooks",
    "Lifecycle",
    "StopReason",
    "AccessRow",
    "BOARD_TO_BCM",
    "ButtonConfig",
    "Clock",
    "Config",
    "EventRow",
    "Extra",
    "FakeClock",
    "Hardware",
    "IceServerConfig",
    "InputConfig",
    "Journal",
    "LightConfig",
    "LinksConfig",
    "LoopClock",
    "MIGRATIONS",
    "MediaConfig",
    "MjpegConfig",
    "Notifier",
    "PanelInfo",
    "RelayConfig",
    "SecretsConfig",
    "SnapshotsConfig",
    "StorageConfig",
    "Store",
    "Supervisor",
    "TimerHandle",
    "TonesConfig",
    "Tx",
    "UpdateConfig",
    "VideoConfig",
    "addresses",
    "factory_reset",
    "feed_watchdog",
    "format_table",
    "format_validation_errors",
    "fsync_dir",
    "keep_history_bounded",
    "load_config",
    "lock_storage",
    "make_pin_factory",
    "parse_config",
    "parse_pin",
    "prune",
    "resolve_paths",
    "run_selftest",
    "setup_logging",
    "undelivered",
    "write_atomic",
]
