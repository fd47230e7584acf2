"""A moto server on 127.0.0.1 that behaves enough like AWS to test the agent end to end.

What it adds to plain moto, and why:

* **The Auto Scaling lifecycle calls moto 5.2 lacks.** ``CompleteLifecycleAction`` and
  ``RecordLifecycleActionHeartbeat`` are missing from ``moto/autoscaling/responses.py``
  (moto answers ``NotImplementedError`` → HTTP 500). They are added as methods of moto's
  own ``AutoScalingResponse`` class, so moto parses the parameters and serialises the XML
  and the ``ValidationError`` bodies from the botocore model, exactly like its other
  calls. Like AWS they refuse (``ValidationError``, HTTP 400) a hook that does not exist
  on the group, an instance that is not in the group, a result other than CONTINUE or
  ABANDON, and a second completion of the same action ("No active Lifecycle Action
  found with instance ID ...": once completed, the action is gone). Successful calls are
  recorded on the :class:`MotoServer` that served them (``lifecycle_actions``).
* **ELBv2 draining** (:func:`install_draining`). Plain moto drops a deregistered target
  at once; AWS keeps it ``draining`` for the target group's
  ``deregistration_delay.timeout_seconds`` (300 by default), which is exactly the wait the
  agent must honour before stopping a service. Requests served by a :class:`MotoServer`
  get AWS's behaviour: ``draining`` / ``Target.DeregistrationInProgress`` for the delay,
  then gone; registering again during the delay makes the target ``healthy`` at once.
  :func:`seed_group` seeds several instances behind one target group and one group.
* **Fault injection and a call log**, in a WSGI middleware in front of moto's app:
  every AWS request is logged as ``ApiCall(service, action)`` in ``calls`` and may be
  answered with a throttling error instead (see :meth:`MotoServer.inject_throttling`),
  or held for a while before moto answers it (:meth:`MotoServer.inject_delay`: a slow
  endpoint, so a test can act while the caller is inside an HTTP request).
  The error body follows the protocol of the service, so botocore parses the code and
  its retry modes treat it as throttling: query services (autoscaling, ELB, STS) get
  ``<ErrorResponse>`` with ``Throttling`` and HTTP 400; EC2 gets its own
  ``<Response><Errors>`` with ``RequestLimitExceeded`` and HTTP 503, as real EC2 does;
  JSON services (SSM) get ``{"__type": "ThrottlingException"}`` and HTTP 400.

Why not ``moto.server.ThreadedMotoServer`` itself: it builds its WSGI app inside a
private method and offers no seam for a middleware, so this module does the same three
things it does (moto's ``DomainDispatcherApplication`` + werkzeug ``make_server`` + a
thread) with the middleware in between.

Facts about moto 5.2.1 that tests rely on (checked against moto, not assumed):

* moto keeps its state per process, not per server: every ``MotoServer`` (and any
  ``mock_aws`` in the same process) shares the same backends. ``reset()`` wipes all of
  them through ``/moto-api/reset``. The first EC2 request after a reset loads moto's AMI
  catalogue (~1 s the first time in a process, ~0.1 s later), which is why the pytest
  fixture keeps one server per session and resets it per test.
* Instances launched by an Auto Scaling group are tagged ``aws:autoscaling:groupName``
  = group name, plus ``aws:ec2launchtemplate:id`` / ``aws:ec2launchtemplate:version``,
  the launch template's ``TagSpecifications`` tags and the group tags with
  ``PropagateAtLaunch=True`` (not the others). moto launches them when the group is
  created, in state ``InService`` (there is no ``Pending:Wait``), and ignores both
  ``LifecycleHookSpecificationList`` and the launch template's ``MetadataOptions``
  (the instance reports ``InstanceMetadataTags: disabled``, ``HttpTokens: optional``).
* ``describe_target_health`` (ELBv2) reports a registered running instance as
  ``healthy`` at once: there is no ``initial`` state and no health check is run. In
  plain moto (``mock_aws``, or ``MotoServer(emulate_draining=False)``), after
  ``deregister_targets`` the target vanishes from the unfiltered answer immediately;
  asked for explicitly it is ``unused`` / ``Target.NotRegistered``; moto has no
  ``draining`` state: ``deregistration_delay.timeout_seconds`` is stored (default
  ``"300"``) and returned by ``describe_target_group_attributes`` but has no effect, and
  deregistering a target that is not registered is ``InvalidTarget`` (AWS: success).
  The harness's draining emulation changes exactly these points. A stopped instance is
  ``unused`` / ``Target.InvalidState``.
* An Auto Scaling group launches all its instances in one reservation in one subnet,
  whatever ``VPCZoneIdentifier`` lists (no zone balancing).
* Classic ELB: ``describe_instance_health`` says ``InService`` at once after
  registration, and the instance is gone right after deregistration; connection
  draining is off by default and has no effect either.
* Lifecycle hooks default to ``HeartbeatTimeout`` 3600, ``DefaultResult`` ABANDON,
  ``GlobalTimeout`` 172800.
* ``run_instances`` accepts any AMI id without checking it, so :func:`seed_instance`
  uses a fixed one instead of paying for ``describe_images``.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import boto3
import flask
import requests
from botocore.config import Config
from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup, elbv2_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Response
from werkzeug.wsgi import get_input_stream

from .moto_fleet import install_fleet_patches

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
ACCESS_KEY = "testing"
# A real public AMI id from moto's catalogue (amzn2 x86_64); moto does not check it anyway.
DEFAULT_IMAGE_ID = "ami-04681a1dbd79675a5"

# Requests whose User-Agent carries this marker come from the harness itself (seeding,
# the IMDS emulator reading its instance): they are neither logged nor faulted, so
# ``calls`` counts only what the code under test does.
HARNESS_USER_AGENT_MARKER = "unified-test-harness"
_LEDGER_ENVIRON_KEY = "unified.harness.lifecycle_ledger"
_DRAINING_ENVIRON_KEY = "unified.harness.emulate_draining"
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/\s,]+/\d{8}/[^/]+/([^/]+)/aws4_request")


class ApiCall(NamedTuple):
    """One AWS request seen by the server: SigV4 service name and API action."""

    service: str
    action: str


RESOURCE_TAGS = "__resource_tags"   # added to ApiRequest.params by the harness
RESOURCE_ID = "__resource_id"


class ApiRequest(NamedTuple):
    """One AWS request with its parameters (form fields, or the JSON body's members):
    what an IAM check needs to know which resource a call touched."""

    service: str
    action: str
    params: dict[str, Any]
    user_agent: str = ""


# --------------------------------------------------------------------------------------
# The lifecycle calls moto lacks
# --------------------------------------------------------------------------------------


class LifecycleLedger:
    """Thread-safe record of lifecycle calls, and of the actions already completed.

    The ledger belongs to one :class:`MotoServer`; its middleware puts it in each request's
    WSGI environ, where the responder finds it, so recordings never leak between servers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._completed: set[tuple[str, str, str]] = set()

    def apply(self, record: dict[str, Any], key: tuple[str, str, str], completes: bool) -> bool:
        """Record ``record`` unless ``key`` was already completed; return whether it was."""
        with self._lock:
            if key in self._completed:
                return False
            if completes:
                self._completed.add(key)
            self._records.append(record)
            return True

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._records]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._completed.clear()


