"""supervisord: start it, and drive it over its XML-RPC unix socket.

The only module that speaks XML-RPC. It uses supervisor's own transport
(`supervisor.xmlrpc.SupervisorTransport`), exactly as supervisorctl does, so socket
handling and HTTP framing are the upstream code, not ours.

Deadlines (the policy): every call has a total deadline, `RPC_TIMEOUT` (5 s; `agent
status` asks with 3 s). The transport's unix socket is an `agent.deadline_socket.
DeadlineSocket`, so connecting, sending and the whole answer must fit in it however
slowly supervisord answers, and SIGTERM ends it within 0.2 s. No call waits inside
supervisord: stopping a process or a group is asked without waiting and then
polled, so a slow stop is not mistaken for a silent supervisord, and the stop itself has
a deadline of the program's stopwaitsecs + `STOP_MARGIN` (supervisord sends SIGKILL at
stopwaitsecs). A supervisord that holds its socket but does not answer in time (stopped
with SIGSTOP, hung) raises `NotAnswering`; a socket the caller may not open (it is 0700,
its owner's alone) raises `PermissionDenied`: one line each, saying what to do.

The pid file is only a hint. supervisord truncates it before writing its pid, and on a
full disk the write fails after the truncation: it logs that, runs on, and leaves the
file empty for good (it removes only a file it wrote). A killed supervisord leaves it
stale, and after a reboot its pid may name any process. So `pid()` believes the file
only when /proc shows that pid is this root's supervisord (its command line names this
root's supervisord.conf), and otherwise looks for that command line; a start or a
shutdown removes a pid file that names no live supervisord of this root.
"""

from __future__ import annotations

import http.client
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from typing import Any, Callable

from supervisor.xmlrpc import Faults, SupervisorTransport, UnixStreamHTTPConnection

from agent.deadline import Backoff, Deadline, poll
from agent.deadline_socket import DeadlineSocket
from agent.errors import AgentError
from agent.local import fs, procs
from agent.local.layout import Layout

log = logging.getLogger("agent.supervisor")
# What talking to a dead or dying supervisord raises (NotAnswering and PermissionDenied
# are AgentErrors instead: they carry their own message and must not pass for "dead").
RPC_ERRORS = (OSError, xmlrpc.client.Error, http.client.HTTPException)

# supervisord inherits this, not the operator's shell: no stray credentials or
# PYTHONPATH leak into services, and a boot from systemd equals a boot from SSH.
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
START_TIMEOUT = 15.0
RPC_TIMEOUT = 5.0     # seconds for one XML-RPC call, connect to last byte (see the docstring)
STOP_MARGIN = 10.0    # seconds past a program's stopwaitsecs before a stop is given up
LONGEST_STOPWAIT = 3600.0  # the largest stop_seconds services.yaml allows
QUICK = Backoff(first=0.05, factor=1.0, cap=0.05)   # waits on our own processes: they end soon
STOPPING = Backoff(first=0.05, factor=1.5, cap=0.5)  # a stop may take its stopwaitsecs
UP_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF", "STOPPING"})  # not yet stopped


class NotAnswering(AgentError):
    """supervisord holds its socket but did not answer within the call's deadline."""


class PermissionDenied(AgentError):
    """The socket is not ours to open (0700, another user's)."""


class _Connection(UnixStreamHTTPConnection):
    """supervisor's unix-socket HTTP connection on a DeadlineSocket."""

    def __init__(self, path: str, deadline: Callable[[], Deadline]):
        super().__init__("localhost")  # the host is ignored on a unix socket; supervisorctl does the same
        self.socketfile = path
        self._deadline = deadline

    def connect(self) -> None:
        sock = DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM, self._deadline)
        try:
            sock.connect(self.socketfile)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Transport(SupervisorTransport):
    """supervisor's transport, with a fresh total deadline for every call; a call that
    fails for any reason drops its connection, which is half-used now."""

    def __init__(self, supervisor: "Supervisor"):
        super().__init__(None, None, serverurl=f"unix://{supervisor.layout.socket}")
        self._supervisor = supervisor
        self._call = Deadline(supervisor.timeout)
        self._get_connection = lambda: _Connection(str(supervisor.layout.socket), lambda: self._call)

    def request(self, host: Any, handler: Any, request_body: Any, verbose: Any = False) -> Any:
        self._call = Deadline(self._supervisor.timeout)
        try:
            return super().request(host, handler, request_body, verbose)
        except socket.timeout:
            self.close()
            raise self._supervisor.not_answering() from None
        except PermissionError:
            self.close()
            raise self._supervisor.permission_denied() from None
        except BaseException:
            self.close()
            raise


