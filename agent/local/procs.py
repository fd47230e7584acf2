"""What /proc says about a process: enough to know it is the one we mean.

A pid alone does not name a process for long: once it exits, its number is handed to
the next one. A process is named here by its `Identity`: the machine's boot id, its
pid and its start time (clock ticks since boot, from /proc/PID/stat). A pid file that
records an identity can never make the agent signal a stranger that reused the pid,
nor, after a reboot, a process that happens to have the same number.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat the agent uses."""

    pid: int
    state: str        # R, S, D, Z, T...
    pgrp: int
    session: int
    starttime: int    # clock ticks after boot

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def stat(pid: int) -> Stat | None:
    """/proc/PID/stat, or None when there is no such process (or it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        # the command name (field 2) may hold spaces and parentheses: split after the last ")"
        fields = data.rsplit(b")", 1)[1].split()
        return Stat(pid, fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None


def started_at(pid: int) -> float | None:
    """When `pid` started, in seconds on CLOCK_BOOTTIME (the clock /proc counts in)."""
    found = stat(pid)
    return found.starttime / TICKS if found is not None else None


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id() -> str:
    try:
        with open(BOOT_ID_FILE) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def all_stats() -> Iterator[Stat]:
    """Every process of the machine (those that vanish while we look are skipped)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = stat(int(entry.name))
            if found is not None:
                yield found


def environ_has(pid: int, entry: bytes) -> bool:
    """True when the environment `pid` was started with holds `entry` (b"KEY=value")."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return entry in handle.read().split(b"\0")
    except OSError:
        return False


@dataclass(frozen=True)
class Identity:
    """One process, for as long as the machine runs (see the module docstring)."""

    pid: int
    starttime: int
    boot_id: str

    @classmethod
    def of(cls, pid: int) -> Identity | None:
        found = stat(pid)
        return cls(pid, found.starttime, boot_id()) if found is not None else None

    def current(self) -> Stat | None:
        """The process, if it is still this one (a zombie included); else None."""
        if self.boot_id != boot_id():
            return None
        found = stat(self.pid)
        return found if found is not None and found.starttime == self.starttime else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Identity:
        """Raises KeyError, TypeError or ValueError for anything the agent did not write."""
        return cls(int(data["pid"]), int(data["starttime"]), str(data["boot_id"]))
