"""The process's file descriptors: its limit, raised as far as allowed, and how many are in use.

Every socket, database file, pipe and device is one; when they run out, everything that opens
something fails at once (the store, webhooks, MQTT, snapshots), so the API keeps below a budget.
"""

from __future__ import annotations

import os
import resource


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd's LimitNOFILE sets both; a panel run by
    hand starts at the shell's 1024); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep what we have: the budget below is computed from it
    return soft


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_fds() -> int:
    """Descriptors open now (Linux; elsewhere a guess that errs on the safe side)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return 64