def _lifecycle_call(response: AutoScalingResponse, action: str) -> EmptyResult:
    """Validate and record one lifecycle call the way AWS validates it."""
    group = response._get_param("AutoScalingGroupName")
    hook = response._get_param("LifecycleHookName")
    token = response._get_param("LifecycleActionToken")
    instance_id = response._get_param("InstanceId")
    result = response._get_param("LifecycleActionResult")
    for name, value in (("AutoScalingGroupName", group), ("LifecycleHookName", hook)):
        if not value:
            raise ValidationError(f"1 validation error detected: {name} must not be null")
    if not token and not instance_id:
        raise ValidationError("Either LifecycleActionToken or InstanceId must be specified")
    completes = action == "CompleteLifecycleAction"
    if completes and result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"Invalid LifecycleActionResult {result!r}: use CONTINUE or ABANDON")

    subject = f"instance ID {instance_id}" if instance_id else f"token {token}"
    no_action = f"No active Lifecycle Action found with {subject}"
    backend = response.autoscaling_backend
    if not backend.describe_lifecycle_hooks(as_name=group, lifecycle_hook_names=[hook]):
        raise ValidationError(f"{no_action} (no lifecycle hook {hook!r} on group {group!r})")
    if instance_id and not _instance_in_group(backend, group, instance_id):
        raise ValidationError(f"{no_action} (instance is not in group {group!r})")

    ledger = _current_ledger()
    if ledger is not None:
        record = {
            "action": action,
            "AutoScalingGroupName": group,
            "LifecycleHookName": hook,
            "LifecycleActionToken": token,
            "InstanceId": instance_id,
            "LifecycleActionResult": result,
            "time": time.time(),
        }
        if not ledger.apply(record, (group, hook, instance_id or f"token:{token}"), completes):
            raise ValidationError(no_action)
    return EmptyResult()


def _current_ledger() -> LifecycleLedger | None:
    """The ledger the middleware put in this request's environ (None under ``mock_aws``).

    moto's server runs each responder inside a Flask request context whose environ is the
    very dict our middleware saw; moto's response object does not keep the request.
    """
    if not flask.has_request_context():
        return None
    ledger = flask.request.environ.get(_LEDGER_ENVIRON_KEY)
    return ledger if isinstance(ledger, LifecycleLedger) else None


def _instance_in_group(backend: Any, group: str, instance_id: str) -> bool:
    found = backend.autoscaling_groups.get(group)
    return found is not None and any(s.instance.id == instance_id for s in found.instance_states)


def _complete_lifecycle_action(self: AutoScalingResponse) -> EmptyResult:
    return _lifecycle_call(self, "CompleteLifecycleAction")


def _record_lifecycle_action_heartbeat(self: AutoScalingResponse) -> EmptyResult:
    return _lifecycle_call(self, "RecordLifecycleActionHeartbeat")


