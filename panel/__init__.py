"""Door-station firmware for a Raspberry Pi intercom panel."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("panel")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
