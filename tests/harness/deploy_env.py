"""A production environment for `unified` on the simulated fleet.

What an operator makes once (docs/deploy.md, "Fixed parts") is seeded in moto: a VPC
and two subnets, an ALB with an HTTP :80 listener whose default action forwards to a
blue/green pair (blue weighted), a single target group for red/black, the launch
template, the DynamoDB table. Images are AMIs registered in moto, each mapped to a
baked root (an image id is a version of the code), with `unified:commit:<repo>` tags
as tag-ami.sh sets them. The simulated fleet turns every instance the tool's groups
launch into a real agent; HAProxy mirrors the listener (weights, header rules, target
health). `unified` runs as a subprocess, exactly as an operator runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO

from .alb import AlbMirror
from .fixtures import subprocess_env
from .fleet import FleetNetwork, SimulatedFleet, seed_load_balancer
from .moto_server import MotoServer

ENV = "production"
PAIR = ("prod-echo-blue", "prod-echo-green")
SINGLE = "prod-worker-web"
TEMPLATE = "unified-production"
TABLE = "unified-production-deploys"
ALB = "unified-alb"
# The interpreter of the echo service: the agent runs services as the unprivileged
# user `unified`, who cannot reach an interpreter under /root; echo needs only the stdlib.
SERVICE_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def services_yaml(repo: Path, ref: str, subnets: tuple[str, ...] = ("subnet-00000000",), *,
                  desired: int = 2, standby_minutes: int = 30, retain: int = 2, verify: str = "[/health]",
                  release: str | None = None, start_delay: float = 0, extra_services: str = "",
                  health_timeout: int | None = None) -> str:
    """The stack as deployed: `echo` behind the blue/green pair. The baked copy in an
    image only needs the shapes right (the agent ignores `fleet`); the operator's copy
    names the real subnets."""
    return f"""\
version: 1
repos:
  shop: {{url: {repo}, ref: {ref}}}
services:
  echo:
    repo: shop
    command: {SERVICE_PYTHON} -m testapps.echo
    port: 8000
    health: {{path: /health, timeout: {health_timeout or 20 + int(start_delay)}}}
    env: {{START_DELAY: "{start_delay:g}"}}
    load_balancer:
      {ENV}: {{target_groups: [{PAIR[0]}, {PAIR[1]}]}}
    scale:
      {ENV}: {{min: {desired}, desired: {desired}, max: {desired + 2}}}
    verify: {verify}
{f"    release: {release}{chr(10)}" if release else ""}{extra_services}environments:
  {ENV}:
    config_path: /unified/{ENV}
    fleet:
      load_balancer: {ALB}
      launch_template: {TEMPLATE}
      subnets: [{", ".join(subnets)}]
      table: {TABLE}
      standby_minutes: {standby_minutes}
      retain: {retain}
      verify_count: 5
"""


@dataclass
class DeployEnv:
    moto: MotoServer
    net: FleetNetwork
    fleet: SimulatedFleet
    alb: AlbMirror
    images: dict[str, str]          # label (v1, v2, ...) -> AMI id
    services: Path                  # the operator's services.yaml

    def env(self) -> dict[str, str]:
        return {**subprocess_env(self.moto), "PYTHONPATH": str(REPO)}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fleet", "--services", str(self.services), *args]

    def unified(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, env=self.env(),
                              cwd=REPO)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(), cwd=REPO)

    def get(self, path: str = "/health", headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.alb.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, {}

    def versions(self, count: int = 20) -> list[str]:
        """The code version of `count` answers through the listener (a status when not 200),
        once the mirror has caught up with the listener."""
        self.alb.wait_synced()
        answers = [self.get() for _ in range(count)]
        return [str(body.get("version", "?")) if status == 200 else str(status) for status, body in answers]

    def weights(self) -> dict[str, int]:
        listener = self.moto.client("elbv2", internal=True).describe_listeners(
            ListenerArns=[self.net.listener_arn])["Listeners"][0]
        forward = next(a for a in listener["DefaultActions"] if a["Type"] == "forward")
        by_arn = {arn: name for name, arn in self.net.target_groups.items()}
        return {by_arn[t["TargetGroupArn"]]: t["Weight"] for t in forward["ForwardConfig"]["TargetGroups"]}

    def groups(self) -> dict[str, dict[str, Any]]:
        """The tool's groups: name -> {desired, instances, tags}."""
        found = self.moto.client("autoscaling", internal=True).describe_auto_scaling_groups()["AutoScalingGroups"]
        return {g["AutoScalingGroupName"]: {"desired": g["DesiredCapacity"], "instances": g["Instances"],
                                            "tags": {t["Key"]: t["Value"] for t in g.get("Tags", [])}}
                for g in found}

    def rules(self) -> list[dict[str, Any]]:
        return [r for r in self.moto.client("elbv2", internal=True).describe_rules(
            ListenerArn=self.net.listener_arn)["Rules"] if not r["IsDefault"]]


def seed(moto: MotoServer, baked: dict[str, Path], commits: dict[str, str], operator_yaml: Any,
         services_file: Path, fleet_factory: Any, alb_factory: Any, **fleet_options: Any) -> DeployEnv:
    """The fixed parts, the images, the fleet and the ALB mirror; `operator_yaml(subnets)`
    writes the operator's services.yaml once the subnets exist."""
    net = seed_load_balancer(moto, [*PAIR, SINGLE], deregistration_delay=1)
    elbv2 = moto.client("elbv2", internal=True)
    elbv2.modify_listener(ListenerArn=net.listener_arn, DefaultActions=[{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": net.target_groups[PAIR[0]], "Weight": 100},
                         {"TargetGroupArn": net.target_groups[PAIR[1]], "Weight": 0}]}}])
    ec2 = moto.client("ec2", internal=True)
    ec2.create_launch_template(LaunchTemplateName=TEMPLATE, LaunchTemplateData={
        "ImageId": "ami-00000000000000000", "InstanceType": "t3.micro",
        "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"}},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "unified:mode", "Value": ENV}]}])
    moto.client("dynamodb", internal=True).create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}])
    images = {}
    roots = {}
    for label, root in baked.items():
        ami = ec2.register_image(Name=f"unified-{label}", TagSpecifications=[{"ResourceType": "image", "Tags": [
            {"Key": "unified:commit:shop", "Value": commits[label]}]}])["ImageId"]
        images[label], roots[ami] = ami, root
    services_file.write_text(operator_yaml(net.subnet_ids))
    simulated = fleet_factory(roots, **fleet_options)
    mirror = alb_factory(net.listener_arn, target_groups=[net.target_groups[n] for n in (*PAIR, SINGLE)])
    return DeployEnv(moto, net, simulated, mirror, images, services_file)


def slow_verify(env: DeployEnv, ms: int = 1500) -> None:
    """Verify paths that take `ms` each: a verify phase (and the live probe after the
    switch) of 5 x ms, a window to act in."""
    env.services.write_text(env.services.read_text().replace("verify: [/health]", f'verify: ["/slow?ms={ms}"]'))
