"""A simulated fleet: every instance moto's Auto Scaling launches boots a real agent.

:class:`SimulatedFleet` is a background reconciler: every ``interval`` (0.2 s) it reads
the groups' instances from moto (``DescribeAutoScalingInstances``, through the harness's
internal client: never in ``MotoServer.calls``) and, for each instance,

* **launch** (first seen): its own root, a copy (``cp -a``) of the baked root of its image
  id (``images``; an image id with no root never boots, like an AMI that does not
  start); its own free loopback port for each service and database in that root's
  ``etc/unified/services.yaml`` (instances share one machine); its own IMDSv2 emulator
  (:meth:`ImdsEmulator.from_moto`: tags read live from moto, instance tags on in IMDS
  when the launch template version says ``InstanceMetadataTags: enabled``, as on EC2);
  then ``agent watch --interval 0.5`` and ``agent boot`` (no ``--mode``: identity from
  IMDS), started together as the systemd units start them (unified-watch does not wait
  for the boot, so a termination during a boot is seen). Both are subprocesses with their own
  environment (:func:`subprocess_env`), their output kept per instance;
* **scale-in** (moto says ``Terminating:Wait`` or another leaving state): the emulator's
  ``autoscaling/target-lifecycle-state`` becomes ``Terminated``, so ``agent watch``
  drains and completes the terminating hook; a detached instance shows ``Detached``;
* **termination** (moto has terminated it, whatever the path: hook completed, ABANDON,
  hook timeout, ForceDelete, EC2 TerminateInstances): the OS shutdown is emulated as
  systemd would run it — ``agent watch`` stopped (SIGTERM), a boot still running given
  ``boot_grace`` (5 s: EC2 takes that long to shut down, moto no time, and a boot that
  just ABANDONed is still exiting) then SIGTERMed (the agent then abandons), ``agent stop
  --drain-timeout shutdown_drain_timeout`` (the boot unit's ExecStop) — then anything
  left under the root
  is killed, the emulator stopped and the root removed. The logs stay in
  ``<base>/logs`` until :meth:`SimulatedFleet.stop`.

Each instance has a runner thread (boots run in parallel); the reconciler itself only
reads moto and signals runners, so a slow boot never delays a scale-in seen elsewhere.
Every wait is bounded (``boot_timeout``, ``stop_timeout``, 15 s for a watch to stop, 10 s
for leftovers to die), and :meth:`SimulatedFleet.stop` tears everything down and returns
what it still found running under its directory (nothing, or a bug).

Timing a test can count on: a moto change is seen within ``interval`` (+ one moto
round trip); ``agent watch`` reacts within its 0.5 s poll; a terminated instance is shut
down within ``interval`` of moto terminating it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml

from tests.conftest import REPO, free_ports, processes_under

from .fixtures import subprocess_env
from .imds import ImdsEmulator
from .moto_fleet import LEAVING_STATES
from .moto_server import MotoServer

SERVICES_PATH = Path("etc/unified/services.yaml")
# IMDS autoscaling/target-lifecycle-state for moto's lifecycle states.
_TARGET_STATE = {"Standby": "Standby", "EnteringStandby": "Standby", "Detached": "Detached"}


def target_lifecycle_state(lifecycle_state: str) -> str:
    """What IMDS says while the group has the instance in ``lifecycle_state``: the state
    it is heading to (Pending:Wait → InService, Terminating:Wait → Terminated)."""
    if lifecycle_state in LEAVING_STATES or lifecycle_state == "Terminated":
        return "Terminated"
    return _TARGET_STATE.get(lifecycle_state, "InService")


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def bake_image(root: Path, services_yaml: str, *, timeout: float = 300) -> Path:
    """An image's root as Packer leaves it: ``services.yaml`` at
    ``etc/unified/services.yaml`` and every repo baked there (``agent bake``)."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    services = root / SERVICES_PATH
    services.parent.mkdir(parents=True, exist_ok=True)
    services.write_text(services_yaml)
    result = subprocess.run(
        agent_command("bake", "--root", str(root), "--services", str(services)),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"agent bake exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return root


def with_own_ports(services_yaml: str) -> tuple[str, dict[str, int]]:
    """``services_yaml`` with a fresh loopback port for every service and database that
    has one; returns the text and ``{service or database: port}``."""
    doc = yaml.safe_load(services_yaml) or {}
    places = [
        (kind, name, entry)
        for kind in ("services", "databases")
        for name, entry in (doc.get(kind) or {}).items()
        if isinstance(entry, dict) and "port" in entry
    ]
    ports = dict(zip((name for _, name, _ in places), free_ports(len(places)))) if places else {}
    for _, name, entry in places:
        entry["port"] = ports[name]
    return yaml.safe_dump(doc, sort_keys=False), ports


@dataclass(frozen=True)
class FleetInstance:
    """One instance as the fleet sees it (a snapshot).

    ``phase``: launching → booting → running (or boot-failed, or no-image) → terminating
    (scale-in seen) → shutting-down → gone. ``lifecycle_state`` is moto's last word
    (``Pending:Wait``, ``InService``, ``Terminating:Wait``, ``Terminated``...).
    ``events`` are ``(time.monotonic(), what)`` in order.
    """

    instance_id: str
    image_id: str
    group: str
    root: Path
    ports: dict[str, int]
    service: str | None
    imds_url: str | None
    phase: str
    lifecycle_state: str
    boot_code: int | None
    boot_output: str
    watch_log: str
    stop_output: str
    error: str | None
    events: tuple[tuple[float, str], ...]

    @property
    def port(self) -> int | None:
        """The port of the service this instance runs (its ``unified:service`` tag), or
        of its only service."""
        if self.service in self.ports:
            return self.ports[self.service]
        return next(iter(self.ports.values())) if len(self.ports) == 1 else None

    @property
    def gone(self) -> bool:
        return self.phase == "gone"

    def happened(self, what: str) -> float | None:
        """When the first event starting with ``what`` happened (monotonic), if it did."""
        return next((at for at, text in self.events if text.startswith(what)), None)

    def happened_in_order(self, *whats: str) -> bool:
        """Every event in ``whats`` happened, each (first occurrence) after the previous."""
        times = [self.happened(what) for what in whats]
        present = [t for t in times if t is not None]
        return len(present) == len(times) and present == sorted(present)


@dataclass
class _Process:
    """An agent subprocess whose output goes to a log file."""

    process: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal it, wait at most ``timeout`` (then SIGKILL), close its log."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.out.close()
        return int(self.process.returncode)


class _Runner:
    """One simulated instance: provision, boot, watch, then shut down once terminated."""

    def __init__(
        self, fleet: SimulatedFleet, instance_id: str, image_id: str, group: str,
        lifecycle_state: str, tags_enabled: bool,
    ) -> None:
        self.fleet = fleet
        self.instance_id = instance_id
        self.image_id = image_id
        self.group = group
        self.lifecycle_state = lifecycle_state
        self.tags_enabled = tags_enabled
        self.root = fleet.base / instance_id
        self.logs = fleet.base / "logs"
        self.ports: dict[str, int] = {}
        self.service: str | None = None
        self.phase = "launching"
        self.boot_code: int | None = None
        self.stop_output = ""
        self.error: str | None = None
        self.events: list[tuple[float, str]] = []
        self.emulator: ImdsEmulator | None = None
        self.imds_url: str | None = None  # while the emulator runs
        self.boot: _Process | None = None
        self.watch: _Process | None = None
        self.terminated = threading.Event()  # moto terminated it, or the fleet stops
        self.thread = threading.Thread(target=self._run, name=f"fleet-{instance_id}", daemon=True)

    # what the reconciler calls ---------------------------------------------------------

    def start(self) -> None:
        self._event(f"launched ({self.lifecycle_state})")
        self.thread.start()

    def saw(self, lifecycle_state: str) -> None:
        """moto's current lifecycle state for this instance (each round)."""
        if lifecycle_state != self.lifecycle_state:
            self._event(f"lifecycle {lifecycle_state}")
            self.lifecycle_state = lifecycle_state
        target = target_lifecycle_state(lifecycle_state)
        if self.emulator is not None:
            self.emulator.set_lifecycle_state(target)
        if target == "Terminated" and self.phase in ("launching", "booting", "running"):
            self._set_phase("terminating")

    def terminate(self, why: str) -> None:
        if not self.terminated.is_set():
            self._event(f"terminated: {why}")
            self.lifecycle_state = "Terminated"
            self.terminated.set()

    # the instance's life (its own thread) --------------------------------------------

    def _run(self) -> None:
        try:
            if self._provision():
                self._boot_and_watch()
            self.terminated.wait(self.fleet.max_lifetime)
        except Exception as exc:  # kept for the test; the instance is still shut down
            self.error = f"{type(exc).__name__}: {exc}"
            self._event(f"error: {self.error}")
        finally:
            try:
                self._shutdown()
            except Exception as exc:
                self.error = f"shutdown: {type(exc).__name__}: {exc}"
                self._event(f"error: {self.error}")
            self._set_phase("gone")

    def _provision(self) -> bool:
        with self.fleet._lock:
            template = self.fleet.images.get(self.image_id)
        if template is None:
            self.error = f"no baked root for image {self.image_id}: it never boots"
            self._set_phase("no-image")
            return False
        subprocess.run(["cp", "-a", f"{template}/.", str(self.root)], check=True, timeout=60)
        self.root.chmod(0o755)
        text, self.ports = with_own_ports(self.fleet.services_for(self.image_id))
        (self.root / SERVICES_PATH).write_text(text)
        self.emulator = ImdsEmulator.from_moto(
            self.fleet.moto,
            self.instance_id,
            tags_enabled=self.tags_enabled,
            lifecycle_state=target_lifecycle_state(self.lifecycle_state),
        ).start()
        self.imds_url = self.emulator.url
        self.service = self.emulator.identity.tags.get("unified:service")
        self._event("provisioned")
        return True

    def _env(self) -> dict[str, str]:
        return {**subprocess_env(self.fleet.moto, self.emulator), "PYTHONPATH": str(REPO)}

    def _spawn(self, name: str, *args: str) -> _Process:
        log = self.logs / f"{self.instance_id}.{name}.log"
        out = open(log, "wb")
        process = subprocess.Popen(
            agent_command(*args, "--root", str(self.root)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=REPO,
        )
        return _Process(process, log, out)

    def _boot_and_watch(self) -> None:
        # as the units start them: watch from the start, whatever becomes of the boot, so
        # a termination during a boot is seen (the watch stops the boot and drains)
        self.watch = self._spawn(
            "watch", "watch", "--interval", str(self.fleet.watch_interval)
        )
        self._set_phase("booting")
        self.boot = self._spawn("boot", "boot")
        deadline = time.monotonic() + self.fleet.boot_timeout
        while self.boot.process.poll() is None:
            if self.terminated.is_set():
                return  # the shutdown stops the boot (SIGTERM: the agent abandons)
            if time.monotonic() > deadline:
                self.error = f"agent boot still running after {self.fleet.boot_timeout}s"
                self.boot.stop(signal.SIGTERM)
                break
            time.sleep(0.05)
        self.boot_code = self.boot.stop()
        self._event(f"boot exited {self.boot_code}")
        if self.boot_code != 0:
            self._set_phase("boot-failed")
            return
        if self.terminated.is_set():
            return
        self._set_phase("running" if self.phase == "booting" else self.phase)

    def _shutdown(self) -> None:
        """What an EC2 termination does to the OS: systemd stops the units, then off."""
        self._set_phase("shutting-down")
        if self.watch is not None:
            self._event(f"watch stopped ({self.watch.stop()})")
        if self.boot is not None and self.boot_code is None:
            # EC2 takes seconds to shut an instance down, moto none: a boot that has just
            # completed its hook (an ABANDON terminates at once) may finish on its own,
            # before or after the termination was seen; its exit code is kept either way.
            if self.boot.process.poll() is None:
                try:
                    self.boot.process.wait(timeout=self.fleet.boot_grace)
                except subprocess.TimeoutExpired:
                    pass
            self.boot_code = self.boot.stop(signal.SIGTERM, timeout=30)
            self._event(f"boot stopped ({self.boot_code})")
        if self.root.exists() and self.boot is not None:
            # the whole fleet going away (the test is over) has nobody to drain for
            drain = ["--no-drain"] if self.fleet.stopping else [
                "--drain-timeout", str(self.fleet.shutdown_drain_timeout)]
            stop = subprocess.run(
                agent_command("stop", "--root", str(self.root), "--wait", "5", *drain),
                capture_output=True,
                text=True,
                timeout=self.fleet.stop_timeout,
                env=self._env(),
                cwd=REPO,
                check=False,
            )
            self.stop_output = f"exit {stop.returncode}\n{stop.stdout}{stop.stderr}"
            self._event(f"agent stop exited {stop.returncode}")
        left = kill_under(self.root)
        if left:
            self.error = f"still running after kill: {left}"
        if self.emulator is not None:
            self.imds_url = None
            self.emulator.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # bookkeeping -----------------------------------------------------------------------

    def _event(self, what: str) -> None:
        with self.fleet._lock:
            self.events.append((time.monotonic(), what))

    def _set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self._event(f"phase {phase}")
            self.phase = phase

    def _read(self, name: str) -> str:
        path = self.logs / f"{self.instance_id}.{name}.log"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def snapshot(self) -> FleetInstance:
        with self.fleet._lock:
            events = tuple(self.events)
        return FleetInstance(
            instance_id=self.instance_id,
            image_id=self.image_id,
            group=self.group,
            root=self.root,
            ports=dict(self.ports),
            service=self.service,
            imds_url=self.imds_url,
            phase=self.phase,
            lifecycle_state=self.lifecycle_state,
            boot_code=self.boot_code,
            boot_output=self._read("boot"),
            watch_log=self._read("watch"),
            stop_output=self.stop_output,
            error=self.error,
            events=events,
        )


def kill_under(root: Path, timeout: float = 10.0) -> list[str]:
    """SIGKILL every process under ``root`` (see :func:`processes_under`) until none is
    left or ``timeout`` passes; return what is still there."""
    deadline = time.monotonic() + timeout
    left = processes_under(root)
    while left and time.monotonic() < deadline:
        for line in left:
            try:
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError, PermissionError):
                pass
        time.sleep(0.1)
        left = processes_under(root)
    return left


class SimulatedFleet:
    """Real agents on every instance moto's Auto Scaling launches (module docstring).

    ``images``: image id → a baked root (:func:`bake_image`). ``services_yaml``: the
    text every instance gets (ports rewritten), or one per image id; by default each
    image's own ``etc/unified/services.yaml``. Use as a context manager, or
    ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        moto: MotoServer,
        images: Mapping[str, Path],
        services_yaml: str | Mapping[str, str] | None = None,
        *,
        interval: float = 0.2,
        watch_interval: float = 0.5,
        boot_timeout: float = 120.0,
        stop_timeout: float = 60.0,
        shutdown_drain_timeout: float = 5.0,
        boot_grace: float = 5.0,
        max_lifetime: float = 900.0,
    ) -> None:
        self.moto = moto
        self.images = {image: Path(root) for image, root in images.items()}
        self.services_yaml = services_yaml
        self.interval = interval
        self.watch_interval = watch_interval
        self.stopping = False  # set by stop(): instances then shut down without draining
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.shutdown_drain_timeout = shutdown_drain_timeout
        self.boot_grace = boot_grace
        self.max_lifetime = max_lifetime  # an instance never outlives this (a bound)
        self.base = Path(tempfile.mkdtemp(prefix="unified-fleet-", dir="/tmp"))
        self.base.chmod(0o755)  # postgres/redis users must reach the roots
        (self.base / "logs").mkdir()
        self._autoscaling = moto.client("autoscaling", internal=True)
        self._ec2 = moto.client("ec2", internal=True)
        self._lock = threading.RLock()
        self._runners: dict[str, _Runner] = {}
        self._template_tags: dict[tuple[str, str], bool] = {}
        self._errors: list[str] = []
        self._rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leftovers: list[str] = []

    def add_image(self, image_id: str, root: Path) -> None:
        """Map one more image id to a baked root (for images registered after start);
        instances launched from it before this call stay unbootable."""
        with self._lock:
            self.images[image_id] = Path(root)

    def services_for(self, image_id: str) -> str:
        if isinstance(self.services_yaml, str):
            return self.services_yaml
        if isinstance(self.services_yaml, Mapping) and image_id in self.services_yaml:
            return self.services_yaml[image_id]
        return (self.images[image_id] / SERVICES_PATH).read_text()

    # lifecycle -----------------------------------------------------------------------

    def start(self) -> SimulatedFleet:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-reconciler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        """Stop the reconciler, shut every instance down, remove everything; return any
        process still found under the fleet's directory (also in ``leftovers``)."""
        self._stop.set()
        self.stopping = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.terminate("the fleet stops")
        deadline = time.monotonic() + self.stop_timeout + 60
        for runner in runners:
            runner.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.leftovers = kill_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)
        return self.leftovers

    def __enter__(self) -> SimulatedFleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # the reconciler ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.reconcile()
            except Exception as exc:  # keep going; a test reads errors
                self._error(f"{type(exc).__name__}: {exc}")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def reconcile(self) -> None:
        """One round: launch what is new, tell runners their state, end the terminated."""
        seen = {
            i["InstanceId"]: i
            for i in self._autoscaling.describe_auto_scaling_instances()["AutoScalingInstances"]
        }
        with self._lock:
            known = dict(self._runners)
        new = [i for i in seen if i not in known]
        if new:
            self._launch(new, seen)
        for instance_id, runner in known.items():
            if runner.terminated.is_set():
                continue
            if instance_id in seen:
                runner.saw(seen[instance_id]["LifecycleState"])
            else:
                self._left_group(runner)
        with self._lock:
            self._rounds += 1

    def _launch(self, new: list[str], seen: Mapping[str, Any]) -> None:
        reservations = self._ec2.describe_instances(InstanceIds=new)["Reservations"]
        images = {i["InstanceId"]: i["ImageId"] for r in reservations for i in r["Instances"]}
        for instance_id in new:
            entry = seen[instance_id]
            runner = _Runner(
                self,
                instance_id,
                images.get(instance_id, "?"),
                entry["AutoScalingGroupName"],
                entry["LifecycleState"],
                self._tags_enabled(entry.get("LaunchTemplate")),
            )
            with self._lock:
                self._runners[instance_id] = runner
            runner.start()

    def _tags_enabled(self, template: Mapping[str, str] | None) -> bool:
        """Whether the launch template version turns instance tags on in IMDS."""
        if not template or not template.get("LaunchTemplateId"):
            return False
        key = (template["LaunchTemplateId"], str(template.get("Version") or "$Default"))
        if key not in self._template_tags:
            [version] = self._ec2.describe_launch_template_versions(
                LaunchTemplateId=key[0], Versions=[key[1]]
            )["LaunchTemplateVersions"]
            options = version["LaunchTemplateData"].get("MetadataOptions", {})
            self._template_tags[key] = options.get("InstanceMetadataTags") == "enabled"
        return self._template_tags[key]

    def _left_group(self, runner: _Runner) -> None:
        """Not in any group any more: terminated (usually) or detached."""
        reservations = self._ec2.describe_instances(InstanceIds=[runner.instance_id])["Reservations"]
        states = [i["State"]["Name"] for r in reservations for i in r["Instances"]]
        if not states or states[0] in ("shutting-down", "terminated"):
            runner.terminate(f"EC2 says {states[0] if states else 'no such instance'}")
        else:
            runner.saw("Detached")

    def _error(self, message: str) -> None:
        with self._lock:
            if len(self._errors) < 100:
                self._errors.append(message)

    # observations --------------------------------------------------------------------

    @property
    def errors(self) -> list[str]:
        """Reconciler failures and per-instance errors (an image without root included)."""
        with self._lock:
            runners = list(self._runners.values())
            errors = list(self._errors)
        return errors + [f"{r.instance_id}: {r.error}" for r in runners if r.error]

    def instances(self, include_gone: bool = True) -> dict[str, FleetInstance]:
        """Every instance seen, by id, in launch order (gone ones too, by default)."""
        with self._lock:
            runners = list(self._runners.values())
        snapshots = (r.snapshot() for r in runners)
        return {s.instance_id: s for s in snapshots if include_gone or not s.gone}

    def instance(self, instance_id: str) -> FleetInstance:
        """One instance (KeyError before the reconciler has seen it: see :meth:`is_gone`)."""
        with self._lock:
            runner = self._runners[instance_id]
        return runner.snapshot()

    def is_gone(self, instance_id: str) -> bool:
        """Seen, terminated and shut down (False while not yet seen)."""
        with self._lock:
            runner = self._runners.get(instance_id)
        return runner is not None and runner.phase == "gone"

    def of_group(self, group: str, include_gone: bool = False) -> list[FleetInstance]:
        return [i for i in self.instances(include_gone).values() if i.group == group]

    @property
    def rounds(self) -> int:
        with self._lock:
            return self._rounds

    def summary(self) -> str:
        """One block per instance: state, and the tails of its logs (for failure messages)."""
        blocks = []
        for i in self.instances().values():
            blocks.append(
                f"{i.instance_id} {i.image_id} {i.group} phase={i.phase} "
                f"lifecycle={i.lifecycle_state} boot={i.boot_code} port={i.port} error={i.error}\n"
                f"  events: {[what for _, what in i.events]}\n"
                f"  boot: {_tail(i.boot_output)}\n  watch: {_tail(i.watch_log)}\n"
                f"  stop: {_tail(i.stop_output)}"
            )
        return "\n".join(blocks) + f"\nfleet errors: {self.errors}"

    # waiting -------------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.1
    ) -> Any:
        """Poll ``predicate`` until it returns something true (returned) or ``timeout``
        passes (AssertionError naming ``what``, with :meth:`summary`)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not after {timeout}s\n{self.summary()}")
            time.sleep(poll)

    def wait_in_service(self, group: str, count: int, timeout: float = 90) -> list[FleetInstance]:
        """``count`` instances of ``group`` booted (``running``) and ``InService`` in moto."""

        def ready() -> list[FleetInstance]:
            found = [
                i for i in self.of_group(group)
                if i.phase == "running" and i.lifecycle_state == "InService"
            ]
            return found if len(found) >= count else []

        return list(self.wait_for(ready, timeout, f"{count} instances of {group} in service"))

    def wait_gone(self, instance_ids: list[str], timeout: float = 60) -> None:
        """Every instance in ``instance_ids`` terminated and shut down (``gone``)."""
        self.wait_for(
            lambda: all(self.is_gone(i) for i in instance_ids),
            timeout,
            f"{instance_ids} gone",
        )


@dataclass(frozen=True)
class FleetNetwork:
    """What :func:`seed_load_balancer` created: the pieces a group and a deploy need."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    load_balancer_arn: str
    listener_arn: str
    target_groups: dict[str, str]  # name -> ARN

    @property
    def zone_identifier(self) -> str:
        """``VPCZoneIdentifier`` for CreateAutoScalingGroup."""
        return ",".join(self.subnet_ids)


