"""Progress on stderr for every long step, like the Heroku and Kamal CLIs: one line per
step and per change, stamped with the seconds since the command started, so a CI log
shows where the time went. stdout is kept for results (and `--json`)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None):
        self.started = time.monotonic()
        self.stream = stream
        self._lock = threading.Lock()
        self._last: dict[str, str] = {}

    def __call__(self, line: str) -> None:
        """Say `line`, unless it repeats what was last said of the same thing (the text
        before its first colon, a service's name for most): a wait that polls says each
        change once, not each poll."""
        subject = line.split(":", 1)[0]
        with self._lock:
            if self._last.get(subject) == line:
                return
            self._last[subject] = line
            print(f"[{time.monotonic() - self.started:6.1f}s] {line}", file=self.stream or sys.stderr, flush=True)
