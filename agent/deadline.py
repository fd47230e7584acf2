"""Deadlines, and the one polling loop the agent's waits for a state go through.

Waiting is where an agent hangs a boot or misses a spot notice, so a wait for a state
(a program ready, a target healthy or drained, a lock free, a process gone) has one
shape: a `Deadline` fixed when the wait starts (a total, not a per-try timeout), a
`Backoff` between tries, and `poll`, which stops at the first answer that is done, or
at the deadline with the last answer. The caller decides what "not done in time"
means. Waits outside `poll`: the heartbeat thread's pause (`agent.aws.lifecycle`), the
end of a release, which must finish even after a cancel (`agent.local.release`), and
the commands the agent runs to their end (a repo's build, initdb, psql).

The one exception `poll` raises of its own is `Cancelled` (what `attempt` raises goes
through): SIGTERM (systemd stopping the unit, or `agent watch` taking over a boot for a
spot notice) calls `cancel`, and every `poll` and `Deadline.sleep` in every thread ends
at once, so a boot gives up in seconds, not after its slowest readiness timeout, and
still completes its lifecycle hook with ABANDON.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from agent.errors import AgentError

T = TypeVar("T")
_cancelled = threading.Event()
_reason = ["cancelled"]


class Cancelled(AgentError):
    """The process was asked to stop (SIGTERM) while it waited."""


def cancel(reason: str) -> None:
    """End every wait of this process, now and from now on (see the module docstring).
    Safe to call from a signal handler: it only sets an event."""
    _reason[0] = reason
    _cancelled.set()


def check_cancelled() -> None:
    if _cancelled.is_set():
        raise Cancelled(_reason[0])


@contextmanager
def heard() -> Iterator[None]:
    """Inside: waits run again, though the process was cancelled (the cleanup that
    follows a cancellation, which waits for what it undoes); after: still cancelled."""
    was = _cancelled.is_set()
    _cancelled.clear()
    try:
        yield
    finally:
        if was:
            _cancelled.set()


class Deadline:
    """A point in time.monotonic(), `seconds` from when it is made."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = time.monotonic()
        self.at = self.started + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, but never past the deadline; Cancelled if cancelled meanwhile."""
        if _cancelled.wait(max(0.0, min(seconds, self.remaining()))):
            check_cancelled()


@dataclass(frozen=True)
class Backoff:
    """Pauses between tries: `first`, then each `factor` times longer, at most `cap`.
    Quick at first (most waits end soon), gentle on what takes long."""

    first: float = 0.05
    factor: float = 1.5
    cap: float = 0.5

    def pauses(self) -> "_Pauses":
        return _Pauses(self)


class _Pauses:
    def __init__(self, backoff: Backoff):
        self.backoff, self.current = backoff, backoff.first

    def next(self) -> float:
        pause = self.current
        self.current = min(self.current * self.backoff.factor, self.backoff.cap)
        return pause


EVERY_SECOND = Backoff(1.0, 1.0, 1.0)


def poll(attempt: Callable[[], T], done: Callable[[T], bool], deadline: Deadline,
         backoff: Backoff = Backoff(), hint: Callable[[T], float | None] = lambda _: None) -> T:
    """Call `attempt` until `done(answer)` or the deadline; return the last answer.

    `attempt` is always called at least once, and once more at the deadline if the
    pause before it would have crossed it, so a slow start is not cut short by the
    rounding of a pause. `hint(answer)` may say when the answer is known to change
    (a start timer), to wake exactly then instead of after the next pause.
    """
    pauses = backoff.pauses()
    while True:
        check_cancelled()
        answer = attempt()
        if done(answer) or deadline.expired():
            return answer
        pause = pauses.next()
        known = hint(answer)
        if known is not None:
            pause = min(pause, max(0.0, known))
        deadline.sleep(pause)
