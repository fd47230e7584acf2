"""An Application Load Balancer stand-in: HAProxy on 127.0.0.1 mirroring one moto listener.

:class:`AlbMirror` reads one ALB listener from moto every ``interval`` (50 ms) — its
default action, its rules, and the target health of every target group they name — and
makes HAProxy route the way the ALB would:

* **Weighted forward.** The default action (and each rule's action) is a *route*: a
  backend ``r_default`` / ``r_<k>`` with one server per target group, whose HAProxy
  weight is the group's ALB weight (0..999 scaled into HAProxy's 0..256, exact when all
  are at most 256). Weighted round robin is deterministic: 90/10 sends exactly 9 of every
  10 requests to the first group; weight 0 sends none. A plain ``TargetGroupArn`` forward
  is weight 1. When the weights change, raises are applied before cuts, so no request
  ever finds every weight at 0 in between.
* **Target groups.** Each route server leads (over an abstract unix socket, ``abns@``)
  to a per-group frontend and backend ``g<i>`` holding ``slots_per_group`` server slots.
  A registered target ``(instance id, port)`` takes a free slot (``set server ... addr
  127.0.0.1 port P``: every simulated instance listens on loopback); its ELB state sets
  the slot's: ``healthy`` → ready, ``draining`` → drain (in-flight requests finish, no new
  one), anything else (``initial``, ``unhealthy``, ``unused``, gone) → maint. A group
  with no usable target answers 503, like the ALB.
* **Fail-open** (``fail_open=True``, the default, as on AWS): when a group has registered
  targets but none ``healthy`` and some ``unhealthy``, the ALB sends requests to the
  unhealthy ones anyway; so does the mirror. moto itself never reports ``unhealthy``
  (it runs no health check); :func:`tests.harness.moto_fleet.set_target_health` forces it.
  This is why a deploy tool cannot read "the load balancer sends traffic to it" as "it
  works": it must probe the new instances itself.
* **Rules** with one ``http-header`` condition (name + values, ``*`` and ``?`` wildcards,
  case-insensitive, as on AWS) and a forward action: the frontend picks the route with
  ``req.hdrs,map_reg(rules.map,r_default)``; the map holds one anchored regex per rule,
  in priority order. Rules come and go at runtime through the runtime API's versioned
  maps (``prepare map`` / ``add map @v`` / ``commit map @v``): the new rule set replaces
  the old one atomically, with no reload, so counters, server states and connections
  survive (a hitless reload would start a new process with fresh counters and let old
  keep-alive connections follow the old rules for a while). A rule with any other
  condition or action is not mirrored: it is reported in ``errors`` and ignored.
* **Counters** per target group (:meth:`AlbMirror.counters`): requests the default
  action sent to it (``default``: "customer" requests, which matched no rule) and those a
  rule sent to it (``rules``), with the group's answers by status class. A test proves
  "zero customer requests reached group X" with ``counters()[X].default == 0``.

Every applied change is kept with its ``time.monotonic()`` time in
:attr:`AlbMirror.transitions`; :meth:`AlbMirror.wait_synced` returns once a whole
mirror round that started after the call has been applied (so whatever the test just
did in moto is in HAProxy). Polls use the harness's internal boto3 clients: never in
``MotoServer.calls``, never faulted.

HAProxy settings are the ones of :class:`tests.harness.haproxy.Haproxy` (``retries 0``,
one request per server connection, clients kept alive), so a request sent to a stopped
target fails visibly instead of being retried elsewhere.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .haproxy import Haproxy, HaproxyError
from .moto_server import MotoServer

ELB_TO_HAPROXY = {"healthy": "ready", "draining": "drain"}  # anything else: maint
MAX_HAPROXY_WEIGHT = 256
DEFAULT_ROUTE = "r_default"


def target_group_name(arn: str) -> str:
    """``arn:...:targetgroup/NAME/ID`` → ``NAME``."""
    return arn.split(":targetgroup/", 1)[-1].split("/", 1)[0]


def haproxy_weights(weights: Mapping[str, int]) -> dict[str, int]:
    """ALB weights (0..999) → HAProxy weights (0..256), keeping the proportions.

    Unchanged when every weight fits (the usual 0/100, 90/10, 50/50); otherwise scaled
    so the largest is 256, and a non-zero weight never rounds to 0.
    """
    top = max(weights.values(), default=0)
    if top <= MAX_HAPROXY_WEIGHT:
        return dict(weights)
    return {k: (max(1, round(w * MAX_HAPROXY_WEIGHT / top)) if w else 0) for k, w in weights.items()}


def _regex_literal(text: str) -> str:
    """``text`` as a PCRE2 literal written for HAProxy's runtime API: letters and digits
    as they are, anything else as ``\\x{hh}`` (the CLI eats one backslash, so two go)."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\\\x{{{ord(c):x}}}" for c in text)


