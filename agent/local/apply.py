"""Apply a plan on this box, idempotently: the executor behind `agent boot`.

Order of work: render files (only changed ones are written), make sure supervisord runs
and knows the programs, then run the boot graph: each local database is initialised
and started and its after-ready step run, each service waits for what it uses, runs
its release once (`agent.local.release`: recorded the moment it succeeds, bounded in
time, ended with the agent; a release an earlier agent left running is ended before
anything else), starts, and must pass its readiness check, following the very start it
asked for (`agent.local.readiness.Start`: a crash on start fails the boot). A second
boot on a booted box finds nothing to change. Database kinds are reached only through
`agent.local.databases.kinds`: nothing here knows one by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from agent import __version__
from agent.deadline import Deadline
from agent.errors import AgentError
from agent.facts import Facts
from agent.local import fs, graph, readiness, release, render, secrets, state
from agent.local.databases import kinds
from agent.local.layout import Layout
from agent.local.supervisor import Supervisor
from agent.plan import Plan, Program

Say = Callable[[str], None]
T = TypeVar("T")


class Box:
    """One agent root's programs under its supervisord: the executor of a plan.

    `supervisord`: a start already under way (see `start_supervisord_early`), so its
    start-up overlaps with the work that came before the plan.
    """

    def __init__(self, layout: Layout, plan: Plan, facts: Facts, say: Say = print,
                 supervisord: Future[bool] | None = None):
        self.layout, self.plan, self.facts, self.say = layout, plan, facts, say
        self.supervisor = Supervisor(layout)
        self.early_supervisord = supervisord
        self._inits: Future[None] | None = None

    @property
    def digest_key(self) -> bytes:
        return secrets.secret(self.layout, "env-digest-key").encode()

    def files(self) -> list[fs.FileSpec]:
        """Every file of the plan: program sections and environments, and the databases'
        own configuration (which their sections' digests cover, so a change restarts them)."""
        by_kind = {db.kind: db for db in self.plan.databases}
        reads = {p.name: tuple(kinds.get(p.database).files(by_kind[p.database], self.layout, self.facts))
                 for p in self.plan.programs if p.database in by_kind}
        return render.plan_files(self.layout, self.plan, self.digest_key, reads) + \
            [f for specs in reads.values() for f in specs]

    def pending_changes(self) -> list[Path]:
        """Program files a boot would change (so changed programs would restart)."""
        return [f.path for f in self.files() if fs.differs(f)]

    # -- files -------------------------------------------------------------------------
    def render(self) -> list[Path]:
        """Write every file of the plan; drop program files the plan no longer has."""
        layout = self.layout
        changed = render_base(layout)
        files = self.files()
        changed += fs.write_all(files)
        keep = {f.path for f in files}
        for folder in (layout.include_dir, layout.env_dir):
            for stale in folder.iterdir():
                if stale.is_file() and stale not in keep and not stale.name.startswith("."):
                    stale.unlink()
                    changed.append(stale)
        return changed

    # -- programs ----------------------------------------------------------------------
    def check(self, program: Program) -> readiness.Probe:
        """Probe a program we did not just start (a second boot finding it up)."""
        info = self.supervisor.info(program.name)
        return readiness.probe(program.readiness, info["statename"], up=readiness.uptime(info))

    def start_and_wait(self, program: Program) -> float:
        """Start (unless starting or running already) and follow that start until the
        program is ready (`readiness.Start`); seconds taken."""
        deadline = Deadline(program.readiness.timeout)
        asked = None
        state = self.supervisor.info(program.name)["statename"]
        if state not in readiness.UP_STATES:
            if program.port is not None and readiness.port_in_use(program.port):
                raise AgentError(f"port {program.port} is already in use by a process this box's supervisord "
                                 "does not manage; stop it, or give the program another port in services.yaml")
            if state == "BACKOFF":  # between two respawns: supervisord would refuse a start
                self.supervisor.stop(program.name)
            asked = readiness.Asked.around(lambda: self.supervisor.start(program.name))
        start = readiness.Start(program.readiness, lambda: self.supervisor.info(program.name), asked)
        result = readiness.wait(start.check, deadline)
        if not result.ready:
            log = fs.tail(self.layout.program_log(program.name))
            raise AgentError(f"not ready: {result.detail}\n"
                             f"--- last lines of {self.layout.program_log(program.name)} ---\n{log}")
        return deadline.elapsed()

    def boot(self, current: state.State) -> state.State:
        """Bring the box to the plan; returns the new state (also saved)."""
        steps = state.Steps()
        for line in release.end_leftovers(self.layout):  # before any release runs again
            self.say(line)
        with steps("render"):
            changed = self.render()
        # database init needs no supervisord: on a first boot, initdb runs while supervisord starts
        if self.plan.databases:
            self._inits = background(self._init_databases, steps)
        with steps("supervisord"):
            early = self.early_supervisord
            started = early.result() if early is not None else self.supervisor.start_daemon()
            if changed or (early is not None and started):  # started before the program files existed
                self.supervisor.update()
        running = {n for n, i in self.supervisor.processes().items() if i["statename"] in ("RUNNING", "STARTING")}
        nodes = [graph.Node(p.name, self._action(p, current, steps, p.name in running), list(p.needs))
                 for p in self.plan.programs]
        errors = {n: e for n, e in graph.run(nodes).items() if e is not None}
        current.record_plan(self.plan)
        current.agent_version = __version__
        root_causes = {n: e for n, e in errors.items() if not isinstance(e, graph.DependencyFailed)}
        if root_causes:
            current.last_error = "; ".join(f"{n}: {str(e).splitlines()[0]}" for n, e in root_causes.items())
            state.save(self.layout, current)
            raise AgentError("boot failed: " + current.last_error,
                             lines=[f"boot failed: {n}: {e}" for n, e in root_causes.items()])
        did_work = any(s.name.startswith(("start", "release", "init")) for s in steps.steps)
        if changed or did_work or current.booted_at is None or current.last_error:
            current.steps = steps.steps
            current.booted_at = time.time()
            current.boot_seconds = round(steps.total(), 3)
            current.last_error = None
            state.save(self.layout, current)
        return current

    def _init_databases(self, steps: state.Steps) -> None:
        """Each database's init; a step is recorded only where it did first-boot work."""
        for db in self.plan.databases:
            started = time.monotonic()
            if kinds.get(db.kind).init(db, self.layout, self.facts):
                steps.record(f"init {db.kind}", time.monotonic() - started)

    def _action(self, program: Program, current: state.State, steps: state.Steps, running: bool) -> Callable[[], None]:
        database = next((db for db in self.plan.databases if db.kind == program.database), None)

        def after_ready() -> None:
            if database is not None:
                kinds.get(database.kind).after_ready(database, self.layout, self.facts)

        def act() -> None:
            if database is not None and self._inits is not None:
                self._inits.result()  # raises what init raised
            if program.kind == "service" and program.release:
                self._release(program, current, steps)
            if running:
                if self.check(program).ready:
                    after_ready()
                    return
            with steps(f"start {program.name}"):
                seconds = self.start_and_wait(program)
            self.say(f"{program.name}: ready ({seconds:.1f}s)")
            if database is not None:
                with steps(f"ready {program.name}"):
                    after_ready()
        return act

    def _release(self, program: Program, current: state.State, steps: state.Steps) -> None:
        """Run the release once per release key (agent.local.release)."""
        key = release_key(self.layout, program)
        if state.release_done(self.layout, program.name, key, legacy=current):
            return
        with steps(f"release {program.name}"):
            release.run(self.layout, program, key)
        self.say(f"{program.name}: release done")


def render_base(layout: Layout) -> list[Path]:
    """The directories and supervisord.conf: everything supervisord needs to start."""
    # logs 0750: programs print what they like (a failing statement, a token)
    for path, mode in ((layout.etc, 0o755), (layout.run, 0o755), (layout.logs, 0o750),
                       (layout.state_dir, 0o755), (layout.env_dir, 0o711), (layout.include_dir, 0o755)):
        fs.ensure_dir(path, mode)
    return fs.write_all([render.supervisord_conf(layout, run_as_root=os.geteuid() == 0)])


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
