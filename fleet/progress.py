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
        with self._lock:
            print(f"[{time.monotonic() - self.started:6.1f}s] {line}", file=self.stream or sys.stderr, flush=True)

    def changed(self, key: str, line: str) -> None:
        """Say `line` unless it is what was last said for `key` (a wait's state)."""
        if self._last.get(key) != line:
            self._last[key] = line
            self(line)
