"""`agent boot`: apply a plan on this box, idempotently.

Order of work: render files (only changed ones are written), make sure supervisord runs
and knows the programs, then run the boot graph: each database is started and
provisioned, each service waits for what it uses, runs its release once, starts, and
must pass its readiness check. A second boot on a booted box finds nothing to change.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from agent import __version__, databases, fs, graph, readiness, render, state, users
from agent.errors import AgentError
from agent.paths import Layout
from agent.plan import Inputs, Plan, Program
from agent.supervisor import CLEAN_ENV, Supervisor

Say = Callable[[str], None]
T = TypeVar("T")


class Box:
    """One agent root's programs under its supervisord: the executor of a plan."""

    def __init__(self, layout: Layout, plan: Plan, inputs: Inputs, say: Say = print):
        self.layout, self.plan, self.inputs, self.say = layout, plan, inputs, say
        self.supervisor = Supervisor(layout)
        self._initdb_done: Future[None] | None = None
        self.early_supervisord: Future[bool] | None = None  # see start_supervisord_early

    @property
    def digest_key(self) -> bytes:
        return state.secret(self.layout, "env-digest-key").encode()

    def pending_changes(self) -> list[Path]:
        """Program files a boot would change (so changed programs would restart)."""
        return [f.path for f in render.plan_files(self.layout, self.plan, self.digest_key) if fs.differs(f)]

    # -- files -------------------------------------------------------------------------
    def render(self) -> list[Path]:
        """Write every file of the plan; drop program files the plan no longer has."""
        layout = self.layout
        changed = render_base(layout)
        files = render.plan_files(layout, self.plan, self.digest_key)
        names = {p.name for p in self.plan.programs}
        if any(p.name == "redis" for p in self.plan.programs):
            redis = self.plan.program("redis")
            files.append(render.redis_conf(layout, redis.port or 6379, self.inputs.redis_password, redis.user))
        databases.prepare_dirs(layout, self.inputs.postgres_user, self.inputs.redis_user,
                               "postgres" in names, "redis" in names)
        changed += fs.write_all(files)
        keep = {f.path for f in files}
        for folder in (layout.include_dir, layout.env_dir):
            for stale in folder.iterdir():
                if stale.is_file() and stale not in keep and not stale.name.startswith("."):
                    stale.unlink()
                    changed.append(stale)
        return changed

    # -- programs ----------------------------------------------------------------------
    def check(self, program: Program, started: float | None = None) -> tuple[readiness.Probe, str]:
        """Probe once. `started`: when we started it (time.monotonic()), a finer clock
        than supervisord's whole seconds for "up for start_seconds"."""
        info = self.supervisor.info(program.name)
        up = time.monotonic() - started if started is not None else readiness.uptime(info)
        probe = readiness.probe(program.readiness, info["statename"], f"{self.inputs.tools.pg_bin}/pg_isready",
                                str(self.layout.pg_socket_dir), up=up)
        return probe, info["statename"]

    def start_and_wait(self, program: Program) -> float:
        """Start (unless running) and wait for readiness; seconds taken."""
        t0 = time.monotonic()
        started = None
        if self.supervisor.info(program.name)["statename"] not in ("RUNNING", "STARTING"):
            if program.port is not None and readiness.port_in_use(program.port):
                raise AgentError(f"port {program.port} is already in use by a process this box's supervisord "
                                 "does not manage; stop it, or give the program another port in services.yaml")
            self.supervisor.start(program.name)
            started = time.monotonic()
        result = readiness.wait(lambda: self.check(program, started), t0 + program.readiness.timeout)
        if not result.ready:
            log = fs.tail(self.layout.program_log(program.name))
            raise AgentError(f"not ready: {result.detail}\n"
                             f"--- last lines of {self.layout.program_log(program.name)} ---\n{log}")
        return time.monotonic() - t0

    def boot(self) -> state.State:
        steps = state.Steps()
        current = state.load(self.layout) or state.State()
        with steps("render"):
            changed = self.render()
        # initdb needs no supervisord: on a first boot, run it while supervisord starts
        pending_initdb = None
        if any(p.name == "postgres" for p in self.plan.programs) and not databases.initialised(self.layout):
            pending_initdb = background(self._initdb, self.plan.program("postgres"), steps)
        with steps("supervisord"):
            early = self.early_supervisord
            started = early.result() if early is not None else self.supervisor.start_daemon()
            if changed or (early is not None and started):  # started before the program files existed
                self.supervisor.update()
        self._initdb_done = pending_initdb
        nodes = self._graph(current, steps)
        errors = {n: e for n, e in graph.run(nodes).items() if e is not None}
        current.record_plan(self.plan)
        current.agent_version = __version__
        current.pg = {"pg_isready": f"{self.inputs.tools.pg_bin}/pg_isready", "socket": str(self.layout.pg_socket_dir)}
        root_causes = {n: e for n, e in errors.items() if not isinstance(e, graph.DependencyFailed)}
        if root_causes:
            current.last_error = "; ".join(f"{n}: {str(e).splitlines()[0]}" for n, e in root_causes.items())
            state.save(self.layout, current)
            raise AgentError("boot failed: " + current.last_error,
                             lines=[f"boot failed: {n}: {e}" for n, e in root_causes.items()])
        did_work = any(s["name"].startswith(("start", "release", "initdb")) for s in steps.steps)
        if changed or did_work or current.booted_at is None or current.last_error:
            current.steps = steps.steps
            current.booted_at = time.time()
            current.boot_seconds = round(steps.total(), 3)
            current.last_error = None
            state.save(self.layout, current)
        return current

    def _graph(self, current: state.State, steps: state.Steps) -> list[graph.Node]:
        running = {n for n, i in self.supervisor.processes().items() if i["statename"] in ("RUNNING", "STARTING")}
        # dependencies first, so every future exists before a node waits on it (agent.graph)
        return [graph.Node(p.name, self._action(p, current, steps, p.name in running), list(p.needs))
                for p in _ordered(self.plan.programs)]

    def _action(self, program: Program, current: state.State, steps: state.Steps, running: bool) -> Callable[[], None]:
        def act() -> None:
            if program.name == "postgres" and self._initdb_done is not None:
                self._initdb_done.result()  # raises what initdb raised
            if program.kind == "service" and program.release:
                self._release(program, current, steps)
            if running:
                probe, _ = self.check(program)
                if probe.ready:
                    if program.name == "postgres":
                        self._provision(program)
                    return
            with steps(f"start {program.name}"):
                seconds = self.start_and_wait(program)
            self.say(f"{program.name}: ready ({seconds:.1f}s)")
            if program.name == "postgres":
                with steps("create databases"):
                    self._provision(program)
        return act

    def _initdb(self, program: Program, steps: state.Steps) -> None:
        with steps("initdb"):
            databases.initdb(self.layout, self.inputs.tools, program.user)

    def _provision(self, program: Program) -> None:
        databases.provision(self.layout, self.inputs.tools, program.user, program.port or 5432,
                            self.plan.databases, self.inputs.pg_password)

    def _release(self, program: Program, current: state.State, steps: state.Steps) -> None:
        key = release_key(self.layout, program)
        if current.releases.get(program.name) == key:
            return
        with steps(f"release {program.name}"):
            spec = render.release_spec_path(self.layout, program.name)
            log = self.layout.logs / f"{program.name}.release.log"
            with open(log, "ab") as out:
                result = subprocess.run(list(render.launch_argv(spec)), cwd=program.directory,  # type: ignore[call-overload]
                                        env=dict(CLEAN_ENV), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, check=False, **users.run_as(program.user))
            if result.returncode != 0:
                raise AgentError(f"release command exited {result.returncode}\n"
                                 f"--- last lines of {log} ---\n{fs.tail(log)}")
        current.releases[program.name] = key
        self.say(f"{program.name}: release done")


