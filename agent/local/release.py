"""A service's release: run once, bounded in time, never left behind.

It runs on a review box, and outside review on the one instance a deploy tags to run
it (`unified:release`, `agent.role`); other instances never run it.

Once: a release is recorded the moment it succeeds (`state.record_release`: a file of
its own per service, apart from the state file), before anything else happens, so a
crash right after it does not run it again. A release that was interrupted did not
succeed, and runs again at the next boot.

Bounded: it runs in a session, and so a process group, of its own, waited on with
`agent.deadline.poll` for at most its `release_timeout` (services.yaml; 900 s by
default). The timeout, SIGTERM to the agent (`agent.deadline.cancel` makes the wait
raise `Cancelled`) and any other failure of the boot end the whole group: SIGTERM, then
SIGKILL after `GRACE` seconds. What a release that exited left running in its group is
ended the same way: a release is one command, not a way to start daemons.

Never left behind: while it runs, the identity of its first process (boot id, pid,
start time: `agent.local.procs.Identity`) is in a pid file under the run directory
(`Layout.release_pidfile`), which outlives the agent. The next boot (before it runs any
release) and `agent stop` end what such a file names, and only that: a process belongs
to the release if it is in the session of that very process (a session's number cannot
be handed to a new process while any member lives), or, once that process is gone, if
it carries the release's marker in its environment. A reused pid is never signalled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agent.deadline import Backoff, Deadline, poll
from agent.errors import AgentError
from agent.local import fs, procs, state, users
from agent.local.layout import Layout
from agent.local.supervisor import CLEAN_ENV

if TYPE_CHECKING:
    from agent.plan import Program

log = logging.getLogger("agent.release")
Say = Callable[[str], None]

MARKER = "UNIFIED_RELEASE"   # in every release process's environment: ROOT:SERVICE
GRACE = 10.0                 # seconds between SIGTERM and SIGKILL
KILL_WAIT = 5.0              # seconds for SIGKILLed processes to be gone
WAIT = Backoff(first=0.05, factor=1.5, cap=0.5)


@dataclass(frozen=True)
class Running:
    """A release that runs (or ran) under this root: what its pid file says."""

    service: str
    leader: procs.Identity
    marker: str

    def members(self) -> list[int]:
        """Its processes still alive (see the module docstring for who belongs)."""
        leader = self.leader.current()  # a zombie still holds its pid: it counts
        entry = f"{MARKER}={self.marker}".encode()
        found = []
        for proc in procs.all_stats():
            if proc.zombie or proc.pid == os.getpid():
                continue
            if (leader is not None and proc.session == self.leader.pid) or procs.environ_has(proc.pid, entry):
                found.append(proc.pid)
        return found

    def end(self) -> bool:
        """SIGTERM every member, SIGKILL those left after GRACE; True if any was running.

        Not a `poll`: this runs when the agent has been cancelled (SIGTERM), when every
        `poll` raises at once, and it must still finish."""
        found = self.members()
        if not found:
            return False
        for signum, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, KILL_WAIT)):
            self._signal(signum, found)
            deadline = time.monotonic() + wait
            while found and time.monotonic() < deadline:
                time.sleep(0.05)
                found = self.members()
            if not found:
                return True
        raise AgentError(f"release of {self.service}: processes {', '.join(map(str, found))} survived SIGKILL; "
                         "they are stuck in the kernel (see `ps -o pid,stat,wchan -p PID`)")

    def _signal(self, signum: int, pids: list[int]) -> None:
        if self.leader.current() is not None:
            _kill(lambda: os.killpg(self.leader.pid, signum))  # the whole group at once
        for pid in pids:
            _kill(lambda: os.kill(pid, signum))

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "leader": self.leader.to_json(), "marker": self.marker}

    @classmethod
    def read(cls, path: Path) -> Running | None:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["service"]), procs.Identity.from_json(data["leader"]), str(data["marker"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _kill(send: Callable[[], None]) -> None:
    try:
        send()
    except (ProcessLookupError, PermissionError):
        pass


def run(layout: Layout, program: Program, key: str) -> None:
    """Run the release of `program` once and record it; AgentError on failure, timeout
    or cancellation, with nothing of it left running."""
    from agent.local import render  # jinja2: the boot has it loaded; `agent stop` and status need not
    name = program.name
    logfile = layout.release_log(name)
    marker = f"{layout.root}:{name}"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(  # type: ignore[call-overload]
            list(render.launch_argv(layout.release_env(name))), cwd=program.directory,
            env={**CLEAN_ENV, MARKER: marker}, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, **users.run_as(program.user))
    pidfile = layout.release_pidfile(name)
    finished, leader = False, None
    try:
        leader = procs.Identity.of(proc.pid)  # our child, not yet reaped: its pid is still its own
        if leader is not None:
            fs.ensure_dir(pidfile.parent, 0o755)
            fs.write(fs.FileSpec(pidfile, json.dumps(Running(name, leader, marker).to_json()) + "\n", 0o644))
        finished = poll(lambda: _exited(proc.pid), bool, Deadline(program.release_timeout), WAIT)
    finally:
        if leader is not None:
            Running(name, leader, marker).end()  # what is left of it, whatever happened
        else:
            _kill(lambda: os.killpg(proc.pid, signal.SIGKILL))
        code = proc.wait()
        pidfile.unlink(missing_ok=True)
    if not finished:
        raise AgentError(f"release of {name} did not finish within its release_timeout of "
                         f"{program.release_timeout}s and was ended; make it faster or raise release_timeout "
                         f"in services.yaml\n--- last lines of {logfile} ---\n{fs.tail(logfile)}")
    if code != 0:
        raise AgentError(f"release command exited {code}\n--- last lines of {logfile} ---\n{fs.tail(logfile)}")
    state.record_release(layout, name, key)


def _exited(pid: int) -> bool:
    """Has our child `pid` exited? It is left a zombie (WNOWAIT), so its pid, and so its
    process group's number, stays ours until `Popen.wait` reaps it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def end_leftovers(layout: Layout) -> list[str]:
    """End every release a previous agent of this root left running (killed, or stopped
    mid-release); one line for each that was still running. Call with the agent lock."""
    said = []
    folder = layout.releases_run_dir
    for pidfile in sorted(folder.glob("*.pid")) if folder.is_dir() else []:
        running = Running.read(pidfile)
        if running is not None and running.end():
            said.append(f"{running.service}: ended a release left running by an earlier agent "
                        f"(pid {running.leader.pid})")
            log.warning("%s", said[-1])
        pidfile.unlink(missing_ok=True)
    return said


def leftovers(layout: Layout) -> bool:
    """True when a pid file names a release that may still run (for `agent stop`)."""
    folder = layout.releases_run_dir
    return folder.is_dir() and any(folder.glob("*.pid"))