def install_lifecycle_actions() -> None:
    """Teach moto's Auto Scaling responder the two lifecycle calls (idempotent).

    moto dispatches an action to the responder method of the same snake_case name, so
    adding the methods to the class is all it takes; moto's serializer then produces the
    AWS XML. It also serves ``mock_aws`` users in this process (without recording).
    """
    AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action  # type: ignore[attr-defined]
    AutoScalingResponse.record_lifecycle_action_heartbeat = _record_lifecycle_action_heartbeat  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------
# ELBv2 draining, which moto lacks
# --------------------------------------------------------------------------------------

# Shared by every moto request thread; guards the draining records below.
_DRAINING_LOCK = threading.RLock()
_DRAINING_ATTRIBUTE = "_unified_harness_draining"  # on moto's FakeTargetGroup objects
_DRAIN_HISTORY_ATTRIBUTE = "_unified_harness_drain_history"
_WRAPPED_MARK = "_unified_harness_wrapped"
DEFAULT_DEREGISTRATION_DELAY = 300.0  # seconds, as on AWS (and moto's stored default)


@dataclass
class _Drain:
    """One deregistered target still draining: its registration and when that ends."""

    target: dict[str, Any]  # moto's registration record: {"Id": ..., "Port": ...}
    until: float  # time.monotonic() deadline


def _drains(group: FakeTargetGroup) -> dict[str, _Drain]:
    """The group's live draining records, by target id (expired ones are dropped).

    Kept on moto's own target group object, so ``reset()`` (which rebuilds the backends)
    forgets them with the group. Call with ``_DRAINING_LOCK`` held.
    """
    records: dict[str, _Drain] = group.__dict__.setdefault(_DRAINING_ATTRIBUTE, {})
    now = time.monotonic()
    for target_id in [t for t, d in records.items() if d.until <= now]:
        del records[target_id]
    return records


def _emulating_draining() -> bool:
    """Whether this request came through a :class:`MotoServer` with draining on.

    ``mock_aws`` users in the same process (and a server with ``emulate_draining``
    False) keep moto's own behaviour: the target disappears at once.
    """
    return flask.has_request_context() and bool(flask.request.environ.get(_DRAINING_ENVIRON_KEY))


def _deregistration_delay(group: FakeTargetGroup) -> float:
    value = group.attributes.get("deregistration_delay.timeout_seconds")
    return DEFAULT_DEREGISTRATION_DELAY if value in (None, "") else float(str(value))


def _known_instance(group: FakeTargetGroup, target_id: str) -> bool:
    return group.ec2_backend.get_instance_by_id(target_id) is not None