def render_base(layout: Layout) -> list[Path]:
    """The directories and supervisord.conf: everything supervisord needs to start."""
    # logs 0750: programs print what they like (a failing statement, a token)
    for path, mode in ((layout.etc, 0o755), (layout.run, 0o755), (layout.logs, 0o750),
                       (layout.state_dir, 0o755), (layout.env_dir, 0o711), (layout.include_dir, 0o755)):
        fs.ensure_dir(path, mode)
    return fs.write_all([render.supervisord_conf(layout, run_as_root=_is_root())])


def start_supervisord_early(layout: Layout) -> Future[bool]:
    """Start supervisord in the background before the plan is known (it is a process of
    its own: its start-up overlaps with IMDS and AWS calls). Box.boot adds the programs."""
    def start() -> bool:
        render_base(layout)
        return Supervisor(layout).start_daemon()

    return background(start)


def background(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run `fn` in a thread of its own; the pool is shut down at once (its thread ends
    with the work), so nothing lingers after the result is taken."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="boot-bg")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def release_key(layout: Layout, program: Program) -> str:
    """Identifies a release: same command on the same commits means already done."""
    try:
        manifest = json.loads(layout.manifest.read_text())
        commits = ",".join(sorted(r["sha"] for r in manifest.get("repos", [])))
    except (OSError, ValueError, KeyError, TypeError):
        commits = "unbaked"
    return hashlib.sha256(f"{program.release}\0{program.directory}\0{commits}".encode()).hexdigest()[:16]


def _ordered(programs: tuple[Program, ...]) -> list[Program]:
    """Programs with every dependency before its dependents (the catalog refused cycles)."""
    by_name = {p.name: p for p in programs}
    done: dict[str, Program] = {}

    def visit(program: Program) -> None:
        for need in program.needs:
            if need not in done and need in by_name:
                visit(by_name[need])
        done.setdefault(program.name, program)

    for program in programs:
        visit(program)
    return list(done.values())


def _is_root() -> bool:
    return os.geteuid() == 0
