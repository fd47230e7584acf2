"""HTTP load with wrk against loopback, counted precisely enough to prove "no request lost".

:func:`start_load` runs ``wrk -t 2 -c N -d Ds --timeout 10s --latency -s count.lua URL``
as a child process and returns a :class:`LoadHandle`; :func:`run_load` waits for it.
Every run is bounded: wrk stops by itself after ``duration_s`` (at most
``MAX_DURATION_S``), ``connections`` is at most ``MAX_CONNECTIONS``, and ``result()``
kills wrk if it outlives its duration by ``grace_s``. Only ``http://127.0.0.1`` URLs
are accepted.

What wrk 4.1 prints (the human part), and what is taken from it::

    Running 5s test @ http://127.0.0.1:41234/slow?ms=200
      2 threads and 8 connections
      Thread Stats   Avg      Stdev     Max   +/- Stdev
        Latency   201.90ms    1.20ms 208.11ms   71.43%
        Req/Sec    19.72      2.46    20.00     94.00%
      ...
      196 requests in 5.01s, 32.54KB read            <- requests, duration
      Socket errors: connect 0, read 3, write 0, timeout 0   <- only when one is non-zero
      Non-2xx or 3xx responses: 12                   <- only when non-zero; status >= 400
    Requests/sec:     39.12
    Transfer/sec:      6.50KB

wrk's own "Non-2xx or 3xx" count is in fact "status > 399" (a 1xx or 3xx is not
counted), so the Lua script counts every response whose status is outside 200-299 in
each thread and, in ``done()``, prints one machine line that is the source of truth::

    HARNESS-WRK requests=196 responses=196 non_2xx=12 connect=0 read=3 write=0 timeout=0 status=12 p50_us=201234 p99_us=207000 max_us=208110 duration_us=5010000

The text lines are parsed too and must agree with it (a mismatch raises
:class:`LoadError`), which guards the parser against a wrk whose output differs.

``failed = non_2xx + connect + read + write + timeout``. A request cut off by wrk's own
end of run is not counted anywhere (wrk drops it silently), so keep the interesting part
of a test well inside ``duration_s``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

WRK = shutil.which("wrk") or "/usr/bin/wrk"
MAX_DURATION_S = 120.0
MAX_CONNECTIONS = 256
THREADS = 2
REQUEST_TIMEOUT = "10s"

_LUA = r"""
-- unified test harness: count every response outside 200-299, per thread, then report
-- the totals once (setup() keeps the threads so done() can read their counters).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  responses = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local non, seen = 0, 0
  for _, thread in ipairs(threads) do
    non = non + thread:get("non2xx")
    seen = seen + thread:get("responses")
  end
  local e = summary.errors
  io.write(string.format(
    "HARNESS-WRK requests=%d responses=%d non_2xx=%d connect=%d read=%d write=%d timeout=%d status=%d p50_us=%d p99_us=%d max_us=%d duration_us=%d\n",
    summary.requests, seen, non, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max, summary.duration))
end
"""

_MACHINE = re.compile(r"^HARNESS-WRK (.+)$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX_3XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.MULTILINE)


class LoadError(RuntimeError):
    """wrk could not run, ran too long, or printed something the parser does not know."""


class SocketErrors(NamedTuple):
    """wrk's socket error counts."""

    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.timeout


@dataclass(frozen=True)
class LoadResult:
    """One wrk run. ``requests`` are complete responses, whatever their status."""

    requests: int
    non_2xx: int
    socket_errors: SocketErrors
    status_errors: int  # wrk's own count: responses with status > 399
    duration_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    output: str

    @property
    def failed(self) -> int:
        """Everything a client would call a failure: non-2xx answers and socket errors."""
        return self.non_2xx + self.socket_errors.total

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def summary(self) -> str:
        e = self.socket_errors
        return (
            f"{self.requests} requests in {self.duration_s:.2f}s, failed {self.failed} "
            f"(non-2xx {self.non_2xx}, connect {e.connect}, read {e.read}, write {e.write}, "
            f"timeout {e.timeout}), p50 {self.latency_p50_ms:.0f} ms, "
            f"p99 {self.latency_p99_ms:.0f} ms, max {self.latency_max_ms:.0f} ms"
        )


