"""Preflight: an environment's fixed parts exist and are shaped right, and the image
exists. Reads only; every problem found is reported at once, by name, with the fix
(exit 2), before anything is written.

The fixed parts are made once, outside the tool (docs/deploy.md): subnets, the ALB and
its listeners, per web service a target group or a pair, the launch template, the
DynamoDB table, the instance profiles.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.config.catalog import Catalog, Environment, Fleet, Service
from agent.errors import BadInput
from fleet import aws, groups, routing
from fleet.table import Table


@dataclass
class ServiceParts:
    """What one service deploys into, resolved."""

    service: Service
    kind: str | None                                      # target_group, target_groups, classic_elb, None (a worker)
    target_groups: dict[str, str] = field(default_factory=dict)  # name -> ARN
    routes: list[routing.Route] = field(default_factory=list)
    classic_elb: str | None = None

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def pair(self) -> bool:
        return self.kind == "target_groups"


@dataclass
class Parts:
    env: Environment
    fleet: Fleet
    table: Table
    template: groups.Template
    load_balancer: routing.LoadBalancer | None
    services: dict[str, ServiceParts]


def environment(catalog: Catalog, env_name: str) -> tuple[Environment, Fleet]:
    env = catalog.environments.get(env_name)
    if env is None:
        raise BadInput(f"no environment {env_name!r} in {catalog.path}; expected one of: "
                       f"{', '.join(catalog.environments) or '(none declared)'}")
    if env.fleet is None:
        raise BadInput(f"{catalog.path}: environments.{env_name} has no fleet section: declare its fixed parts "
                       "(load_balancer, launch_template, subnets, table; docs/deploy.md)")
    return env, env.fleet


def chosen_services(catalog: Catalog, env_name: str, names: list[str]) -> list[str]:
    """The services named (each must have `scale` in this environment), or every
    service that has one."""
    environment(catalog, env_name)
    deployable = [n for n, s in catalog.services.items() if env_name in s.scale]
    if not names:
        if not deployable:
            raise BadInput(f"no service of {catalog.path} has scale.{env_name}: nothing to deploy")
        return sorted(deployable)
    problems = []
    for name in names:
        if name not in catalog.services:
            problems.append(f"no service {name!r} in {catalog.path}; expected one of: {', '.join(catalog.services)}")
        elif name not in deployable:
            problems.append(f"services.{name} has no scale.{env_name} in {catalog.path}: add its size there")
    if problems:
        raise BadInput(problems[0], lines=problems)
    return sorted(set(names))


def check(catalog: Catalog, env_name: str, services: list[str], image: str | None) -> Parts:
    """Read every fixed part; BadInput listing every problem, or the resolved parts."""
    env, fleet = environment(catalog, env_name)
    problems: list[str] = []

    def attempt(what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except BadInput as exc:
            problems.extend(exc.lines)
        except aws.AwsError as exc:
            if exc.code is None:
                raise  # AWS unreachable: not the file's fault
            problems.append(f"{what}: {exc.code}: {exc.detail}")
        return None

    needs_alb = any(catalog.services[s].load_balancer.get(env_name) is not None and
                    catalog.services[s].load_balancer[env_name].kind != "classic_elb" for s in services)
    # the independent reads at once: a preflight is on every deploy's critical path
    with ThreadPoolExecutor(max_workers=5, thread_name_prefix="preflight") as pool:
        reads = {
            "image": pool.submit(attempt, f"image {image}", _image, image) if image is not None else None,
            "template": pool.submit(attempt, f"launch template {fleet.launch_template}", groups.template,
                                    fleet.launch_template, env_name),
            "subnets": pool.submit(attempt, "subnets", _subnets, fleet.subnets),
            "table": pool.submit(attempt, f"table {fleet.table}", _table, fleet.table),
            "lb": pool.submit(attempt, f"load balancer {fleet.load_balancer}", routing.load_balancer,
                              fleet.load_balancer) if needs_alb else None,
        }
    done = {name: future.result() if future is not None else None for name, future in reads.items()}
    template, table, lb = done["template"], done["table"], done["lb"]
    parts: dict[str, ServiceParts] = {}
    for name in services:
        part = attempt(f"service {name}", _service, catalog.services[name], env_name, lb, fleet)
        if part is not None:
            parts[name] = part
    if problems or template is None or table is None:
        lines = [f"{env_name}: {p}" for p in problems]
        raise BadInput(lines[0] if lines else f"{env_name}: preflight failed", lines=lines)
    return Parts(env, fleet, table, template, lb, parts)


def _image(image: str) -> None:
    try:
        found = aws.call(f"finding image {image}", aws.client("ec2").describe_images,
                         ImageIds=[image]).get("Images", [])
    except aws.AwsError as exc:
        if exc.code != "InvalidAMIID.NotFound":
            raise
        found = []
    if not found:
        raise BadInput(f"image {image} not found in {aws.region()}: build it (packer/README.md) or check the id")
    state = found[0].get("State", "available")
    if state != "available":
        raise BadInput(f"image {image} is {state}, not available: wait for it, or deploy another")


def _subnets(subnets: tuple[str, ...]) -> None:
    found = aws.call("finding the subnets", aws.client("ec2").describe_subnets,
                     Filters=[{"Name": "subnet-id", "Values": list(subnets)}]).get("Subnets", [])
    missing = sorted(set(subnets) - {s["SubnetId"] for s in found})
    if missing:
        raise BadInput(f"subnet(s) {', '.join(missing)} not found: fix fleet.subnets")


def _table(name: str) -> Table:
    table = Table(name)
    try:
        described = table.describe()
    except aws.AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            raise BadInput(f"table {name} not found: create it (key pk string hash, sk string range; "
                           "docs/deploy.md)") from None
        raise
    keys = {(k["AttributeName"], k["KeyType"]) for k in described.get("KeySchema", [])}
    types = {a["AttributeName"]: a["AttributeType"] for a in described.get("AttributeDefinitions", [])}
    if keys != {("pk", "HASH"), ("sk", "RANGE")} or types.get("pk") != "S" or types.get("sk") != "S":
        raise BadInput(f"table {name} has the wrong key schema: expected pk (string, hash) and sk (string, range)")
    return table


def _service(service: Service, env_name: str, lb: routing.LoadBalancer | None, fleet: Fleet) -> ServiceParts:
    problems = []
    profile = fleet.instance_profile_of(service.name)
    if profile is not None:
        try:
            aws.call(f"finding instance profile {profile}", aws.client("iam").get_instance_profile,
                     InstanceProfileName=profile)
        except aws.AwsError as exc:
            if exc.code != "NoSuchEntity":
                raise
            problems.append(f"instance profile {profile} of {service.name} not found: create it with the policy "
                            f"`agent policy --mode {env_name} --service {service.name}` writes")
    spec = service.load_balancer.get(env_name)
    part = ServiceParts(service, spec.kind if spec else None)
    if spec is not None and spec.kind == "classic_elb":
        part.classic_elb = spec.names[0]
    elif spec is not None:
        try:
            part.target_groups = routing.target_group_arns(list(spec.names))
        except BadInput as exc:
            problems.append(f"{service.name}: {exc.lines[0]}: create it or fix load_balancer.{env_name}")
        if lb is not None and part.target_groups:
            part.routes = routing.routes_to(lb, set(part.target_groups.values()))
            if spec.kind == "target_groups":
                pair = set(part.target_groups.values())
                if not part.routes:
                    problems.append(f"{service.name}: no listener of {fleet.load_balancer} forwards to "
                                    f"{' and '.join(spec.names)}: add a forward action with both, weighted")
                by_arn = {arn: name for name, arn in part.target_groups.items()}
                for route in part.routes:
                    if set(route.weights) != pair:
                        problems.append(f"{service.name}: the {route.where} of a listener forwards to "
                                        f"{len(set(route.weights) & pair)} of the pair; it must forward to both "
                                        "(one weighted forward action)")
                    elif sum(1 for w in route.weights.values() if w > 0) != 1:
                        split = ", ".join(f"{by_arn[a]} {w}" for a, w in sorted(route.weights.items()))
                        problems.append(f"{service.name}: the {route.where} of a listener splits the pair's weight "
                                        f"({split}): one group must have it all, so that one version is live; "
                                        "set the other's weight to 0")
                live = {max(r.weights, key=lambda a: r.weights[a]) for r in part.routes if set(r.weights) == pair}
                if len(live) > 1:
                    problems.append(f"{service.name}: its routes disagree on which group of the pair is live; "
                                    "give the same one all the weight everywhere")
    if problems:
        raise BadInput(problems[0], lines=problems)
    return part