def header_rule_regex(name: str, values: Iterable[str]) -> str:
    """The ``map_reg`` key matching a request whose header ``name`` equals one of
    ``values`` (ALB: case-insensitive, ``*`` any run, ``?`` one character), applied to
    ``req.hdrs`` (``name: value\\r\\n`` per header). No space or raw backslash in it, so
    it passes the runtime API's word splitting as one word."""

    def value(v: str) -> str:
        return "".join(".*" if c == "*" else "." if c == "?" else _regex_literal(c) for c in v)

    alternatives = "|".join(value(v) for v in values)
    return (
        f"(?i)(^|[[:cntrl:]]){_regex_literal(name)}:[[:blank:]]*(?:{alternatives})"
        "[[:blank:]]*[[:cntrl:]]"
    )


@dataclass(frozen=True)
class AlbTransition:
    """One change applied to HAProxy. ``kind``: "target" (``subject`` is
    ``group/instance:port``, ``state`` the HAProxy state, ``detail`` the ELB state),
    "weight" (``subject`` is ``route/group``, ``state`` the ALB weight) or "rules"
    (``detail`` describes the committed rule list)."""

    at: float
    kind: str
    subject: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class GroupCounters:
    """Requests HAProxy sent to one target group, by the route that chose it."""

    default: int  # sent by the listener's default action: matched no rule
    rules: int  # sent by a rule's action
    hrsp_2xx: int
    hrsp_5xx: int
    errors: int  # eresp + econ on the group's backend

    @property
    def total(self) -> int:
        return self.default + self.rules


@dataclass(frozen=True)
class _Rule:
    priority: int
    arn: str
    header: str
    values: tuple[str, ...]
    forward: tuple[tuple[str, int], ...]  # (target group ARN, ALB weight)

    @property
    def regex(self) -> str:
        return header_rule_regex(self.header, self.values)


@dataclass
class _Slots:
    """One target group's HAProxy backend ``g<i>`` and its server slots."""

    index: int
    arn: str
    free: list[int]  # slot numbers, least recently used first
    by_target: dict[tuple[str, int], int] = field(default_factory=dict)
    applied: dict[tuple[str, int], str] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return f"g{self.index}"