def parse_wrk_output(output: str) -> LoadResult:
    """Parse wrk's stdout (with the harness script's machine line); cross-check both."""
    machine = _MACHINE.search(output)
    if machine is None:
        raise LoadError(f"no HARNESS-WRK line in wrk's output:\n{output}")
    values = {k: int(v) for k, v in (pair.split("=", 1) for pair in machine.group(1).split())}
    result = LoadResult(
        requests=values["requests"],
        non_2xx=values["non_2xx"],
        socket_errors=SocketErrors(
            values["connect"], values["read"], values["write"], values["timeout"]
        ),
        status_errors=values["status"],
        duration_s=values["duration_us"] / 1e6,
        latency_p50_ms=values["p50_us"] / 1000,
        latency_p99_ms=values["p99_us"] / 1000,
        latency_max_ms=values["max_us"] / 1000,
        output=output,
    )
    # The human lines must tell the same story (they are absent when zero).
    text_requests = _REQUESTS.search(output)
    text_socket = _SOCKET.search(output)
    text_status = _NON_2XX_3XX.search(output)
    problems = []
    if text_requests is None or int(text_requests.group(1)) != result.requests:
        problems.append("requests")
    if values["responses"] != result.requests:
        problems.append("responses counted by the script")
    socket_text = SocketErrors(*map(int, text_socket.groups())) if text_socket else SocketErrors()
    if socket_text != result.socket_errors:
        problems.append("socket errors")
    if (int(text_status.group(1)) if text_status else 0) != result.status_errors:
        problems.append("Non-2xx or 3xx responses")
    if result.status_errors > result.non_2xx:
        problems.append("status > 399 exceeds non-2xx")
    if problems:
        raise LoadError(f"wrk's text and the script disagree on {problems}:\n{output}")
    return result


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port is None:
        raise ValueError(f"load goes to http://127.0.0.1:PORT only, not {url!r}")


class LoadHandle:
    """A running wrk. ``result()`` waits (bounded) and parses; ``stop()`` ends it early."""

    def __init__(self, url: str, duration_s: int, connections: int, grace_s: float) -> None:
        self.url = url
        self.duration_s = duration_s
        self.connections = connections
        self.grace_s = grace_s
        self._dir = Path(tempfile.mkdtemp(prefix="unified-wrk-"))
        script = self._dir / "count.lua"
        script.write_text(_LUA)
        self.command = [
            WRK,
            "-t", str(min(THREADS, connections)),
            "-c", str(connections),
            "-d", f"{duration_s}s",
            "--timeout", REQUEST_TIMEOUT,
            "--latency",
            "-s", str(script),
            url,
        ]  # fmt: skip
        self.started = time.monotonic()
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._result: LoadResult | None = None

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        """End the run now; wrk prints its summary on SIGINT as at the end of a run."""
        if self.running:
            self._process.send_signal(signal.SIGINT)

    def result(self, timeout: float | None = None) -> LoadResult:
        """Wait for wrk (at most ``timeout``, default: what is left of the run + grace)."""
        if self._result is not None:
            return self._result
        if timeout is None:
            timeout = max(0.0, self.duration_s - self.elapsed) + self.grace_s
        try:
            stdout, stderr = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            stdout, stderr = self._process.communicate(timeout=5)
            shutil.rmtree(self._dir, ignore_errors=True)
            raise LoadError(f"wrk still running after {timeout:.1f}s; killed\n{stdout}\n{stderr}")
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._process.returncode != 0:
            raise LoadError(f"wrk exited {self._process.returncode}:\n{stdout}\n{stderr}")
        self._result = parse_wrk_output(stdout)
        return self._result

    def __enter__(self) -> LoadHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._result is None:
            self.stop()
            try:
                self.result(timeout=self.grace_s)
            except LoadError:
                pass


def start_load(
    url: str,
    duration_s: int,
    connections: int,
    path: str = "/slow?ms=200",
    *,
    grace_s: float = 15.0,
) -> LoadHandle:
    """Start wrk in the background against ``url`` + ``path`` (``url`` is the base,
    e.g. ``Haproxy.url``; a ``path`` of "" keeps the URL as given)."""
    if duration_s != int(duration_s) or not 1 <= duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration_s must be whole seconds in [1, {MAX_DURATION_S:g}] (wrk's -d)")
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise ValueError(f"connections must be in [1, {MAX_CONNECTIONS}]")
    full = url.rstrip("/") + path if path else url
    _check_url(full)
    return LoadHandle(full, int(duration_s), connections, grace_s)


def run_load(url: str, duration_s: int, connections: int, path: str = "/slow?ms=200") -> LoadResult:
    """Run wrk in the foreground and return its counts (see :func:`start_load`)."""
    return start_load(url, duration_s, connections, path).result()


__all__ = [
    "MAX_CONNECTIONS",
    "MAX_DURATION_S",
    "WRK",
    "LoadError",
    "LoadHandle",
    "LoadResult",
    "SocketErrors",
    "parse_wrk_output",
    "run_load",
    "start_load",
]