def seed_load_balancer(
    moto: MotoServer,
    target_groups: list[str],
    *,
    port: int = 8000,
    deregistration_delay: int = 1,
    name: str = "unified-alb",
) -> FleetNetwork:
    """A VPC with two subnets, an ALB, its target groups (HTTP, ``port``, the given
    deregistration delay) and an HTTP :80 listener forwarding to the first group.
    Seeded through the internal clients: not in ``moto.calls``."""
    ec2 = moto.client("ec2", internal=True)
    elbv2 = moto.client("elbv2", internal=True)
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_ids = tuple(
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for i, zone in enumerate((f"{moto.region}a", f"{moto.region}b"), start=1)
    )
    balancer = elbv2.create_load_balancer(Name=name, Subnets=list(subnet_ids), Type="application")
    balancer_arn = balancer["LoadBalancers"][0]["LoadBalancerArn"]
    arns: dict[str, str] = {}
    for group in target_groups:
        arn = elbv2.create_target_group(
            Name=group, Protocol="HTTP", Port=port, VpcId=vpc_id, TargetType="instance"
        )["TargetGroups"][0]["TargetGroupArn"]
        elbv2.modify_target_group_attributes(
            TargetGroupArn=arn,
            Attributes=[
                {"Key": "deregistration_delay.timeout_seconds", "Value": str(deregistration_delay)}
            ],
        )
        arns[group] = arn
    listener = elbv2.create_listener(
        LoadBalancerArn=balancer_arn,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": arns[target_groups[0]]}],
    )["Listeners"][0]["ListenerArn"]
    return FleetNetwork(vpc_id, subnet_ids, balancer_arn, listener, arns)


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


__all__ = [
    "FleetInstance",
    "FleetNetwork",
    "SimulatedFleet",
    "agent_command",
    "bake_image",
    "kill_under",
    "seed_load_balancer",
    "target_lifecycle_state",
    "with_own_ports",
]