class AlbHaproxy(Haproxy):
    """The HAProxy process behind :class:`AlbMirror` (its own configuration; the start,
    stop, runtime API and log of :class:`Haproxy`)."""

    def __init__(
        self, groups: int, slots: int, routes: int, *, timeout_server_s: float = 30.0
    ) -> None:
        super().__init__([("unused", 1)], timeout_server_s=timeout_server_s)
        self.groups, self.slots, self.routes = groups, slots, routes
        self.socket_tag = f"unified-alb-{secrets.token_hex(6)}"  # abstract sockets are global

    @property
    def route_names(self) -> list[str]:
        return [DEFAULT_ROUTE, *(f"r_{k}" for k in range(self.routes))]

    @property
    def map_path(self) -> str:
        assert self._dir is not None
        return str(self._dir / "rules.map")

    def config(self) -> str:
        assert self._dir is not None and self.port is not None
        (self._dir / "rules.map").write_text("")
        route_servers = "\n".join(
            f"    server g{i} abns@{self.socket_tag}-g{i} weight 0" for i in range(self.groups)
        )
        routes = "\n".join(
            f"backend {name}\n    balance roundrobin\n{route_servers}\n" for name in self.route_names
        )
        groups = "\n".join(
            f"frontend gf{i}\n    bind abns@{self.socket_tag}-g{i}\n    default_backend g{i}\n\n"
            f"backend g{i}\n    balance roundrobin\n"
            f"    server-template t 1-{self.slots} 127.0.0.1:1\n"
            for i in range(self.groups)
        )
        return f"""\
global
    stats socket {self.socket_path} level admin mode 600
    stats timeout 10s
    maxconn 4096

defaults
    mode http
    timeout connect 500ms
    timeout client 30s
    timeout server {int(self.timeout_server_s * 1000)}ms
    timeout http-request 10s
    timeout http-keep-alive 10s
    retries 0
    option http-server-close
    http-reuse never

frontend fe
    bind 127.0.0.1:{self.port}
    use_backend %[req.hdrs,map_reg({self.map_path},{DEFAULT_ROUTE})]

{routes}
{groups}"""

    def ok(self, line: str) -> None:
        """Run a runtime API command that answers nothing (or a harmless note) on success."""
        answer = self.command(line).strip()
        if answer and not answer.startswith(("no need to change", "IP changed", "port changed")):
            raise HaproxyError(f"{line}: {answer}")

    def stat_rows(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.command("show stat").lstrip("# "))))