class Supervisor:
    """A client of one supervisord, bound to the socket of one agent root."""

    def __init__(self, layout: Layout, timeout: float = RPC_TIMEOUT):
        self.layout = layout
        self.timeout = timeout
        self._local = threading.local()

    @property
    def proxy(self) -> Any:
        """One XML-RPC proxy per thread: a proxy holds one HTTP connection and is not
        thread-safe, and boot drives several programs at once."""
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            # The host part is ignored by the unix transport; supervisorctl does the same.
            proxy = self._local.proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=_Transport(self))
        return proxy

    def running(self) -> bool:
        """True when supervisord answers on the socket, False when nothing does.
        NotAnswering (a supervisord holds the socket but is silent) and PermissionDenied
        are neither, and are raised: a stop or a boot cannot go on as if it were gone."""
        if not self.layout.socket.exists():
            return False
        try:
            return self.proxy.supervisor.getState()["statename"] == "RUNNING"
        except RPC_ERRORS:
            return False

    def not_answering(self) -> NotAnswering:
        """The error for a call that got no answer in time, naming the pid and what to do."""
        pid = self.pid()
        who = f"supervisord (pid {pid}{_why_silent(pid)})" if pid else "a process"
        resume = f"`kill -CONT {pid}` if it was stopped, or `kill -KILL {pid}` if it is hung" if pid else \
            "find and kill it"
        return NotAnswering(f"{who} holds {self.layout.socket} but did not answer within {self.timeout:g}s; "
                            f"{resume}, then run the command again (`agent boot` takes over the programs of a "
                            "killed supervisord, `agent stop` stops them)")

    def permission_denied(self) -> PermissionDenied:
        owner = _owner(self.layout.socket)
        return PermissionDenied(f"cannot open supervisord's socket {self.layout.socket}: permission denied "
                                f"(it is {owner}'s alone, mode 0700); run this as {owner}, e.g. with sudo")

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
            self._ignore(self.proxy.supervisor.stopProcessGroup, name, Faults.NOT_RUNNING, Faults.BAD_NAME,
                         args=(False,))  # wait=False: waited for below, with a deadline
            self._wait_stopped(name)
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
        """Stop and wait (supervisord sends the stop signal, then SIGKILL after
        stopwaitsecs). Asked without waiting inside supervisord, then polled: see the
        module docstring."""
        self._ignore(self.proxy.supervisor.stopProcess, name, Faults.NOT_RUNNING, args=(False,))  # wait=False
        self._wait_stopped(name)

    def _wait_stopped(self, group: str) -> None:
        """Wait until no process of `group` is up, for at most its stopwaitsecs + STOP_MARGIN."""
        configs = [c for c in self.proxy.supervisor.getAllConfigInfo() if group in (c["group"], c["name"])]
        # a group just removed from the configuration has no config left to ask
        stopwait = max((float(c["stopwaitsecs"]) for c in configs), default=LONGEST_STOPWAIT)
        limit = stopwait + STOP_MARGIN

        def up() -> list[str]:
            return [f"{i['name']} {i['statename']}" for i in self.proxy.supervisor.getAllProcessInfo()
                    if group in (i["group"], i["name"]) and i["statename"] in UP_STATES]

        left = poll(up, lambda names: not names, Deadline(limit), STOPPING)
        if left:
            raise AgentError(f"{group}: still {', '.join(left)} {limit:.0f}s after supervisord was asked to stop it "
                             f"(stopwaitsecs + {STOP_MARGIN:.0f}s); see {self.layout.program_log(group)}")

    def shutdown(self, timeout: float = 120.0) -> None:
        """Stop supervisord itself and wait until its process is gone."""
        pid = self.pid()
        try:
            self.proxy.supervisor.shutdown()
        except RPC_ERRORS:
            pass
        if pid and poll(lambda: _alive(pid), lambda alive: not alive, Deadline(timeout), QUICK):
            raise AgentError(f"supervisord (pid {pid}) did not exit within {timeout:.0f}s")
        self._drop_stale_pidfile()

    def terminate(self, timeout: float = 120.0) -> None:
        """SIGTERM to a supervisord that cannot be asked (its socket gone): it stops its
        programs as it would on `shutdown`, each within its stopwaitsecs."""
        pid = self.pid()
        if pid is None:
            return
        _signal(pid, signal.SIGTERM)
        if poll(lambda: _alive(pid), lambda alive: not alive, Deadline(timeout), QUICK):
            _signal(pid, signal.SIGKILL)  # its programs are then orphans, reaped next
        self._drop_stale_pidfile()

    def orphans(self) -> list[int]:
        """Processes started by a previous supervisord of this root, now nobody's
        (`program_processes`); none while this root's supervisord lives (restarting,
        stopped or hung, say): its children are not orphans."""
        if self.pid() is not None:
            return []
        return sorted(pid for pids in self.program_processes().values() for pid in pids)

    def program_processes(self) -> dict[str, list[int]]:
        """Live processes started by this root's supervisord, whoever supervises them
        now, by program name: supervisord puts its socket URL and the program's name in
        every child's environment, and children inherit them; programs that overwrite
        their environment (database servers) write a pid file in their runtime
        directory (`Layout.pidfile`, named after the program). Another user's
        environment is unreadable, so only root sees them all.

        A process can drop or rewrite its environment (`env -i`), so the environment is
        not all: every program is also in the session of the supervisord that started it
        (supervisord makes its own session when it daemonizes; programs get a process
        group of their own in it), and a session's number is not handed to another
        process while any member lives. The last supervisord's pid, from its pid file,
        names that session."""
        marker = f"SUPERVISOR_SERVER_URL=unix://{self.layout.socket}".encode()
        found: dict[int, str] = {}
        for pidfile in self.layout.run.glob("*/*.pid"):
            pid = _read_pid(pidfile)
            # a stale pid file after a reboot may name any process now: it must be one
            # working in its data directory, under this root's state directory
            if pid is not None and _alive(pid) and _cwd(pid).startswith(f"{self.layout.state_dir}/"):
                found[pid] = pidfile.stem
        session = _read_pid(self.layout.supervisord_pid) if self._written_since_boot() else None
        in_session = set()
        if session is not None and not _alive(session):
            in_session = {p.pid for p in procs.all_stats() if p.session == session and not p.zombie}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in (os.getpid(), *found):
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as handle:
                    environ = handle.read().split(b"\0")
            except OSError:
                environ = []
            if marker in environ or pid in in_session:
                named = next((v[24:] for v in environ if v.startswith(b"SUPERVISOR_PROCESS_NAME=")), b"?")
                found[pid] = named.decode("utf-8", "replace")
        by_program: dict[str, list[int]] = {}
        for pid, program in found.items():
            by_program.setdefault(program, []).append(pid)
        return {name: _tops_first(pids) for name, pids in sorted(by_program.items())}

    def _written_since_boot(self) -> bool:
        """A pid file from before the machine's last boot names a session of nothing of
        ours (a root outside /run survives a reboot)."""
        try:
            written = self.layout.supervisord_pid.stat().st_mtime
        except OSError:
            return False
        return written > time.time() - procs.boottime()

    def reap_orphans(self, grace: float = 15.0) -> int:
        """SIGTERM the orphans, then SIGKILL what is left after `grace` seconds; and
        remove the pid file of the supervisord that left them."""
        pids = self.orphans()  # before the pid file goes: it names the dead supervisord's session
        self._drop_stale_pidfile()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        poll(lambda: any(_alive(p) for p in pids), lambda alive: not alive, Deadline(grace), QUICK)
        for pid in pids:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        return len(pids)

    def pid(self) -> int | None:
        """The pid of this root's live supervisord, or None: the pid file when /proc
        confirms it, else found by command line (see the module docstring)."""
        claimed = _read_pid(self.layout.supervisord_pid)
        if claimed is not None and self._is_daemon(claimed):
            return claimed
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != claimed and self._is_daemon(int(entry.name)):
                return int(entry.name)
        return None

    def _is_daemon(self, pid: int) -> bool:
        """`pid` is a live supervisord started with this root's supervisord.conf."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            return False
        conf = str(self.layout.supervisord_conf).encode()
        return conf in argv and any(arg.endswith(b"supervisord") for arg in argv) and _alive(pid)

    def _drop_stale_pidfile(self) -> None:
        """Remove a pid file that names no live supervisord of this root (empty after a
        full disk, garbage, or stale), so nothing reads it later."""
        path = self.layout.supervisord_pid
        claimed = _read_pid(path)
        if path.exists() and (claimed is None or not self._is_daemon(claimed)):
            try:
                path.unlink()
            except OSError as exc:
                log.warning("cannot remove the stale pid file %s: %s", path, exc.strerror)

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


def _read_pid(path: Any) -> int | None:
    """The pid a pid file starts with, or None when it is missing, empty or not a pid."""
    try:
        first = (path.read_bytes().split() or [b""])[0]
    except OSError:
        return None
    return int(first) if first.isdigit() and 0 < int(first) <= 2**22 else None


def _stat(pid: int) -> list[bytes]:
    """/proc/PID/stat after the command name: state, ppid, ... ([] when gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _tops_first(pids: list[int]) -> list[int]:
    """`pids` with the ones whose parent is not among them (the program's own process,
    not its children) first."""
    parents = {pid: int(fields[1]) if len(fields) > 1 else 0 for pid in pids for fields in [_stat(pid)]}
    return sorted(pids, key=lambda pid: (parents[pid] in parents, pid))


def _why_silent(pid: int) -> str:
    state = (_stat(pid) or [b"?"])[0]
    return {b"T": ", stopped by a signal", b"t": ", stopped by a debugger", b"D": ", waiting on a disk"}.get(state, "")


def _owner(path: Any) -> str:
    try:
        uid = path.stat().st_uid
    except OSError:
        return "root"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


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
    return (_stat(pid) or [b"Z"])[0] != b"Z"
