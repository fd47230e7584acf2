"""One operation at a time per agent root (boot, restart, stop, watch actions).

An flock on a file under the root: released by the kernel if the agent dies, so a
crashed operation never blocks the next. A second caller waits a bounded time, then
refuses with a message naming what holds the lock.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator

from agent.deadline import Backoff, Deadline, poll
from agent.errors import AgentError
from agent.local.layout import Layout


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def exclusive(layout: Layout, operation: str, wait: float = 600.0) -> Iterator[None]:
    layout.run.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not poll(lambda: _try_lock(fd), bool, Deadline(wait), Backoff(0.1, 1.0, 0.1)):
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another agent command"
            raise AgentError(f"{operation}: another operation is in progress ({holder}); "
                             f"waited {wait:.0f}s, try again when it finishes")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"agent {operation}, pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