class AlbMirror:
    """HAProxy mirroring one moto ALB listener (see the module docstring).

    ``target_groups`` (ARNs) are bound to HAProxy backends at start, in order; any other
    group a listener action or rule names is bound when first seen, up to
    ``max_target_groups``. Use as a context manager or ``start()``/``stop()``.
    """

    def __init__(
        self,
        moto: MotoServer,
        listener_arn: str,
        *,
        target_groups: Iterable[str] = (),
        interval: float = 0.05,
        fail_open: bool = True,
        max_target_groups: int = 6,
        slots_per_group: int = 6,
        max_rules: int = 4,
        timeout_server_s: float = 30.0,
    ) -> None:
        self.listener_arn = listener_arn
        self.interval = interval
        self.fail_open = fail_open
        self.haproxy = AlbHaproxy(
            max_target_groups, slots_per_group, max_rules, timeout_server_s=timeout_server_s
        )
        self._initial_groups = list(target_groups)
        self._elbv2 = moto.client(
            "elbv2",
            internal=True,
            connect_timeout=1,
            read_timeout=5,
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._groups: dict[str, _Slots] = {}  # target group ARN -> its backend
        self._weights: dict[tuple[str, int], int] = {}  # (route, group index) -> HAProxy weight
        self._alb_weights: dict[str, dict[str, int]] = {}  # route -> {group name: ALB weight}
        self._rules: list[tuple[_Rule, str]] = []  # committed, in priority order, with route
        self._transitions: list[AlbTransition] = []
        self._errors: list[str] = []
        self._reported: set[str] = set()
        self._started_rounds = 0
        self._finished_rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------

    def start(self) -> AlbMirror:
        self.haproxy.start()
        try:
            for i in range(self.haproxy.groups):
                for slot in range(1, self.haproxy.slots + 1):
                    self.haproxy.ok(f"set server g{i}/t{slot} state maint")
            for arn in self._initial_groups:
                self._bind(arn)
            self._round()  # errors here are raised: the mirror must work from the start
        except Exception:
            self.haproxy.stop()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="alb-mirror", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.haproxy.stop()

    def __enter__(self) -> AlbMirror:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the listener."""
        return self.haproxy.url

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._round()
            except Exception as exc:  # keep mirroring; the test can read errors
                self._error(f"{type(exc).__name__}: {exc}")
                with self._changed:  # a failed round still ends (wait_synced needs it)
                    self._finished_rounds = self._started_rounds
                    self._changed.notify_all()

    # one round -----------------------------------------------------------------------

    def _round(self) -> None:
        with self._changed:
            self._started_rounds += 1
            number = self._started_rounds
        default, rules = self._read_listener()
        for arn, _ in default:
            self._bind(arn)
        for rule in rules:
            for arn, _ in rule.forward:
                self._bind(arn)
        for group in list(self._groups.values()):
            self._apply_targets(group, self._read_health(group.arn))
        self._apply_routes(default, rules)
        with self._changed:
            self._finished_rounds = max(self._finished_rounds, number)
            self._changed.notify_all()

    def _read_listener(self) -> tuple[list[tuple[str, int]], list[_Rule]]:
        [listener] = self._elbv2.describe_listeners(ListenerArns=[self.listener_arn])["Listeners"]
        default = self._forward(listener.get("DefaultActions", []), "the default action")
        rules: list[_Rule] = []
        answer = self._elbv2.describe_rules(ListenerArn=self.listener_arn)["Rules"]
        for rule in answer:
            if rule.get("IsDefault") or rule.get("Priority") == "default":
                continue
            parsed = self._rule(rule)
            if parsed is not None:
                rules.append(parsed)
        return default, sorted(rules, key=lambda r: r.priority)

    def _forward(self, actions: list[dict[str, Any]], what: str) -> list[tuple[str, int]]:
        """A forward action as ``[(target group ARN, weight)]`` (anything else: [])."""
        forwards = [a for a in actions if a.get("Type") == "forward"]
        if len(forwards) != 1 or len(actions) != 1:
            self._error(f"{what}: only a single forward action is mirrored, not {actions}")
            return []
        action = forwards[0]
        config = action.get("ForwardConfig", {}).get("TargetGroups")
        if config:
            return [(g["TargetGroupArn"], int(g.get("Weight", 1))) for g in config]
        return [(action["TargetGroupArn"], 1)] if action.get("TargetGroupArn") else []

    def _rule(self, rule: dict[str, Any]) -> _Rule | None:
        conditions = rule.get("Conditions", [])
        header = conditions[0].get("HttpHeaderConfig") if len(conditions) == 1 else None
        what = f"rule {rule.get('Priority')} ({rule.get('RuleArn')})"
        if len(conditions) != 1 or conditions[0].get("Field") != "http-header" or not header:
            self._error(f"{what}: only one http-header condition is mirrored, not {conditions}")
            return None
        forward = self._forward(rule.get("Actions", []), what)
        if not forward:
            return None
        return _Rule(
            priority=int(rule["Priority"]),
            arn=rule["RuleArn"],
            header=header["HttpHeaderName"],
            values=tuple(header.get("Values", [])),
            forward=tuple(forward),
        )

    def _read_health(self, arn: str) -> dict[tuple[str, int], str]:
        """Every target moto lists for the group (registered and draining): state."""
        answer = self._elbv2.describe_target_health(TargetGroupArn=arn)
        return {
            (d["Target"]["Id"], int(d["Target"].get("Port") or 0)): d["TargetHealth"]["State"]
            for d in answer.get("TargetHealthDescriptions", [])
        }

    # applying ------------------------------------------------------------------------

    def _bind(self, arn: str) -> _Slots | None:
        if arn in self._groups:
            return self._groups[arn]
        if len(self._groups) >= self.haproxy.groups:
            self._error(f"no HAProxy backend left for target group {arn} (max_target_groups)")
            return None
        group = _Slots(len(self._groups), arn, list(range(1, self.haproxy.slots + 1)))
        with self._lock:
            self._groups[arn] = group
        return group

    def _wanted_states(self, health: Mapping[tuple[str, int], str]) -> dict[tuple[str, int], str]:
        states = {t: ELB_TO_HAPROXY.get(s, "maint") for t, s in health.items()}
        failing_open = (
            self.fail_open
            and "healthy" not in health.values()
            and "unhealthy" in health.values()
        )
        if failing_open:
            states.update({t: "ready" for t, s in health.items() if s == "unhealthy"})
        return states

    def _apply_targets(self, group: _Slots, health: Mapping[tuple[str, int], str]) -> None:
        wanted = self._wanted_states(health)
        name = target_group_name(group.arn)
        for target, state in wanted.items():
            if target not in group.by_target:
                if state == "maint":
                    continue  # nothing to route to it: no slot needed yet
                if not group.free:
                    self._error(f"no free slot in {name} for {target} (slots_per_group)")
                    continue
                slot = group.free.pop(0)
                group.by_target[target] = slot
                self.haproxy.ok(f"set server {group.backend}/t{slot} addr 127.0.0.1 port {target[1]}")
            if group.applied.get(target) != state:
                self.haproxy.ok(f"set server {group.backend}/t{group.by_target[target]} state {state}")
                group.applied[target] = state
                self._record("target", f"{name}/{target[0]}:{target[1]}", state, health[target])
        for target in [t for t in group.by_target if t not in wanted]:  # gone from moto
            slot = group.by_target.pop(target)
            if group.applied.pop(target, None) != "maint":
                self.haproxy.ok(f"set server {group.backend}/t{slot} state maint")
                self._record("target", f"{name}/{target[0]}:{target[1]}", "maint", "absent")
            group.free.append(slot)

    def _apply_routes(self, default: list[tuple[str, int]], rules: list[_Rule]) -> None:
        """Weights of every route, then the rule map: raises first, the map, then cuts."""
        current_routes = {route for _, route in self._rules}
        keep = {rule.arn: route for rule, route in self._rules}
        spare = [r for r in self.haproxy.route_names[1:] if r not in current_routes]
        assigned: list[tuple[_Rule, str]] = []
        for rule in rules[: self.haproxy.routes]:
            route = keep.get(rule.arn) or (spare.pop(0) if spare else None)
            if route is None:
                self._error(f"no HAProxy route left for rule {rule.priority} (max_rules)")
                continue
            assigned.append((rule, route))
        for rule in rules[self.haproxy.routes :]:
            self._error(f"rule {rule.priority} not mirrored: more than max_rules rules")
        wanted: dict[str, list[tuple[str, int]]] = {DEFAULT_ROUTE: default}
        wanted.update({route: list(rule.forward) for rule, route in assigned})
        used = set(wanted)
        for route in self.haproxy.route_names:
            if route not in used:
                wanted[route] = []
        self._apply_weights(wanted, raises=True)
        if [(r.arn, r.regex, route) for r, route in assigned] != [
            (r.arn, r.regex, route) for r, route in self._rules
        ]:
            self._commit_rules(assigned)
        self._apply_weights(wanted, raises=False)

    def _apply_weights(self, wanted: Mapping[str, list[tuple[str, int]]], raises: bool) -> None:
        for route, forward in wanted.items():
            alb = {arn: weight for arn, weight in forward}
            scaled = haproxy_weights({target_group_name(a): w for a, w in alb.items()})
            for arn, group in list(self._groups.items()):
                weight = scaled.get(target_group_name(arn), 0)
                key = (route, group.index)
                old = self._weights.get(key, 0)
                if weight == old or (weight > old) != raises:
                    continue
                self.haproxy.ok(f"set server {route}/{group.backend} weight {weight}")
                self._weights[key] = weight
                self._record("weight", f"{route}/{target_group_name(arn)}", str(alb.get(arn, 0)))
            with self._lock:
                self._alb_weights[route] = {target_group_name(a): w for a, w in alb.items()}

    def _commit_rules(self, assigned: list[tuple[_Rule, str]]) -> None:
        """Replace the whole rule map atomically (a new map version, then commit)."""
        path = self.haproxy.map_path
        answer = self.haproxy.command(f"prepare map {path}")
        found = re.search(r"New version created: (\d+)", answer)
        if found is None:
            raise HaproxyError(f"prepare map {path}: {answer.strip()}")
        version = found.group(1)
        for rule, route in assigned:
            self.haproxy.ok(f"add map @{version} {path} {rule.regex} {route}")
        self.haproxy.ok(f"commit map @{version} {path}")
        with self._lock:
            self._rules = list(assigned)
        summary = "; ".join(
            f"{r.priority}: {r.header} in {list(r.values)} -> {route}" for r, route in assigned
        )
        self._record("rules", path, str(len(assigned)), summary or "none")

    # observations --------------------------------------------------------------------

    def _record(self, kind: str, subject: str, state: str, detail: str = "") -> None:
        with self._lock:
            self._transitions.append(AlbTransition(time.monotonic(), kind, subject, state, detail))

    def _error(self, message: str) -> None:
        with self._lock:
            if message not in self._reported and len(self._errors) < 100:
                self._reported.add(message)
                self._errors.append(message)

    @property
    def transitions(self) -> list[AlbTransition]:
        """Every change applied since start, in order (a snapshot)."""
        with self._lock:
            return list(self._transitions)

    def target_states(self, group: str | None = None) -> list[tuple[str, str]]:
        """``[(subject, haproxy state)]`` of target transitions (of one group by name)."""
        return [
            (t.subject, t.state)
            for t in self.transitions
            if t.kind == "target" and (group is None or t.subject.startswith(f"{group}/"))
        ]

    @property
    def errors(self) -> list[str]:
        """What could not be mirrored, or a failed round (each message once)."""
        with self._lock:
            return list(self._errors)

    def weights(self) -> dict[str, dict[str, int]]:
        """Route (``r_default``, ``r_<k>``) → {target group name: ALB weight} as applied."""
        with self._lock:
            return {route: dict(w) for route, w in self._alb_weights.items() if w}

    def rules(self) -> list[tuple[int, str, tuple[str, ...], str]]:
        """The committed rules: ``(priority, header, values, route)`` in priority order."""
        with self._lock:
            return [(r.priority, r.header, r.values, route) for r, route in self._rules]

    def counters(self) -> dict[str, GroupCounters]:
        """Per target group name: requests by route, and its backend's answers."""
        rows = self.haproxy.stat_rows()
        with self._lock:
            groups = dict(self._groups)
        found: dict[str, GroupCounters] = {}
        for arn, group in groups.items():
            routed = {
                row["pxname"]: int(row.get("stot") or 0)
                for row in rows
                if row.get("svname") == group.backend and row.get("pxname", "").startswith("r_")
            }
            [backend] = [
                r for r in rows if r.get("pxname") == group.backend and r.get("svname") == "BACKEND"
            ]
            found[target_group_name(arn)] = GroupCounters(
                default=routed.get(DEFAULT_ROUTE, 0),
                rules=sum(n for route, n in routed.items() if route != DEFAULT_ROUTE),
                hrsp_2xx=int(backend.get("hrsp_2xx") or 0),
                hrsp_5xx=int(backend.get("hrsp_5xx") or 0),
                errors=int(backend.get("eresp") or 0) + int(backend.get("econ") or 0),
            )
        return found

    def wait_synced(self, timeout: float = 5.0) -> None:
        """Block until a whole round that started after this call has been applied."""
        deadline = time.monotonic() + timeout
        with self._changed:
            goal = self._started_rounds + 1
            while self._finished_rounds < goal:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"the ALB mirror did not complete a round in {timeout}s "
                        f"(errors: {self._errors[-3:]})"
                    )
                self._changed.wait(min(left, 0.5))


__all__ = [
    "AlbHaproxy",
    "AlbMirror",
    "AlbTransition",
    "GroupCounters",
    "haproxy_weights",
    "header_rule_regex",
    "target_group_name",
]