def _wrap(owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = getattr(owner, name)
    if getattr(original, _WRAPPED_MARK, False):
        return  # already installed (idempotent)
    wrapper = make(original)
    setattr(wrapper, _WRAPPED_MARK, True)
    wrapper.__name__ = original.__name__
    wrapper.__doc__ = original.__doc__
    setattr(owner, name, wrapper)


def _make_deregister(original: Callable[..., Any]) -> Callable[..., Any]:
    def deregister(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
        if not _emulating_draining():
            original(self, targets)
            return
        with _DRAINING_LOCK:
            drains = _drains(self)
            # AWS: "If the specified target does not exist, the action returns
            # successfully." So a target that is draining (its delay is not restarted) or
            # an existing instance that is not registered is left alone; moto still
            # refuses (InvalidTarget) an id that names no instance at all.
            pending = [
                t
                for t in targets
                if t["Id"] in self.targets
                or (t["Id"] not in drains and not _known_instance(self, t["Id"]))
            ]
            before = {
                t["Id"]: dict(self.targets[t["Id"]]) for t in pending if t["Id"] in self.targets
            }
            delay = _deregistration_delay(self)
            try:
                original(self, pending)
            finally:  # moto pops one by one: record whatever it did remove
                if delay > 0:
                    started = time.monotonic()
                    history = self.__dict__.setdefault(_DRAIN_HISTORY_ATTRIBUTE, [])
                    for target_id, record in before.items():
                        if target_id not in self.targets:
                            drains[target_id] = _Drain(record, started + delay)
                            history.append((target_id, started, started + delay))

    return deregister


def _make_register(original: Callable[..., Any]) -> Callable[..., Any]:
    def register(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
        with _DRAINING_LOCK:
            original(self, targets)
            drains = _drains(self)
            for target in targets:  # registered again: healthy at once, no longer draining
                drains.pop(target["Id"], None)

    return register


def _make_health_for(original: Callable[..., Any]) -> Callable[..., Any]:
    def health_for(self: FakeTargetGroup, target: dict[str, Any], ec2_backend: Any) -> Any:
        with _DRAINING_LOCK:
            drain = None if target["Id"] in self.targets else _drains(self).get(target["Id"])
        asked_port = str(target.get("Port") or "")
        if drain is not None and asked_port in ("", str(drain.target["Port"])):
            return FakeHealthStatus(
                drain.target["Id"],
                drain.target["Port"],
                self.health_check_port,
                "draining",
                "Target.DeregistrationInProgress",
                "Target deregistration is in progress",
            )
        return original(self, target, ec2_backend)

    return health_for


def _make_describe_target_health(original: Callable[..., Any]) -> Callable[..., Any]:
    def describe_target_health(
        self: ELBv2Backend, target_group_arn: str, targets: list[dict[str, Any]]
    ) -> Any:
        group = self.target_groups.get(target_group_arn)
        if group is not None and not targets:
            # AWS lists draining targets too when no target is named.
            with _DRAINING_LOCK:
                draining = [dict(d.target) for d in _drains(group).values()]
                registered = [dict(t) for t in group.targets.values()]
            if draining:
                targets = registered + draining
        return original(self, target_group_arn, targets)

    return describe_target_health


def install_draining() -> None:
    """Teach moto's ELBv2 target groups to drain, as AWS does (idempotent).

    After ``DeregisterTargets`` served by a :class:`MotoServer`, the target is reported
    ``draining`` / ``Target.DeregistrationInProgress`` (listed, and when asked for by id)
    for the group's ``deregistration_delay.timeout_seconds`` as it stood at that moment
    (default 300; 0 means no draining), then it is gone: absent from the listing and
    ``unused`` / ``Target.NotRegistered`` by id, like plain moto. ``RegisterTargets`` of a
    draining target makes it ``healthy`` at once. Deregistering a draining target again
    succeeds without restarting its delay. moto keys targets by id only (not id+port), and
    so does this; a draining target asked for with another port is not draining.

    The wrappers sit on moto's model classes (``FakeTargetGroup.register``/``deregister``/
    ``health_for`` and ``ELBv2Backend.describe_target_health``), so moto still parses the
    parameters, validates, and serialises the answers; the responder, the call log and
    fault injection are untouched. Draining starts only for requests that a MotoServer
    with ``emulate_draining`` marked, so ``mock_aws`` code in the process is unaffected.
    """
    _wrap(FakeTargetGroup, "deregister", _make_deregister)
    _wrap(FakeTargetGroup, "register", _make_register)
    _wrap(FakeTargetGroup, "health_for", _make_health_for)
    _wrap(ELBv2Backend, "describe_target_health", _make_describe_target_health)


# --------------------------------------------------------------------------------------
# Request identification and injected faults
# --------------------------------------------------------------------------------------


@dataclass
class _Fault:
    """A pending injected error: answer the next ``remaining`` matching requests with it."""

    action: str | None
    service: str | None
    remaining: int
    status: int | None = None  # None: the protocol's throttling status
    code: str | None = None  # None: the protocol's throttling code
    message: str = "Rate exceeded"

    def matches(self, call: ApiCall) -> bool:
        return (
            self.remaining > 0
            and self.action in (None, call.action)
            and self.service in (None, call.service)
        )


def _buffer_body(environ: WSGIEnvironment) -> bytes:
    """Read the request body and put it back, so moto can read it again."""
    body = get_input_stream(environ).read()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def identify(environ: WSGIEnvironment, body: bytes) -> ApiCall:
    """Name the service (SigV4 credential scope) and action (``Action`` or ``X-Amz-Target``)."""
    request = read_request(environ, body)
    return ApiCall(request.service, request.action)


def read_request(environ: WSGIEnvironment, body: bytes) -> ApiRequest:
    """The service, the action and the parameters of one request (query and form
    protocols, or JSON with ``X-Amz-Target``)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    scope = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = scope.group(1) if scope else (target.split(".", 1)[0] or "unknown")
    if target:
        try:
            members = json.loads(body or b"{}")
        except ValueError:
            members = {}
        return ApiRequest(service, target.rsplit(".", 1)[-1], members if isinstance(members, dict) else {},
                          environ.get("HTTP_USER_AGENT", ""))
    params = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qs(body.decode("utf-8", "replace")))
    flat = {key: values[0] for key, values in params.items()}
    return ApiRequest(service, flat.get("Action", "unknown"), flat, environ.get("HTTP_USER_AGENT", ""))


def _error_response(environ: WSGIEnvironment, call: ApiCall, fault: _Fault) -> Response:
    """An AWS error in the wire format botocore expects for this service's protocol."""
    request_id = str(uuid.uuid4())
    if environ.get("HTTP_X_AMZ_TARGET"):  # JSON protocol (SSM, ...)
        code = fault.code or "ThrottlingException"
        return Response(
            json.dumps({"__type": code, "message": fault.message}),
            status=fault.status or 400,
            headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": code},
            content_type="application/x-amz-json-1.1",
        )
    if call.service == "ec2":  # EC2's own protocol and throttling code
        code = fault.code or "RequestLimitExceeded"
        body = (
            f"<Response><Errors><Error><Code>{escape(code)}</Code>"
            f"<Message>{escape(fault.message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        return Response(body, status=fault.status or 503, content_type="text/xml")
    code = fault.code or "Throttling"
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
        f"<Message>{escape(fault.message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return Response(body, status=fault.status or 400, content_type="text/xml")


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without the one-line-per-request access log (errors still log)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


class MotoServer:
    """moto on ``127.0.0.1:<free port>`` with lifecycle calls, faults and a call log.

    Use as a context manager (or ``start()``/``stop()``). Everything it records is
    thread-safe; the list properties return snapshots.

    ``emulate_draining`` (default True) turns on ELBv2 draining for the requests this
    server answers (see :func:`install_draining`); ``reset()`` restores the value given
    here, so a test may switch the attribute off for itself.
    """

    def __init__(self, region: str = REGION, *, emulate_draining: bool = True) -> None:
        install_lifecycle_actions()
        install_draining()
        install_fleet_patches()  # after install_lifecycle_actions: it wraps those two calls
        self.region = region
        self._default_emulate_draining = emulate_draining
        self.emulate_draining = emulate_draining
        self._lock = threading.Lock()
        self._calls: list[ApiCall] = []
        self._requests: list[ApiRequest] = []
        self._faults: list[_Fault] = []
        self._delays: list[list[Any]] = []  # [action, service, remaining, seconds]
        self._delayed = 0
        self._ledger = LifecycleLedger()
        self._app: WSGIApplication = DomainDispatcherApplication(create_backend_app)
        # One boto3 session for every client: a fresh session reloads botocore's models
        # (~0.3 s each); creating clients from a shared session is serialised by the lock.
        self._session = boto3.session.Session()
        self._session_lock = threading.Lock()
        self._internal_clients: dict[str, Any] = {}
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------

    def start(self) -> MotoServer:
        self._server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() takes 50 ms, not 500
            name="moto-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
        self._internal_clients.clear()  # they point at this server's port

    def __enter__(self) -> MotoServer:
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
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("MotoServer is not running")
        return f"http://127.0.0.1:{self._server.server_port}"

    def reset(self) -> None:
        """Wipe moto's state (all backends, process-wide), the call log, faults and ledger.

        Draining records live in moto's target groups, so they go too, and
        ``emulate_draining`` returns to the constructor's value.
        """
        requests.post(f"{self.url}/moto-api/reset", timeout=30).raise_for_status()
        with self._lock:
            self._calls.clear()
            self._requests.clear()
            self._faults.clear()
            self._delays.clear()
            self._delayed = 0
        self._ledger.clear()
        self.emulate_draining = self._default_emulate_draining

    # draining --------------------------------------------------------------------------

    def draining_targets(self, target_group_arn: str) -> dict[str, float]:
        """Targets of the group still draining: id -> seconds left (a snapshot)."""
        group = self._target_group(target_group_arn)
        with _DRAINING_LOCK:
            now = time.monotonic()
            return {i: d.until - now for i, d in _drains(group).items()}

    def drain_history(self, target_group_arn: str) -> list[tuple[str, float, float]]:
        """Every drain the group began: (target id, began, ends), time.monotonic() values.
        CLOCK_MONOTONIC is one clock for every process on the machine, so a test can
        compare these with what a service saw (when it got SIGTERM, say)."""
        group = self._target_group(target_group_arn)
        with _DRAINING_LOCK:
            return list(group.__dict__.get(_DRAIN_HISTORY_ATTRIBUTE, []))

    def end_draining(self, target_group_arn: str, target_id: str | None = None) -> None:
        """Finish draining now (one target, or all of the group), as AWS does early when
        a deregistered target has no request in flight and no open connection."""
        group = self._target_group(target_group_arn)
        with _DRAINING_LOCK:
            drains = _drains(group)
            for found in [target_id] if target_id else list(drains):
                drains.pop(found, None)

    def _target_group(self, arn: str) -> FakeTargetGroup:
        parts = arn.split(":")  # arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/...
        region, account = (parts[3], parts[4]) if len(parts) > 5 else (self.region, ACCOUNT_ID)
        group = elbv2_backends[account][region].target_groups.get(arn)
        if group is None:
            raise KeyError(f"no target group {arn} in moto")
        return group

    # what a subprocess and an in-process client need -------------------------------------

    def env(self) -> dict[str, str]:
        """Environment for a subprocess whose boto3 must reach this server and nothing else.

        ``AWS_CONFIG_FILE``/``AWS_SHARED_CREDENTIALS_FILE`` point at ``/dev/null`` so the
        developer's own profiles, regions or endpoint overrides cannot leak in, and
        ``NO_PROXY`` keeps a proxy configured on the host away from loopback. Callers should
        drop any inherited ``AWS_*`` variable first (``fixtures.subprocess_env`` does).
        """
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def client(self, service_name: str, *, internal: bool = False, **config: Any) -> Any:
        """A boto3 client for this server; ``config`` goes to ``botocore.config.Config``.

        ``internal=True`` marks the requests as the harness's own (not logged, not faulted);
        such clients (without ``config``) are cached, as seeding asks for them often.
        """
        cacheable = internal and not config
        if internal:
            config["user_agent_extra"] = HARNESS_USER_AGENT_MARKER
        with self._session_lock:
            if cacheable and service_name in self._internal_clients:
                return self._internal_clients[service_name]
            client = self._session.client(
                service_name,
                endpoint_url=self.url,
                region_name=self.region,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=ACCESS_KEY,
                config=Config(**config),
            )
            if cacheable:
                self._internal_clients[service_name] = client
            return client

    # observations --------------------------------------------------------------------

    @property
    def requests(self) -> list[ApiRequest]:
        """Every request of the code under test, with its parameters (a snapshot)."""
        with self._lock:
            return list(self._requests)

    def group_tags(self, group: str) -> dict[str, str]:
        """An Auto Scaling group's tags (what IAM's autoscaling:ResourceTag/ keys see)."""
        found = self.client("autoscaling", internal=True).describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        groups = found.get("AutoScalingGroups", [])
        return {t["Key"]: t["Value"] for t in groups[0].get("Tags", [])} if groups else {}

    def _resource_tags(self, request: ApiRequest) -> dict[str, Any]:
        """The tags, as the request found them, of the group or launch template it names:
        what IAM's ResourceTag condition keys see (read now, since a later delete would
        take them away)."""
        from moto.autoscaling.models import autoscaling_backends
        from moto.ec2.models import ec2_backends
        found: dict[str, Any] = {}
        group = request.params.get("AutoScalingGroupName") or request.params.get("Tags.member.1.ResourceId")
        if request.service == "autoscaling" and group:
            described = autoscaling_backends[ACCOUNT_ID][self.region].autoscaling_groups.get(str(group))
            if described is not None:
                found[RESOURCE_TAGS] = {t["Key"]: t["Value"] for t in described.tags}
        template = request.params.get("LaunchTemplateId") or request.params.get("LaunchTemplateName")
        if request.service == "ec2" and template:
            backend = ec2_backends[ACCOUNT_ID][self.region]
            try:
                lt = (backend.get_launch_template(str(template)) if str(template).startswith("lt-")
                      else backend.get_launch_template_by_name(str(template)))
                found[RESOURCE_TAGS] = {t["key"]: t["value"] for t in lt.get_tags()}
                found[RESOURCE_ID] = lt.id
            except Exception:  # not found: the request fails in moto, as on AWS
                pass
        return found

    def instance_tags(self, instance_id: str) -> dict[str, str]:
        """An instance's tags (what IAM's ec2:ResourceTag/ keys see)."""
        found = self.client("ec2", internal=True).describe_instances(InstanceIds=[instance_id])
        return {t["Key"]: t["Value"] for r in found["Reservations"] for i in r["Instances"] for t in i.get("Tags", [])}

    @property
    def calls(self) -> list[ApiCall]:
        """Every AWS request from code under test, in arrival order (faulted ones too)."""
        with self._lock:
            return list(self._calls)

    def call_count(self, action: str | None = None, service: str | None = None) -> int:
        """How many requests matched ``action`` and ``service`` (None matches any)."""
        return sum(
            1 for c in self.calls if action in (None, c.action) and service in (None, c.service)
        )

    @property
    def lifecycle_actions(self) -> list[dict[str, Any]]:
        """Accepted CompleteLifecycleAction/RecordLifecycleActionHeartbeat calls, in order.

        Keys: action, AutoScalingGroupName, LifecycleHookName, LifecycleActionToken,
        InstanceId, LifecycleActionResult (None for heartbeats), time (epoch seconds).
        """
        return self._ledger.snapshot()

    # fault injection -------------------------------------------------------------------

    def inject_throttling(
        self, action: str | None, count: int = 1, *, service: str | None = None
    ) -> None:
        """Throttle the next ``count`` requests for ``action`` (None: any action).

        ``service`` (SigV4 name: "ec2", "elasticloadbalancing", "autoscaling", "ssm")
        narrows it where action names collide (``DescribeTags`` exists in three).
        """
        self._add_fault(_Fault(action, service, count))

    def inject_error(
        self,
        action: str | None,
        count: int = 1,
        *,
        status: int,
        code: str,
        message: str,
        service: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with any AWS error, e.g. 500."""
        self._add_fault(_Fault(action, service, count, status, code, message))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._delays.clear()

    def inject_delay(
        self, action: str, seconds: float, count: int = 1, *, service: str | None = None
    ) -> None:
        """Hold the next ``count`` requests for ``action`` ``seconds`` before moto
        answers them (a slow AWS endpoint: the caller is inside its HTTP request meanwhile).
        :attr:`delayed` counts the requests held so far."""
        if count < 1 or seconds <= 0:
            raise ValueError("count must be at least 1 and seconds more than 0")
        with self._lock:
            self._delays.append([action, service, count, seconds])

    @property
    def delayed(self) -> int:
        """How many requests an injected delay has started to hold."""
        with self._lock:
            return self._delayed

    def _take_delay(self, call: ApiCall) -> float:
        with self._lock:
            for delay in self._delays:
                action, service, remaining, seconds = delay
                if remaining > 0 and action == call.action and service in (None, call.service):
                    delay[2] -= 1
                    if delay[2] == 0:
                        self._delays.remove(delay)
                    self._delayed += 1
                    return float(seconds)
        return 0.0

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, call: ApiCall) -> _Fault | None:
        """Log the call and consume the first matching fault, atomically."""
        with self._lock:
            self._calls.append(call)
            fault = next((f for f in self._faults if f.matches(call)), None)
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
            return fault

    # the middleware ------------------------------------------------------------------

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self._app(environ, start_response)
        if HARNESS_USER_AGENT_MARKER not in environ.get("HTTP_USER_AGENT", ""):
            request = read_request(environ, _buffer_body(environ))
            request.params.update(self._resource_tags(request))
            with self._lock:
                self._requests.append(request)
            call = ApiCall(request.service, request.action)
            fault = self._take_fault(call)
            delay = self._take_delay(call)
            if delay:
                time.sleep(delay)
            if fault is not None:
                return _error_response(environ, call, fault)(environ, start_response)
        environ[_LEDGER_ENVIRON_KEY] = self._ledger
        environ[_DRAINING_ENVIRON_KEY] = self.emulate_draining
        return self._app(environ, start_response)


# --------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededInstance:
    """What :func:`seed_instance` created; ``None`` for the parts not asked for."""

    instance_id: str
    image_id: str
    vpc_id: str
    subnet_ids: tuple[str, ...]
    availability_zone: str
    private_ip: str
    target_group_arn: str | None = None
    load_balancer_arn: str | None = None
    classic_elb_name: str | None = None
    auto_scaling_group_name: str | None = None
    launch_template_id: str | None = None
    launch_hook_name: str | None = None
    terminate_hook_name: str | None = None


def seed_instance(
    server: MotoServer,
    *,
    tags: Mapping[str, str] | None = None,
    instance_type: str = "t3.micro",
    image_id: str = DEFAULT_IMAGE_ID,
    target_group: str | None = None,
    target_group_protocol: str = "HTTP",
    target_group_port: int = 8000,
    deregistration_delay: int | None = None,
    classic_elb: str | None = None,
    auto_scaling_group: str | None = None,
    launch_hook: str | None = "launching",
    terminate_hook: str | None = "terminating",
    heartbeat_timeout: int = 3600,
) -> SeededInstance:
    """Create a running instance with ``tags`` and, optionally, what it plugs into.

    * A VPC with subnets in ``<region>a`` and ``<region>b`` (an ALB needs two zones);
      the instance lives in the first.
    * ``target_group``: an ELBv2 target group of that name (``HTTP`` → behind an ALB,
      ``TCP`` → behind an NLB, with a listener forwarding to it) — nothing registered;
      ``deregistration_delay`` sets ``deregistration_delay.timeout_seconds``.
    * ``classic_elb``: a classic ELB of that name (HTTP 80 → ``target_group_port``).
    * ``auto_scaling_group``: a launch template and a group of one; the instance is the
      one the group launched (moto tags it ``aws:autoscaling:groupName``), ``tags`` are
      group tags with ``PropagateAtLaunch``, and the hooks ``launch_hook``
      (``autoscaling:EC2_INSTANCE_LAUNCHING``) and ``terminate_hook``
      (``EC2_INSTANCE_TERMINATING``) are put on it (None skips one). The target group is
      not attached to the group: the agent registers the instance itself.

    Seeding goes through boto3 marked as harness traffic, so it is not in ``calls``.
    This is :func:`seed_group` with ``size=1``.
    """
    [seeded] = seed_group(
        server,
        size=1,
        tags=tags,
        instance_type=instance_type,
        image_id=image_id,
        target_group=target_group,
        target_group_protocol=target_group_protocol,
        target_group_port=target_group_port,
        deregistration_delay=deregistration_delay,
        classic_elb=classic_elb,
        auto_scaling_group=auto_scaling_group,
        launch_hook=launch_hook,
        terminate_hook=terminate_hook,
        heartbeat_timeout=heartbeat_timeout,
    )
    return seeded


def seed_group(
    server: MotoServer,
    *,
    size: int = 2,
    tags: Mapping[str, str] | None = None,
    instance_type: str = "t3.micro",
    image_id: str = DEFAULT_IMAGE_ID,
    target_group: str | None = None,
    target_group_protocol: str = "HTTP",
    target_group_port: int = 8000,
    deregistration_delay: int | None = None,
    classic_elb: str | None = None,
    auto_scaling_group: str | None = None,
    launch_hook: str | None = "launching",
    terminate_hook: str | None = "terminating",
    heartbeat_timeout: int = 3600,
) -> list[SeededInstance]:
    """Like :func:`seed_instance`, for ``size`` instances sharing everything they plug into.

    One VPC, one target group, one classic ELB and (with ``auto_scaling_group``) one
    Auto Scaling group of ``size`` (min = max = desired) whose instances are the ones it
    launched; without a group, ``size`` plain instances with ``tags``. With ``size`` > 1
    the group lists both subnets and plain instances alternate between them, but moto
    launches a group's instances all in one zone (read ``availability_zone``). Nothing
    is registered with the target group. The
    list is in moto's order for the group (or launch order); each entry carries the same
    shared ARNs and names, so ``imds(seeded)`` gives each instance its own emulator.
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    ec2 = server.client("ec2", internal=True)
    zones = (f"{server.region}a", f"{server.region}b")
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_ids = tuple(
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for i, zone in enumerate(zones, start=1)
    )
    used_subnets = subnet_ids[:1] if size == 1 else subnet_ids
    tags = dict(tags or {})
    parts: dict[str, Any] = {}
    if auto_scaling_group:
        parts.update(
            _seed_group(
                server,
                auto_scaling_group,
                size,
                tags,
                image_id,
                instance_type,
                used_subnets,
                launch_hook,
                terminate_hook,
                heartbeat_timeout,
            )
        )
        instance_ids = parts.pop("instance_ids")
    else:
        instance_ids = [
            _run_instance(ec2, tags, image_id, instance_type, used_subnets[i % len(used_subnets)])
            for i in range(size)
        ]
    if target_group:
        parts.update(
            _seed_target_group(
                server,
                target_group,
                target_group_protocol,
                target_group_port,
                deregistration_delay,
                vpc_id,
                subnet_ids,
            )
        )
    if classic_elb:
        server.client("elb", internal=True).create_load_balancer(
            LoadBalancerName=classic_elb,
            Listeners=[
                {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": target_group_port}
            ],
            Subnets=list(subnet_ids),
        )
        parts["classic_elb_name"] = classic_elb
    found = {
        instance["InstanceId"]: instance
        for reservation in ec2.describe_instances(InstanceIds=list(instance_ids))["Reservations"]
        for instance in reservation["Instances"]
    }
    return [
        SeededInstance(
            instance_id=instance_id,
            image_id=found[instance_id]["ImageId"],
            vpc_id=vpc_id,
            subnet_ids=subnet_ids,
            availability_zone=found[instance_id]["Placement"]["AvailabilityZone"],
            private_ip=found[instance_id]["PrivateIpAddress"],
            **parts,
        )
        for instance_id in instance_ids
    ]


_METADATA_OPTIONS = {"HttpTokens": "required", "InstanceMetadataTags": "enabled"}


def _run_instance(
    ec2: Any, tags: Mapping[str, str], image_id: str, instance_type: str, subnet_id: str
) -> str:
    extra: dict[str, Any] = {}
    if tags:
        extra["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    reservation = ec2.run_instances(
        ImageId=image_id,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet_id,
        MetadataOptions=_METADATA_OPTIONS,
        **extra,
    )
    return str(reservation["Instances"][0]["InstanceId"])


def _seed_group(
    server: MotoServer,
    name: str,
    size: int,
    tags: Mapping[str, str],
    image_id: str,
    instance_type: str,
    subnet_ids: tuple[str, ...],
    launch_hook: str | None,
    terminate_hook: str | None,
    heartbeat_timeout: int,
) -> dict[str, Any]:
    ec2 = server.client("ec2", internal=True)
    autoscaling = server.client("autoscaling", internal=True)
    template = ec2.create_launch_template(
        LaunchTemplateName=f"{name}-template",
        LaunchTemplateData={
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MetadataOptions": _METADATA_OPTIONS,
        },
    )["LaunchTemplate"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"], "Version": "$Latest"},
        MinSize=size,
        MaxSize=size,
        DesiredCapacity=size,
        VPCZoneIdentifier=",".join(subnet_ids),
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in tags.items()],
    )
    for hook, transition in (
        (launch_hook, "autoscaling:EC2_INSTANCE_LAUNCHING"),
        (terminate_hook, "autoscaling:EC2_INSTANCE_TERMINATING"),
    ):
        if hook:
            autoscaling.put_lifecycle_hook(
                AutoScalingGroupName=name,
                LifecycleHookName=hook,
                LifecycleTransition=transition,
                HeartbeatTimeout=heartbeat_timeout,
                DefaultResult="ABANDON",
            )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return {
        "instance_ids": [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]],
        "auto_scaling_group_name": name,
        "launch_template_id": template["LaunchTemplateId"],
        "launch_hook_name": launch_hook,
        "terminate_hook_name": terminate_hook,
    }


def _seed_target_group(
    server: MotoServer,
    name: str,
    protocol: str,
    port: int,
    deregistration_delay: int | None,
    vpc_id: str,
    subnet_ids: tuple[str, ...],
) -> dict[str, Any]:
    elbv2 = server.client("elbv2", internal=True)
    http = protocol.upper() in ("HTTP", "HTTPS")
    balancer = elbv2.create_load_balancer(
        Name=f"{name[:28]}-lb",
        Subnets=list(subnet_ids),
        Type="application" if http else "network",
    )["LoadBalancers"][0]
    group = elbv2.create_target_group(
        Name=name, Protocol=protocol, Port=port, VpcId=vpc_id, TargetType="instance"
    )["TargetGroups"][0]
    elbv2.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"],
        Protocol="HTTP" if http else "TCP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}],
    )
    if deregistration_delay is not None:
        elbv2.modify_target_group_attributes(
            TargetGroupArn=group["TargetGroupArn"],
            Attributes=[
                {"Key": "deregistration_delay.timeout_seconds", "Value": str(deregistration_delay)}
            ],
        )
    return {
        "target_group_arn": group["TargetGroupArn"],
        "load_balancer_arn": balancer["LoadBalancerArn"],
    }


__all__ = [
    "ACCOUNT_ID",
    "DEFAULT_DEREGISTRATION_DELAY",
    "DEFAULT_IMAGE_ID",
    "HARNESS_USER_AGENT_MARKER",
    "REGION",
    "ApiCall",
    "MotoServer",
    "SeededInstance",
    "identify",
    "install_draining",
    "install_lifecycle_actions",
    "seed_group",
    "seed_instance",
]
