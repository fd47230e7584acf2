"""Deploy locks: one per (environment, service), leases in the environment's table.

A lock is an item whose `expires` a running deploy pushes forward every quarter of the
lease (at most two minutes). Nobody unlocks a dead deploy by hand: a deploy killed by
`kill -9`, a cancelled CI job or a lost laptop frees its locks when the lease ends.

- **All or none, in name order.** A deploy of several services takes each service's
  lock in name order; if one is held it gives back what it took, so two deploys never
  hold half of each other's locks.
- **Queueing.** `--wait-lock SECONDS` waits for a held lock (checking every few
  seconds) instead of failing; without it, the refusal names the holder (user@host),
  since when, the command, the deploy id and its phase: exit 4.
- **Losing a lease.** Every renewal and phase change is conditional on the deploy id
  still being the holder's. If it is not (the process was frozen past its lease and
  another deploy took the lock), `check()` raises and the deploy stops at its next step.
- **Forcing.** `unified lock release --force` deletes another's lock, only the one it
  showed (conditional on its deploy id), and says whose it was.

Times are the callers' clocks (epoch seconds): a clock more than a lease minus a renewal
period ahead could take a live lock, so keep operators' clocks in sync (NTP).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable

from agent import deadline
from agent.deadline import Backoff, Deadline, poll
from agent.errors import AgentError
from fleet.errors import LockHeld
from fleet.table import ConditionFailed, Table

MAX_LEASE = 120.0


@dataclass(frozen=True)
class Holder:
    service: str
    who: str
    deploy_id: str
    command: str
    phase: str
    since: float
    expires: float

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Holder:
        """A lock item as written, whatever it holds (a hand-written one included)."""
        return cls(str(item.get("sk", "?")), str(item.get("who", "?")), str(item.get("deploy_id", "?")),
                   str(item.get("command", "?")), str(item.get("phase", "?")), _number(item.get("since")),
                   _number(item.get("expires")))

    def live(self, now: float | None = None) -> bool:
        return self.expires > (time.time() if now is None else now)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return (f"{self.service}: held by {self.who} since {since} for `{self.command}` "
                f"(deploy {self.deploy_id}, phase {self.phase})")

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "holder": self.who, "deploy_id": self.deploy_id, "command": self.command,
                "phase": self.phase, "since": self.since, "expires": self.expires}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _pk(env: str) -> str:
    return f"lock#{env}"


def holders(table: Table, env: str) -> dict[str, Holder]:
    """The live locks of an environment, by service."""
    now = time.time()
    found = (Holder.from_item(item) for item in table.query(_pk(env)))
    return {h.service: h for h in found if h.live(now)}


def force_release(table: Table, env: str, service: str) -> Holder | None:
    """Delete the lock of `service`, exactly the one read; the holder it had, or None."""
    item = table.get(_pk(env), service)
    if item is None or not Holder.from_item(item).live():
        return None
    holder = Holder.from_item(item)
    try:
        table.delete(_pk(env), service, "deploy_id = :theirs", {":theirs": holder.deploy_id})
    except ConditionFailed:
        raise AgentError(f"the lock of {service} changed hands while it was being released; look again "
                         "with `unified lock status`") from None
    return holder


class Locks:
    """The locks of `services` for one deploy, held (and renewed) inside `with`."""

    def __init__(self, table: Table, env: str, services: list[str], deploy_id: str, command: str, who: str,
                 lease: float = MAX_LEASE, wait: float = 0.0, say: Callable[[str], None] = print):
        if not 0 < lease <= MAX_LEASE:
            raise ValueError(f"a lease is more than 0 and at most {MAX_LEASE:.0f} seconds")
        self.table, self.env, self.services = table, env, sorted(set(services))
        self.deploy_id, self.command, self.who = deploy_id, command, who
        self.lease, self.wait, self.say = lease, wait, say
        self.phase_name = "locking"
        self.taken: list[str] = []
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="lock-renewal", daemon=True)

    # -- taking ------------------------------------------------------------------------
    def __enter__(self) -> Locks:
        told: set[str] = set()

        def attempt() -> list[Holder]:
            held = self._take_all()
            for holder in held:
                if holder.deploy_id not in told and self.wait > 0:
                    told.add(holder.deploy_id)
                    self.say(f"waiting for the lock: {holder.describe()}")
            return held

        held = poll(attempt, lambda h: not h, Deadline(self.wait), Backoff(0.5, 1.5, 2.0))
        if held:
            lines = [f"locked: {h.describe()}" for h in held]
            hint = (f"waited {self.wait:.0f}s; " if self.wait else "") + \
                "retry with --wait-lock SECONDS to queue behind it"
            raise LockHeld(lines[0] + f"; {hint}", lines=[*lines, hint])
        self._renewer.start()
        self.say(f"locked {', '.join(self.services)} (lease {self.lease:g}s, renewed while this runs)")
        return self

    def _take_all(self) -> list[Holder]:
        """Take every lock in name order, or none: the holders in the way. A lock whose
        item is not one this tool wrote (no number `expires`) is taken: it holds nothing."""
        for service in self.services:
            for _ in range(5):  # a holder that leaves between the refusal and the read: try again
                now = time.time()
                try:
                    self.table.put(self._item(service, now),
                                   "attribute_not_exists(pk) OR NOT attribute_type(expires, :number) "
                                   "OR expires < :now OR deploy_id = :me",
                                   {":now": now, ":me": self.deploy_id, ":number": "N"}, what="locking in")
                    self.taken.append(service)
                    break
                except ConditionFailed:
                    item = self.table.get(_pk(self.env), service)
                    if item is not None:
                        self._give_back()
                        return [Holder.from_item(item)]
            else:
                self._give_back()
                return [Holder(service, "?", "?", "?", "?", time.time(), time.time())]
        return []

    def _item(self, service: str, now: float) -> dict[str, Any]:
        return {"pk": _pk(self.env), "sk": service, "who": self.who, "deploy_id": self.deploy_id,
                "command": self.command, "phase": self.phase_name, "since": now, "expires": now + self.lease,
                "pid": os.getpid()}

    # -- holding -----------------------------------------------------------------------
    def phase(self, name: str) -> None:
        """Say (in the locks) what the deploy is doing, for whoever is refused; and stop
        here if the lock was lost (found by this very renewal, too) or the command was
        cancelled (SIGTERM, Ctrl-C)."""
        deadline.check_cancelled()
        self.phase_name = name
        self._renew()
        self.check()

    def check(self) -> None:
        if self._lost is not None:
            raise AgentError(f"lost the deploy lock of {self._lost}: another deploy took it after this one "
                             "stopped renewing it; stopping here (nothing more is changed)")

    def _renew(self) -> None:
        now = time.time()
        for service in self.taken:
            try:
                self.table.update(_pk(self.env), service, {"expires": now + self.lease, "phase": self.phase_name},
                                  "deploy_id = :me", {":me": self.deploy_id})
            except ConditionFailed:
                self._lost = service

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                self._renew()
            except AgentError:  # AWS hiccup: the next renewal may pass; the lease has room for three
                pass

    # -- giving back -------------------------------------------------------------------
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join(timeout=10)
        self._give_back()

    def _give_back(self) -> None:
        for service in reversed(self.taken):
            try:
                self.table.delete(_pk(self.env), service, "deploy_id = :me", {":me": self.deploy_id})
            except (ConditionFailed, AgentError):
                pass  # taken over, or AWS unreachable: the lease ends it either way
        self.taken = []
