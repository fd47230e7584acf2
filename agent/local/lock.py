"""One operation at a time per agent root (boot, restart, stop, watch actions).

An flock on a file under the root: released by the kernel if the agent dies, so a
crashed operation never blocks the next. A second caller waits a bounded time, then
refuses with a message naming what holds the lock, if that process is still alive.

The file is the agent user's alone (0600, in a directory only it can write): flock
works on a read-only descriptor, so a lock file anyone can open is a lock anyone can
hold, and a local user could keep `agent stop` from ever running.

A caller may preempt a boot (`agent watch` with a spot notice): it sends the boot
SIGTERM, which ends the boot's waits at once (`agent.deadline.cancel`) so it abandons
its launch hook and releases the lock, then takes the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from agent.deadline import Backoff, Deadline, poll
from agent.errors import AgentError
from agent.local.layout import Layout

POLL = Backoff(0.1, 1.0, 0.1)


@dataclass(frozen=True)
class Holder:
    operation: str
    pid: int
    since: float

    def alive(self) -> bool:
        """The holder's process still runs, and is an agent (a pid is reused)."""
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as handle:
                return b"agent" in handle.read()
        except OSError:
            return False

    def describe(self) -> str:
        started = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"agent {self.operation}, pid {self.pid}, since {started}"


def read_holder(fd: int) -> Holder | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode())
        return Holder(str(data["operation"]), int(data["pid"]), float(data["since"]))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _open(layout: Layout) -> int:
    layout.run.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    st = os.fstat(fd)
    if st.st_mode & 0o077:
        os.fchmod(fd, 0o600)  # a lock file an older agent left world-readable
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise AgentError(f"{layout.lock} belongs to uid {st.st_uid}, not to the agent's user; "
                         "remove it (only the agent's user may hold the agent's lock)")
    return fd


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def exclusive(layout: Layout, operation: str, wait: float = 600.0, preempt: tuple[str, ...] = (),
              say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the agent lock for `operation`, waiting at most `wait` seconds for it.
    `preempt`: operations (a boot) that are sent SIGTERM rather than waited for."""
    fd = _open(layout)
    try:
        stopped: set[int] = set()

        def attempt() -> bool:
            if _try_lock(fd):
                return True
            holder = read_holder(fd)
            if holder and holder.operation in preempt and holder.pid not in stopped and holder.alive():
                os.kill(holder.pid, signal.SIGTERM)
                stopped.add(holder.pid)
                if say is not None:
                    say(f"stopped {holder.describe()} (SIGTERM): {operation} comes first")
            return False

        if not poll(attempt, bool, Deadline(wait), POLL):
            holder = read_holder(fd)
            who = holder.describe() if holder is not None and holder.alive() else "another process"
            raise AgentError(f"{operation}: another operation is in progress ({who}); "
                             f"waited {wait:.0f}s, try again when it finishes")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"operation": operation, "pid": os.getpid(), "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)
