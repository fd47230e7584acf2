"""supervisord: start it, and drive it over its XML-RPC unix socket.

The only module that speaks XML-RPC. It uses supervisor's own transport
(`supervisor.xmlrpc.SupervisorTransport`), exactly as supervisorctl does, so socket
handling and HTTP framing are the upstream code, not ours.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import subprocess
import sys
import threading
import xmlrpc.client
from typing import Any

from supervisor.xmlrpc import Faults, SupervisorTransport

from agent.deadline import Backoff, Deadline, poll
from agent.errors import AgentError
from agent.local import fs
from agent.local.layout import Layout

log = logging.getLogger("agent.supervisor")
# What talking to a dead or dying supervisord raises.
RPC_ERRORS = (OSError, xmlrpc.client.Error, http.client.HTTPException)

# supervisord inherits this, not the operator's shell: no stray credentials or
# PYTHONPATH leak into services, and a boot from systemd equals a boot from SSH.
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
START_TIMEOUT = 15.0
QUICK = Backoff(first=0.05, factor=1.0, cap=0.05)   # waits on our own processes: they end soon


class Supervisor:
    """A client of one supervisord, bound to the socket of one agent root."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self._local = threading.local()

    @property
    def proxy(self) -> Any:
        """One XML-RPC proxy per thread: a proxy holds one HTTP connection and is not
        thread-safe, and boot drives several programs at once."""
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            transport = SupervisorTransport(None, None, serverurl=f"unix://{self.layout.socket}")
            # The host part is ignored by the unix transport; supervisorctl does the same.
            proxy = self._local.proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        return proxy

    def running(self) -> bool:
        """True when supervisord answers on the socket."""
        if not self.layout.socket.exists():
            return False
        try:
            return self.proxy.supervisor.getState()["statename"] == "RUNNING"
        except RPC_ERRORS:
            self._local.proxy = None  # its connection is half-used now; start afresh next time
            return False

    def start_daemon(self) -> bool:
        """Start supervisord unless it already answers; True if it was started.

        A supervisord that died (killed, OOM) leaves its programs running, holding
        their ports: those orphans are stopped first, or the new programs could not
        bind and the box would serve from processes nobody supervises.
        """
        if self.running():
            return False
        reaped = self.reap_orphans()
        if reaped:
            log.warning("supervisord was gone; stopped %d orphaned program processes", reaped)
        conf = self.layout.supervisord_conf
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
            env=CLEAN_ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise AgentError(f"supervisord did not start ({conf}): {detail[0]}")
        if poll(self.running, bool, Deadline(START_TIMEOUT), QUICK):
            return True
        raise AgentError(f"supervisord started but its socket {self.layout.socket} did not answer "
                         f"within {START_TIMEOUT:.0f}s; see {self.layout.logs}/supervisord.log")

    def update(self) -> dict[str, list[str]]:
        """Apply changed program files like `supervisorctl update`: removed groups are
        stopped and dropped, changed ones stopped and re-added (the caller starts them)."""
        added, changed, removed = self.proxy.supervisor.reloadConfig()[0]
        for name in removed + changed:
            self._ignore(self.proxy.supervisor.stopProcessGroup, name, Faults.NOT_RUNNING, Faults.BAD_NAME)
            self._ignore(self.proxy.supervisor.removeProcessGroup, name, Faults.BAD_NAME)
        for name in changed + added:
            self._ignore(self.proxy.supervisor.addProcessGroup, name, Faults.ALREADY_ADDED)
        return {"added": added, "changed": changed, "removed": removed}

    def processes(self) -> dict[str, dict[str, Any]]:
        return {info["name"]: info for info in self.proxy.supervisor.getAllProcessInfo()}

    def info(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.proxy.supervisor.getProcessInfo(name)
        return result

    def start(self, name: str) -> None:
        """Ask for a start without waiting: readiness, not supervisord, says when it is up."""
        self._ignore(self.proxy.supervisor.startProcess, name, Faults.ALREADY_STARTED, args=(False,))  # wait=False

    def stop(self, name: str) -> None:
        """Stop and wait (supervisord sends the stop signal, then SIGKILL after stopwaitsecs)."""
        self._ignore(self.proxy.supervisor.stopProcess, name, Faults.NOT_RUNNING)

    def shutdown(self, timeout: float = 120.0) -> None:
        """Stop supervisord itself and wait until its process is gone."""
        pid = self.pid()
        try:
            self.proxy.supervisor.shutdown()
        except RPC_ERRORS:
            pass
        if pid and poll(lambda: _alive(pid), lambda alive: not alive, Deadline(timeout), QUICK):
            raise AgentError(f"supervisord (pid {pid}) did not exit within {timeout:.0f}s")

    def orphans(self) -> list[int]:
        """Processes started by a previous supervisord of this root: supervisord puts
        its socket URL in every child's environment, and children inherit it; programs
        that overwrite their environment (database servers) write a pid file in their
        runtime directory (`Layout.pidfile`)."""
        own = self.pid()
        if own is not None and _alive(own) and _name(own).startswith(("supervisord", "python")):
            return []  # supervisord is alive (restarting, say): its children are not orphans
        marker = f"SUPERVISOR_SERVER_URL=unix://{self.layout.socket}".encode()
        found = []
        for pidfile in self.layout.run.glob("*/*.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            # a stale pid file after a reboot may name any process now: it must be one
            # working in its data directory, under this root's state directory
            if _alive(pid) and _cwd(pid).startswith(f"{self.layout.state_dir}/"):
                found.append(pid)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in (os.getpid(), *found):
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as handle:
                    if marker in handle.read().split(b"\0"):
                        found.append(int(entry.name))
            except OSError:
                continue
        return found

    def reap_orphans(self, grace: float = 15.0) -> int:
        """SIGTERM the orphans, then SIGKILL what is left after `grace` seconds."""
        pids = self.orphans()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        poll(lambda: any(_alive(p) for p in pids), lambda alive: not alive, Deadline(grace), QUICK)
        for pid in pids:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        return len(pids)

    def pid(self) -> int | None:
        try:
            return int(self.layout.supervisord_pid.read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, name: str, lines: int = 20) -> str:
        return fs.tail(self.layout.program_log(name), lines)

    @staticmethod
    def _ignore(call: Any, name: str, *codes: int, args: tuple[Any, ...] = ()) -> Any:
        try:
            return call(name, *args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode not in codes:
                raise AgentError(f"{name}: supervisord refused: {fault.faultString}") from None
            return None


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd") + "/"
    except OSError:
        return ""


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped by its parent) is not alive."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
