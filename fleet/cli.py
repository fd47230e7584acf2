"""The `unified` command line: parse, dispatch, print; the only place that turns errors
into exit codes (0 done; 1 a service failed before its switch, or another failure,
Ctrl-C and SIGTERM included, after what the deploy made is cleaned up; 2 bad input,
refused before any AWS write (a rollback asked while a deploy holds the lock is checked
again once it holds it: what is kept may change meanwhile); 4 a lock held; 5 every
failure came after its switch, so what it switched to serves).

Progress goes to stderr, results to stdout (`--json` where a script reads them). AWS is
reached through boto3's usual settings: AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from agent.errors import EXIT_BAD_INPUT, AgentError, BadInput
from fleet.errors import EXIT_SWITCHED_THEN_FAILED

IMAGE_ID = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?\Z")


def _interrupted(signum: int, frame: Any) -> None:
    """SIGTERM or Ctrl-C: every wait ends at once (`agent.deadline.cancel`), and so does
    the next step of a deploy (`Locks.phase`); the deploy then undoes what it made and
    exits 1. Raising here instead would be lost when it lands inside an AWS call:
    botocore retries whatever its HTTP layer raises."""
    from agent import deadline
    name = signal.Signals(signum).name
    print(f"{name}: stopping; what this deploy made and did not switch to is removed first "
          "(kill -9 skips that and leaves it to the next deploy)", file=sys.stderr)
    deadline.cancel(f"stopped by {name}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # SERVICE names may follow options (`deploy production --image AMI web`): argparse
    # leaves those over, and only `deploy` takes them
    args, extra = parser.parse_known_args(argv)
    if extra and (getattr(args, "command_name", None) != "deploy" or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.services_ = [*args.services_, *extra]
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    previous = signal.signal(signal.SIGTERM, _interrupted)
    previous_int = signal.signal(signal.SIGINT, _interrupted)
    started = time.monotonic()
    try:
        return int(args.func(args, started) or 0)
    except AgentError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug or an unforeseen OS error: one clear line, details on demand
        if os.environ.get("UNIFIED_DEBUG"):
            raise
        print(f"unified {args.command_name}: unexpected {exc.__class__.__name__}: {exc} "
              "(run again with UNIFIED_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unified", description="Deploy the unified image: verified blue/green "
                                     "swaps, instant rollback, locks, release history.")
    parser.add_argument("--services", type=Path, default=Path("services.yaml"),
                        help="services.yaml (default: ./services.yaml)")
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, func: Callable[..., int], help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.set_defaults(func=func, command_name=name)
        return p

    p = command("deploy", cmd_deploy, "deploy an image to an environment's services, verified before any switch")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--image", required=True, metavar="AMI")
    p.add_argument("services_", nargs="*", metavar="SERVICE", help="default: every service with scale in ENV")
    _deploy_args(p)
    p = command("rollback", cmd_rollback, "go back to an earlier version (warm standby: seconds)")
    p.add_argument("env", metavar="ENV")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--to", metavar="DEPLOY", help="the deploy id to go back to (default: the previous version)")
    _deploy_args(p)
    p = command("releases", cmd_releases, "every deploy and rollback, newest first")
    p.add_argument("env", metavar="ENV")
    p.add_argument("service", nargs="?", metavar="SERVICE")
    p.add_argument("--json", action="store_true")
    p = command("status", cmd_status, "live, standby and kept groups per service, their health, the locks")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--json", action="store_true")
    p = command("policy", cmd_policy, "print the least-privilege IAM policy of whoever deploys to ENV")
    p.add_argument("env", metavar="ENV")
    p.add_argument("--account", default="*", help="the AWS account id (default: any)")
    p.add_argument("--region", default="*", help="the region (default: any)")
    lock = command("lock", lambda a, s: _usage(lock), "the deploy locks: status, release")
    locks = lock.add_subparsers(metavar="ACTION")
    p = command("status", cmd_lock_status, "each service's lock: free or held (by whom, since, doing what)", locks)
    p.add_argument("env", metavar="ENV")
    p.add_argument("--json", action="store_true")
    p = command("release", cmd_lock_release, "give up a lock; --force takes another's (and says whose)", locks)
    p.add_argument("env", metavar="ENV")
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--force", action="store_true", help="release a lock another deploy holds")
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_BAD_INPUT


def _deploy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="queue behind a running deploy for up to this long instead of failing (exit 4)")
    p.add_argument("--probe-url", default=None, metavar="URL",
                   help="where this machine reaches the load balancer's listener (default: its DNS name and port)")
    p.add_argument("--lock-lease", type=float, default=120.0, metavar="SECONDS",
                   help="the lock's lease, renewed while the command runs (at most 120)")
    p.add_argument("--boot-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="for the new instances to be in service (default 900)")
    p.add_argument("--verify-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="for health and the probes (default 120)")
    p.add_argument("--json", action="store_true", help="the outcome as JSON on stdout")


def _catalog(args: argparse.Namespace) -> Any:
    from agent.config import catalog
    return catalog.load(args.services)


def _options(args: argparse.Namespace) -> Any:
    from fleet.deploy import Options
    if not 0 < args.lock_lease <= 120:
        raise BadInput(f"--lock-lease {args.lock_lease:g}: expected more than 0 and at most 120 seconds")
    for flag in ("wait_lock", "boot_timeout", "verify_timeout", "lock_lease"):
        value = getattr(args, flag)
        if not math.isfinite(value) or value < 0:
            raise BadInput(f"--{flag.replace('_', '-')} {value:g}: expected a number of seconds, 0 or more")
    if args.probe_url is not None:
        _check_url(args.probe_url)
    return Options(probe_url=args.probe_url, wait_lock=args.wait_lock, lease=args.lock_lease,
                   boot_timeout=args.boot_timeout, verify_timeout=args.verify_timeout)


def _check_url(url: str) -> None:
    """What requests would refuse when the probes start, refused now (exit 2)."""
    problem = None if re.match(r"^https?://[^\s/]+(/\S*)?\Z", url) else "not http(s)://HOST[:PORT]"
    if problem is None:
        import requests
        from urllib3.util import parse_url
        try:
            requests.Request("GET", url).prepare()
            host = parse_url(url).host or ""
            if not host.startswith("["):
                host.encode("idna")  # what the socket layer does: refuses empty or 64+ char labels
        except UnicodeError:
            problem = "a part of the host name is empty or longer than 63 characters"
        except (requests.RequestException, ValueError) as exc:
            problem = exc.__class__.__name__
    if problem is not None:
        raise BadInput(f"--probe-url {url!r}: expected http://HOST[:PORT] or https://HOST[:PORT] ({problem})")


def _command_line() -> str:
    return "unified " + " ".join(shlex.quote(a) for a in sys.argv[1:])[:200]


def _progress() -> Any:
    from fleet.progress import Progress
    return Progress()


def cmd_deploy(args: argparse.Namespace, started: float) -> int:
    from fleet import deploy
    if not IMAGE_ID.match(args.image):
        raise BadInput(f"--image {args.image!r}: expected an AMI id like ami-0123456789abcdef0")
    options = _options(args)
    outcomes = deploy.run(_catalog(args), args.env, args.image, list(args.services_), options, _command_line(),
                          _progress())
    return _outcomes(args, outcomes, started, "deploy")


def cmd_rollback(args: argparse.Namespace, started: float) -> int:
    from fleet import rollback
    options = _options(args)
    outcome = rollback.run(_catalog(args), args.env, args.service, args.to, options, _command_line(), _progress())
    return _outcomes(args, [outcome], started, "rollback")


def _outcomes(args: argparse.Namespace, outcomes: list[Any], started: float, what: str) -> int:
    failed = [o for o in outcomes if not o.ok]
    if args.json:
        print(json.dumps([{"service": o.service, "ok": o.ok, "message": o.message,
                           "seconds_to_switch": round(o.switched_at - started, 3) if o.switched_at else None,
                           "release": vars(o.release) if o.release else None} for o in outcomes], indent=2))
    else:
        for outcome in outcomes:
            took = f" (all traffic on it {outcome.switched_at - started:.2f}s after the command)" \
                if outcome.switched_at else ""
            print(("ok: " if outcome.ok else "FAILED: ") + outcome.message + took)
        for outcome in outcomes:
            if outcome.ok and what == "deploy":
                print(f"to roll back: unified rollback {args.env} {outcome.service}")
    for outcome in failed:
        print(f"{outcome.service}: {outcome.message}", file=sys.stderr)
    if any(not o.switched for o in failed):
        return 1
    if failed:  # every failure came after its switch: the new version serves
        for outcome in failed:
            print(f"{outcome.service} serves the new version; to go back: unified rollback {args.env} "
                  f"{outcome.service}" if what == "deploy" else
                  f"{outcome.service} serves the version rolled back to", file=sys.stderr)
        return EXIT_SWITCHED_THEN_FAILED
    return 0


def _parts(args: argparse.Namespace, services: list[str] | None = None) -> tuple[Any, Any]:
    from fleet import preflight
    catalog = _catalog(args)
    chosen = services if services is not None else sorted(
        n for n, s in catalog.services.items() if args.env in s.scale)
    return catalog, preflight.check(catalog, args.env, chosen, None)


def cmd_releases(args: argparse.Namespace, started: float) -> int:
    from fleet import history, preflight, report
    from fleet.table import Table
    catalog = _catalog(args)
    _, fleet = preflight.environment(catalog, args.env)
    if args.service is not None and args.service not in catalog.services:
        raise BadInput(f"no service {args.service!r} in {catalog.path}")
    rows = [vars(r) for r in history.releases(Table(fleet.table), args.env, args.service)]
    print(json.dumps(rows, indent=2) if args.json else report.format_releases(args.env, rows))
    return 0


def cmd_status(args: argparse.Namespace, started: float) -> int:
    from fleet import report
    catalog, parts = _parts(args)
    data = report.status(catalog, parts, args.env)
    print(json.dumps(data, indent=2) if args.json else report.format_status(data))
    return 0


def cmd_policy(args: argparse.Namespace, started: float) -> int:
    from fleet import policy
    print(json.dumps(policy.deployer(_catalog(args), args.env, args.account, args.region), indent=2))
    return 0


def cmd_lock_status(args: argparse.Namespace, started: float) -> int:
    from fleet import lock, preflight, report
    from fleet.table import Table
    catalog = _catalog(args)
    _, fleet = preflight.environment(catalog, args.env)
    held = lock.holders(Table(fleet.table), args.env)
    data = {name: held[name].to_json() if name in held else None for name in sorted(catalog.services)}
    print(json.dumps(data, indent=2) if args.json else report.format_locks(args.env, data))
    return 0


def cmd_lock_release(args: argparse.Namespace, started: float) -> int:
    from fleet import lock, preflight
    from fleet.errors import LockHeld
    from fleet.table import Table
    catalog = _catalog(args)
    _, fleet = preflight.environment(catalog, args.env)
    if args.service not in catalog.services:
        raise BadInput(f"no service {args.service!r} in {catalog.path}")
    table = Table(fleet.table)
    held = lock.holders(table, args.env).get(args.service)
    if held is None:
        print(f"{args.service}: the lock is free")
        return 0
    if not args.force:
        raise LockHeld(f"{held.describe()}; `unified lock release {args.env} {args.service} --force` takes it "
                       "(only if that deploy is dead: its lease would free it within two minutes anyway)")
    taken = lock.force_release(table, args.env, args.service)
    if taken is None:
        print(f"{args.service}: the lock was freed meanwhile")
    else:
        print(f"{args.service}: released the lock of {taken.who} (deploy {taken.deploy_id}, `{taken.command}`, "
              f"phase {taken.phase})")
    return 0
