"""The `agent` command line: parse, dispatch, print, and turn AgentError into exit codes.

The only place that prints an AgentError and turns it into an exit code (its own: 2
bad input, 1 any other failure), and that prints an unforeseen exception as one line
(exit 1) or a Ctrl-C (exit 130). Two commands return a code their module worked out:
`agent status` (and `agent boot`, which ends by printing the status) 0 or 3 from
`agent.ops.status`, and `agent watch --once` 0 or 1 from `agent.watch.run`. Each
command is a few lines handing its arguments to the module that does the work. Heavy modules (boto3, jinja2, jsonschema) are imported inside the
commands that need them, so `agent status` starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from agent import __version__
from agent.errors import EXIT_BAD_INPUT, AgentError, BadInput
from agent.local.layout import Layout


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args.func(args) or 0)
    except AgentError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen OS error: one clear line, details on demand
        if os.environ.get("AGENT_DEBUG"):
            raise
        print(f"agent {args.command_name}: unexpected {exc.__class__.__name__}: {exc} "
              "(run again with AGENT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (systemd stopping the unit, `agent watch` taking over a boot): every wait
    ends with Cancelled, so a boot in progress unwinds through its cleanup (ABANDON,
    deregistration) instead of being cut off wherever it was (agent.deadline)."""
    from agent import deadline
    deadline.cancel("stopped by SIGTERM")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=Path(os.environ.get("AGENT_ROOT", "/")),
                        help="every file the agent reads or writes lives under DIR (env AGENT_ROOT, default /)")
    common.add_argument("--services", type=Path, default=None,
                        help="services.yaml to use (default: ROOT/etc/unified/services.yaml)")
    parser = argparse.ArgumentParser(prog="agent", description="The unified image agent: one image, every service.")
    parser.add_argument("--version", action="version", version=f"agent {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func, command_name=name)
        return p

    command("validate", cmd_validate, "check services.yaml; exit 2 with FILE:LINE errors if it is wrong")
    p = command("plan", cmd_plan, "print what would run for a role (no side effects)")
    _role_args(p, target_group=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("boot", cmd_boot, "bring this box up for its role (from IMDS tags unless --mode is given)")
    _role_args(p)
    p.add_argument("--imds-deadline", type=float, default=60.0, metavar="SECONDS",
                   help="how long to keep retrying the instance metadata service (default 60)")
    p.add_argument("--heartbeat-interval", type=float, default=None, metavar="SECONDS",
                   help="lifecycle hook heartbeat period while booting (default: a third of the hook's timeout)")
    p = command("status", cmd_status, "each program's state and readiness; exit 0 all ready, 3 otherwise")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("restart", cmd_restart, "restart services (all by default), each ready again before returning; "
                "outside review, drain from the load balancer first")
    p.add_argument("names", nargs="*", metavar="SERVICE")
    _operate_args(p)
    p = command("stop", cmd_stop, "stop every program, the databases and supervisord (draining first)")
    _operate_args(p)
    p.add_argument("--no-drain", action="store_true",
                   help="stop even if the load balancer cannot be reached (requests in flight here fail)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="the whole stop must end within this (systemd's TimeoutStopSec): the drain is cut to fit")
    p = command("watch", cmd_watch, "drain this instance on a spot interruption notice or scale-in (daemon)")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS", help="how often to ask IMDS (default 5)")
    p.add_argument("--drain-timeout", type=float, default=None, metavar="SECONDS",
                   help="cap on draining (a spot notice caps it to fit its two minutes anyway)")
    p.add_argument("--once", action="store_true", help="look once and exit (for cron-style use and tests)")
    p = command("policy", cmd_policy, "print the least-privilege IAM policy of one service's instance role")
    _role_args(p)
    p.add_argument("--account", default="*", help="the AWS account id (default: any)")
    p.add_argument("--region", default="*", help="the region (default: any)")
    p.add_argument("--kms-key", default=None, metavar="ARN",
                   help="the KMS key of the SecureString config vars (default: any key, through SSM only)")
    p = command("bake", cmd_bake, "put every repo at its ref under the root and build it (image build time)")
    p.add_argument("--jobs", type=int, default=4, help="repos baked in parallel (default 4)")
    p.add_argument("--steps", choices=("fetch", "build", "all"), default="all",
                   help="fetch only (on a build host with the git credentials), build only (what a fetch "
                        "put under the root, with no network), or all (default)")
    return parser


def _operate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drain-timeout", type=float, default=None, metavar="SECONDS",
                   help="wait at most this long for draining (default: the load balancer's own delay)")
    p.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                   help="wait this long for another agent operation to finish (default 600)")


def _role_args(p: argparse.ArgumentParser, target_group: bool = False) -> None:
    p.add_argument("--mode", help="review, staging or production")
    p.add_argument("--service", help="the service to run (staging/production)")
    if target_group:
        p.add_argument("--target-group", default=None,
                       help="for a service with a blue/green pair: the group of the pair to plan for")


def _layout(args: argparse.Namespace, sockets: bool = False) -> Layout:
    """The root's layout; `sockets`: the command starts programs, whose unix sockets
    must fit their address under it."""
    layout = Layout(args.root.resolve())
    root = str(layout.root)
    if any(c.isspace() for c in root):
        raise BadInput(f"--root {root!r}: white space in the root breaks supervisord's include list; "
                       "choose a root without spaces")
    if sockets and len(str(layout.run).encode()) > layout.RUN_PATH_LIMIT:
        raise BadInput(f"--root {root!r} is too long: the sockets under {layout.run} must fit a unix socket "
                       f"address; choose a root whose run directory is at most {layout.RUN_PATH_LIMIT} bytes")
    return layout


def _services(args: argparse.Namespace, layout: Layout) -> Path:
    return Path(args.services or layout.default_services)


def cmd_validate(args: argparse.Namespace) -> int:
    from agent.config import catalog
    cat = catalog.load(_services(args, _layout(args)))
    print(f"{cat.path}: ok ({len(cat.services)} services, {len(cat.repos)} repos)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from agent import facts, plan, role
    from agent.config import catalog
    layout = _layout(args)
    cat = catalog.load(_services(args, layout))
    the_role = role.resolve(cat, args.mode, args.service, target_group=args.target_group)
    planned = plan.make_plan(cat, the_role, layout, facts.gather(layout, cat, the_role, generate_secrets=False))
    print(json.dumps(planned.to_json(), indent=2) if args.json else plan.describe(planned))
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from agent import boot
    _logging()
    request = boot.Request(services=args.services, mode=args.mode, service=args.service,
                           imds_deadline=args.imds_deadline, heartbeat_interval=args.heartbeat_interval)
    current = boot.boot(_layout(args, sockets=True), request)
    who = current.role.describe() if current.role else "?"
    print(f"booted {who}: {len(current.programs)} programs ready in {current.boot_seconds or 0:.1f}s")
    return cmd_status(argparse.Namespace(root=args.root, json=False))


def _logging() -> None:
    import logging
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_status(args: argparse.Namespace) -> int:
    from agent import ops
    report, code = ops.status(_layout(args))
    print(json.dumps(report, indent=2) if args.json else ops.format_status(report))
    return code


def cmd_restart(args: argparse.Namespace) -> int:
    from agent import ops
    _logging()
    ops.restart(_layout(args), args.names, args.drain_timeout, args.wait)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from agent import ops
    layout = _layout(args)
    _logging()
    ops.stop(layout, args.drain_timeout, args.wait, no_drain=args.no_drain, budget=args.budget)
    print(f"stopped everything under {layout.root}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from agent import watch
    _logging()
    if not 0 < args.interval <= 5:
        raise BadInput(f"--interval {args.interval:g}: expected more than 0 and at most 5 seconds "
                       "(a spot notice leaves two minutes)")
    say = lambda line: print(line, flush=True)  # noqa: E731  (a daemon's log is read live)
    return watch.run(_layout(args), args.interval, args.drain_timeout, args.once, say)


def cmd_policy(args: argparse.Namespace) -> int:
    from agent.aws import policy
    from agent.config import catalog
    if args.mode not in ("staging", "production") or not args.service:
        raise BadInput("policy: give --mode staging|production and --service NAME")
    cat = catalog.load(_services(args, _layout(args)))
    print(json.dumps(policy.instance_role(cat, args.mode, args.service, args.account, args.region, args.kms_key),
                     indent=2))
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from agent import bake
    from agent.config import catalog
    layout = _layout(args)
    steps = bake.STEPS if args.steps == "all" else (args.steps,)
    manifest = bake.bake(layout, catalog.load(_services(args, layout)), jobs=args.jobs, steps=steps)
    print(f"baked {len(manifest['repos'])} repos; manifest at {layout.manifest}")
    return 0
