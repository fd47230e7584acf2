"""Packer, for real: the templates under packer/ checked and built with Debian's Packer.

- `packer fmt -check` on packer/ as written, and on the 1.6.6 copy;
- `packer validate` on the copy made by packer/compat-1.6.sh, and proof that the copy
  differs from packer/ by exactly the three things 1.6.6 lacks;
- 80-cleanup.sh and 90-validate.sh on a scratch tree: validate fails on each kind of
  per-instance state, and passes once cleanup has run;
- scripts/tag-ami.sh against a moto server;
- the local build (`-only=null.local`): `agent bake` into a scratch root, SHAs checked
  against `git rev-parse HEAD`;
- the amazon-ebs build against moto on 127.0.0.1: moto serves EC2 (with a fake
  Canonical Ubuntu 24.04 AMI so the production source_ami_filter matches), and the
  "instance" is a Debian chroot reached through a throwaway sshd with ChrootDirectory,
  so the provisioning scripts run as root without touching this machine. Packer
  launches, provisions, stops, images, tags and terminates; the test then reads the AMI
  and its commit tags back from moto and inspects the chroot.

Packer 1.6.6 cannot read `required_plugins`, `metadata_options` or `imds_support`, so
with it every test runs on the compat copy; with Packer 1.7+ the templates run as they
are (after `packer init`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PACKER_DIR = REPO / "packer"
SCRIPTS = PACKER_DIR / "scripts"
PACKER = shutil.which("packer") or "/usr/bin/packer"

# The AMI the production source_ami_filter must find: Canonical's owner id and a name of
# the form Canonical publishes.
FAKE_UBUNTU_AMI = {
    "ami_id": "ami-0a1b2c3d4e5f60718",
    "state": "available",
    "public": True,
    "owner_id": "099720109477",
    "image_location": "amazon/ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250101",
    "sriov": "simple",
    "root_device_type": "ebs",
    "root_device_name": "/dev/sda1",
    "description": "Canonical, Ubuntu, 24.04, amd64 noble image",
    "image_type": "machine",
    "platform": None,
    "architecture": "x86_64",
    "name": "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250101",
    "virtualization_type": "hvm",
    "hypervisor": "xen",
    "creation_date": "2025-01-01T00:00:00.000Z",
}

# The chroot that plays the builder instance. It lives outside /tmp because sshd's
# ChrootDirectory refuses any path component that others can write to.
CHROOT_CACHE = Path("/var/cache/unified-packer-test")
CHROOT_SUITE = "bookworm"
CHROOT_MIRROR = "http://deb.debian.org/debian"
CHROOT_INCLUDE = "systemd,sudo,openssh-client,ca-certificates"

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "CHECKPOINT_DISABLE": "1",  # no Packer version check over the network
}


# --- helpers -------------------------------------------------------------------------


def run(cmd: list[str], *, timeout: float = 120, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,  # type: ignore[call-overload]
                          **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                    f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def packer_version() -> tuple[int, ...]:
    out = run([PACKER, "version"]).stdout
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(part) for part in match.groups())


def compat_copy(dest: Path) -> Path:
    run(["bash", str(PACKER_DIR / "compat-1.6.sh"), str(PACKER_DIR), str(dest)])
    return dest


def template_dir(tmp_path: Path) -> Path:
    """The templates the installed Packer can read: the compat copy for 1.6.x."""
    if packer_version() < (1, 7, 0):
        return compat_copy(tmp_path / "packer-1.6")
    run([PACKER, "init", str(PACKER_DIR)], timeout=300)
    return PACKER_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited {process.returncode} before listening on 127.0.0.1:{port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{what} not listening on 127.0.0.1:{port} after {deadline_s}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def git_repo(path: Path, content: str) -> str:
    """A one-commit repository on branch main; returns its HEAD."""
    path.mkdir(parents=True)
    git = ["git", "-C", str(path), "-c", "user.email=test@example.com", "-c", "user.name=test"]
    run([*git, "init", "-q", "-b", "main"])
    (path / "README").write_text(content)
    run([*git, "add", "README"])
    run([*git, "commit", "-q", "-m", f"{content}: first commit"])
    return run([*git, "rev-parse", "HEAD"]).stdout.strip()


def write_services(path: Path, repo_urls: dict[str, str]) -> Path:
    """services.yaml (version 1) with one service per repo."""
    lines = ["version: 1", "repos:"]
    for name, url in repo_urls.items():
        lines += [f"  {name}:", f"    url: {url}", "    ref: main", "    build: test -f README"]
    lines.append("services:")
    for name in repo_urls:
        lines += [f"  {name}-worker:", f"    repo: {name}", "    command: sleep 3600"]
    path.write_text("\n".join(lines) + "\n")
    return path


def agent_wrapper(tmp_path: Path) -> Path:
    """An `agent` executable that runs this checkout's agent with this interpreter."""
    wrapper = tmp_path / "bin" / "agent"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m agent "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def agent_bake_missing() -> str | None:
    """Why `agent bake` cannot run yet, or None when it can."""
    if not (REPO / "agent" / "__init__.py").exists() or not (REPO / "setup.cfg").exists():
        return "agent bake not available yet: agent/ and setup.cfg are missing"
    proc = subprocess.run([sys.executable, "-m", "agent", "bake", "--help"], capture_output=True, check=False,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    if proc.returncode != 0:
        return f"agent bake not available yet: `python -m agent bake --help` exited {proc.returncode}"
    return None


def unit_files(tmp_path: Path) -> Path:
    """The repo's units/ when it has systemd units, else a stand-in with the two units."""
    if list((REPO / "units" / "systemd").glob("*.service")):
        return REPO / "units"
    units = tmp_path / "units"
    (units / "systemd").mkdir(parents=True)
    for name, command in (("unified-agent", "boot"), ("unified-watch", "watch")):
        (units / "systemd" / f"{name}.service").write_text(
            f"[Unit]\nDescription=unified {command}\n\n[Service]\nType=oneshot\n"
            f"ExecStart=/opt/unified/venv/bin/agent {command}\n\n[Install]\nWantedBy=multi-user.target\n")
    return units


def validate_inputs(tmp_path: Path) -> list[str]:
    """-var flags pointing the file provisioners at files that exist."""
    dist = tmp_path / "dist" / "unified_image_agent-0.0.0-py3-none-any.whl"
    dist.parent.mkdir(parents=True, exist_ok=True)
    dist.write_bytes(b"")
    services = tmp_path / "services.yaml"
    services.write_text("version: 1\n")
    return ["-var", f"agent_dist={dist}", "-var", f"services_file={services}",
            "-var", f"units_dir={unit_files(tmp_path)}"]


# --- fmt, validate, compat -------------------------------------------------------------


@pytest.mark.parametrize("directory", [PACKER_DIR, PACKER_DIR / "test"], ids=["packer", "packer/test"])
def test_fmt_check_on_templates_as_written(directory: Path) -> None:
    # Packer 1.6.6's fmt is purely syntactic, so it reads the 1.7+ blocks too.
    run([PACKER, "fmt", "-check", "-diff", str(directory)])


def test_fmt_check_on_compat_copy(tmp_path: Path) -> None:
    run([PACKER, "fmt", "-check", "-diff", str(compat_copy(tmp_path / "compat"))])


@pytest.mark.parametrize("var_file", [None, "example.pkrvars.hcl", "test/moto.pkrvars.hcl"])
def test_validate(tmp_path: Path, var_file: str | None) -> None:
    templates = template_dir(tmp_path)
    args = [PACKER, "validate"]
    if var_file:
        args += ["-var-file", str(templates / var_file)]
    if var_file == "test/moto.pkrvars.hcl":  # the test supplies the key of its key pair
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")])
        args += ["-var", f"ssh_private_key_file={tmp_path / 'key'}"]
    run([*args, *validate_inputs(tmp_path), str(templates)])


def test_templates_carry_imds_settings_for_current_packer() -> None:
    source = (PACKER_DIR / "unified.pkr.hcl").read_text()
    assert re.search(r'^\s*imds_support\s*=\s*"v2.0"$', source, re.MULTILINE)
    block = re.search(r"^\s*metadata_options\s*\{\n(.*?)^\s*\}$", source, re.MULTILINE | re.DOTALL)
    assert block, "no metadata_options block"
    settings = dict(re.findall(r"^\s*(\w+)\s*=\s*(\S+)$", block.group(1), re.MULTILINE))
    assert settings == {"http_endpoint": '"enabled"', "http_tokens": '"required"',
                        "http_put_response_hop_limit": "1", "instance_metadata_tags": '"enabled"'}
    plugins = (PACKER_DIR / "plugins.pkr.hcl").read_text()
    code = "\n".join(line for line in plugins.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    assert code.startswith("packer {\n  required_plugins {") and code.endswith("}")
    assert 'source  = "github.com/hashicorp/amazon"' in code and 'version = "~> 1.3"' in code


def test_compat_removes_exactly_the_three_things(tmp_path: Path) -> None:
    dest = compat_copy(tmp_path / "compat")
    source_files = {p.relative_to(PACKER_DIR) for p in PACKER_DIR.rglob("*")
                    if p.is_file() and "output" not in p.relative_to(PACKER_DIR).parts}
    copied_files = {p.relative_to(dest) for p in dest.rglob("*") if p.is_file()}
    assert source_files - copied_files == {Path("plugins.pkr.hcl")}
    assert copied_files - source_files == set()

    for rel in sorted(copied_files - {Path("unified.pkr.hcl")}):
        assert (dest / rel).read_bytes() == (PACKER_DIR / rel).read_bytes(), rel
        assert os.access(dest / rel, os.X_OK) == os.access(PACKER_DIR / rel, os.X_OK), rel

    before = (PACKER_DIR / "unified.pkr.hcl").read_text().splitlines()
    after = (dest / "unified.pkr.hcl").read_text().splitlines()
    start = next(i for i, line in enumerate(before) if re.match(r"^\s*metadata_options\s*\{\s*$", line))
    end = next(i for i in range(start, len(before)) if re.match(r"^\s*\}\s*$", before[i]))
    expected_removed = [line for line in before if re.match(r"^\s*imds_support\s*=", line)] + before[start:end + 1]
    diff = list(difflib.ndiff(before, after))
    assert [line[2:] for line in diff if line.startswith("+ ")] == []
    assert sorted(line[2:] for line in diff if line.startswith("- ")) == sorted(expected_removed)
    assert len(expected_removed) == 7  # imds_support + the 6 lines of metadata_options


def test_iam_policy_allows_what_the_build_and_tagging_call() -> None:
    policy = json.loads((PACKER_DIR / "iam-policy.json").read_text())
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    # The calls the build made against moto, tag-ami.sh's two, and the ones a real
    # bake adds: a temporary key pair, copies to ami_regions.
    needed = {"ec2:DescribeImages", "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
              "ec2:RunInstances", "ec2:CreateTags", "ec2:DescribeInstances", "ec2:StopInstances",
              "ec2:CreateImage", "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute",
              "ec2:DescribeSnapshots", "ec2:TerminateInstances", "ec2:DeleteSecurityGroup",
              "ec2:CopyImage", "ec2:CreateKeyPair", "ec2:DeleteKeyPair"}
    assert needed <= actions, needed - actions
    assert all(action.startswith("ec2:") for action in actions)


# --- per-instance state: cleanup, then validate ---------------------------------------


def plant_per_instance_state(root: Path) -> list[str]:
    """Per-instance state as a booted build instance leaves it; returns what validate must name."""
    files = {
        "etc/ssh/ssh_host_ed25519_key": "key",
        "etc/ssh/ssh_host_rsa_key.pub": "key",
        "root/.ssh/authorized_keys": "ssh-ed25519 AAAA packer",
        "home/ubuntu/.ssh/authorized_keys": "ssh-ed25519 AAAA packer",
        "var/lib/unified/state.json": "{}",
        "run/unified/agent.lock": "",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "var/lib/cloud/instances/i-0123456789abcdef0/boot-finished": "",
        "tmp/unified-upload/services.yaml": "version: 1\n",
        "etc/ssh/sshd_config": "# kept\n",
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    (root / "var/lib/cloud/instance").symlink_to("/var/lib/cloud/instances/i-0123456789abcdef0")
    return ["etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_rsa_key.pub", "root/.ssh/authorized_keys",
            "home/ubuntu/.ssh/authorized_keys", "var/lib/unified/state.json", "run/unified",
            "etc/machine-id", "var/lib/cloud/instances", "var/lib/cloud/instance"]


def test_validate_names_each_per_instance_state_and_passes_after_cleanup(tmp_path: Path) -> None:
    root = tmp_path / "image"
    expected = plant_per_instance_state(root)
    env = {**os.environ, "IMAGE_ROOT": str(root), "UNIFIED_UPLOADS": "/tmp/unified-upload"}

    failed = run(["bash", str(SCRIPTS / "90-validate.sh")], env=env, check=False)
    assert failed.returncode == 1
    for rel in expected:
        assert f"{root}/{rel}:" in failed.stderr, rel
    assert f"{len(expected)} problem(s)" in failed.stderr

    run(["bash", str(SCRIPTS / "80-cleanup.sh")], env=env)
    passed = run(["bash", str(SCRIPTS / "90-validate.sh")], env=env, check=False)
    assert passed.returncode == 0, passed.stderr
    assert (root / "etc/machine-id").read_text() == ""  # empty, not gone: systemd's first-boot marker
    assert not (root / "tmp/unified-upload").exists()
    assert (root / "etc/ssh/sshd_config").read_text() == "# kept\n"


def test_scripts_follow_the_conventions() -> None:
    for script in sorted(SCRIPTS.glob("*.sh")) + [PACKER_DIR / "compat-1.6.sh"]:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert "\nset -o errexit -o nounset -o pipefail\n" in text, script.name
        assert os.access(script, os.X_OK), script.name
        run(["bash", "-n", str(script)])
    if shutil.which("shellcheck"):
        run(["shellcheck", *map(str, sorted(SCRIPTS.glob("*.sh"))), str(PACKER_DIR / "compat-1.6.sh")])


# --- moto ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_ec2() -> Iterator[str]:
    """A moto server whose only public AMI is a Canonical Ubuntu 24.04 lookalike."""
    workdir = Path(tempfile.mkdtemp(prefix="packer-moto-"))
    amis = workdir / "amis.json"
    amis.write_text(json.dumps([FAKE_UBUNTU_AMI]))
    port = free_port()
    log = (workdir / "moto.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env={**os.environ, "MOTO_AMIS_PATH": str(amis)}, stdout=log, stderr=log)
    try:
        wait_for_port(port, process, "moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def ec2_client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def require_aws_cli() -> str:
    aws = shutil.which("aws")
    if aws is None:
        pytest.fail("packer/scripts/tag-ami.sh needs the aws CLI on PATH (pip install awscli)")
    return aws


def tags_of(ec2, resource_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
    return {tag["Key"]: tag["Value"] for tag in found}


def test_tag_ami_tags_this_runs_amis_and_snapshots_with_the_commits(tmp_path: Path, moto_ec2: str) -> None:
    require_aws_cli()
    ec2 = ec2_client(moto_ec2)
    reservation = ec2.run_instances(ImageId=FAKE_UBUNTU_AMI["ami_id"], MinCount=1, MaxCount=1)
    instance = reservation["Instances"][0]["InstanceId"]
    ours = ec2.create_image(InstanceId=instance, Name="unified-ours")["ImageId"]
    earlier = ec2.create_image(InstanceId=instance, Name="unified-earlier")["ImageId"]
    snapshot = ec2.describe_images(ImageIds=[ours])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]

    shas = {"api": "a" * 40, "web": "b" * 40}
    (tmp_path / "packer-manifest.json").write_text(json.dumps({"builds": [
        {"name": "unified", "builder_type": "amazon-ebs", "artifact_id": f"us-east-1:{earlier}",
         "packer_run_uuid": "earlier-run"},
        {"name": "unified", "builder_type": "amazon-ebs", "artifact_id": f"us-east-1:{ours}",
         "packer_run_uuid": "this-run"},
    ], "last_run_uuid": "this-run"}))
    (tmp_path / "image-manifest.json").write_text(json.dumps({
        "agent_version": "0.1.0", "services_digest": "sha256:" + "c" * 64, "baked_at": "2026-01-01T00:00:00Z",
        "repos": [{"repo": name, "url": f"file:///{name}", "ref": "main", "sha": sha, "build_seconds": 0.1}
                  for name, sha in shas.items()]}))
    env = {**os.environ, **AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_ec2, "PACKER_RUN_UUID": "this-run",
           "PACKER_MANIFEST": str(tmp_path / "packer-manifest.json"),
           "IMAGE_MANIFEST": str(tmp_path / "image-manifest.json")}
    run(["bash", str(SCRIPTS / "tag-ami.sh")], env=env)

    expected = {"unified:commit:api": shas["api"], "unified:commit:web": shas["web"],
                "unified:services-digest": "sha256:" + "c" * 64, "unified:agent-version": "0.1.0",
                "unified:baked-at": "2026-01-01T00:00:00Z"}
    assert tags_of(ec2, ours) == expected
    assert tags_of(ec2, snapshot) == expected
    assert tags_of(ec2, earlier) == {}


def test_tag_ami_refuses_a_manifest_without_full_shas(tmp_path: Path, moto_ec2: str) -> None:
    (tmp_path / "packer-manifest.json").write_text(json.dumps({"builds": [
        {"name": "unified", "builder_type": "amazon-ebs", "artifact_id": "us-east-1:ami-12345678",
         "packer_run_uuid": "this-run"}], "last_run_uuid": "this-run"}))
    (tmp_path / "image-manifest.json").write_text(json.dumps({
        "agent_version": "0.1.0", "services_digest": "sha256:00", "baked_at": "now",
        "repos": [{"repo": "api", "url": "x", "ref": "main", "sha": "abc123", "build_seconds": 0}]}))
    env = {**os.environ, **AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_ec2, "PACKER_RUN_UUID": "this-run",
           "PACKER_MANIFEST": str(tmp_path / "packer-manifest.json"),
           "IMAGE_MANIFEST": str(tmp_path / "image-manifest.json")}
    proc = run(["bash", str(SCRIPTS / "tag-ami.sh")], env=env, check=False)
    assert proc.returncode != 0
    assert "repo api: sha 'abc123' is not 40 hex digits" in proc.stderr


# --- the local build -------------------------------------------------------------------


def test_local_null_build_bakes_every_repo_at_its_head(tmp_path: Path) -> None:
    missing = agent_bake_missing()
    if missing:
        pytest.skip(missing)
    heads = {name: git_repo(tmp_path / "repos" / name, name) for name in ("api", "web")}
    services = write_services(tmp_path / "services.yaml",
                              {name: (tmp_path / "repos" / name).as_uri() for name in heads})
    bake_root = tmp_path / "root"

    run([PACKER, "build", "-color=false", "-only=null.local",
         "-var", f"agent_bin={agent_wrapper(tmp_path)}",
         "-var", f"bake_root={bake_root}",
         "-var", f"services_file={services}",
         "-var", f"output_dir={tmp_path / 'out'}",
         str(template_dir(tmp_path))], timeout=600, cwd=tmp_path,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"})

    # -only with a name that matches nothing builds nothing and still exits 0.
    manifest_path = bake_root / "srv/unified/manifest.json"
    assert manifest_path.is_file(), "the build ran but no manifest was written"
    manifest = json.loads(manifest_path.read_text())
    assert {repo["repo"]: repo["sha"] for repo in manifest["repos"]} == heads
    assert manifest["services_digest"].startswith("sha256:")
    for name, sha in heads.items():
        checkout = bake_root / "srv/unified/repos" / name
        assert run(["git", "-C", str(checkout), "rev-parse", "HEAD"]).stdout.strip() == sha


# --- the amazon-ebs build against moto ------------------------------------------------


def chroot_tarball() -> Path:
    """debootstrap's packages for the chroot, downloaded once per machine."""
    if shutil.which("debootstrap") is None:
        pytest.fail("the amazon-ebs test needs debootstrap (apt-get install debootstrap)")
    key = hashlib.sha256(f"{CHROOT_SUITE} minbase {CHROOT_INCLUDE}".encode()).hexdigest()[:12]
    tarball = CHROOT_CACHE / f"{CHROOT_SUITE}-minbase-{key}.tgz"
    if not tarball.exists():
        CHROOT_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
        partial = tarball.with_name(tarball.name + ".partial")
        with tempfile.TemporaryDirectory(dir=CHROOT_CACHE) as scratch:
            run(["debootstrap", "--variant=minbase", f"--include={CHROOT_INCLUDE}",
                 f"--make-tarball={partial}", CHROOT_SUITE, scratch, CHROOT_MIRROR], timeout=900)
        partial.rename(tarball)
    return tarball


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(str(path))]


@pytest.fixture
def builder_chroot() -> Iterator[Path]:
    """A Debian root that plays the freshly launched Ubuntu instance."""
    if os.geteuid() != 0:
        pytest.fail("the amazon-ebs test runs sshd with ChrootDirectory and needs root")
    tarball = chroot_tarball()
    chroot = Path(tempfile.mkdtemp(prefix="chroot-", dir=CHROOT_CACHE))
    try:
        chroot.chmod(0o755)  # the postgres user inside must be able to traverse /
        run(["debootstrap", "--variant=minbase", f"--include={CHROOT_INCLUDE}", f"--unpack-tarball={tarball}",
             CHROOT_SUITE, str(chroot), CHROOT_MIRROR], timeout=900)
        # No init runs in the chroot: without this, package scripts would start
        # PostgreSQL and Redis as daemons on this machine.
        policy = chroot / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        with (chroot / "etc/hosts").open("a") as hosts:
            hosts.write(f"127.0.1.1 {socket.gethostname()}\n")
        # The chroot trusts what this machine trusts (an egress proxy's CA, say), so
        # pip inside it reaches PyPI the way pip outside does.
        local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        if local_cas:
            for ca in local_cas:
                shutil.copy(ca, chroot / "usr/local/share/ca-certificates" / ca.name)
            run(["chroot", str(chroot), "update-ca-certificates"])
        yield chroot
    finally:
        left = mounts_under(chroot)
        if left:
            pytest.fail(f"not removing {chroot}: still mounted: {left}")
        shutil.rmtree(chroot, ignore_errors=True)


@pytest.fixture
def chroot_sshd(builder_chroot: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A throwaway sshd on 127.0.0.1 whose root logins land in the chroot."""
    workdir = tmp_path / "sshd"
    workdir.mkdir()
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host_key")])
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "client_key")])
    shutil.copy(workdir / "client_key.pub", workdir / "authorized_keys")
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {workdir / 'host_key'}",
        f"PidFile {workdir / 'sshd.pid'}", "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}", "StrictModes no",
        f"ChrootDirectory {builder_chroot}", "Subsystem sftp internal-sftp", "LogLevel VERBOSE", ""]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    run(["/usr/sbin/sshd", "-t", "-f", str(config)])
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(workdir / "sshd.log")])
    try:
        wait_for_port(port, process, "sshd")
        yield port, workdir / "client_key"
    finally:
        stop(process)


def test_amazon_ebs_build_against_moto(tmp_path: Path, moto_ec2: str, builder_chroot: Path,
                                       chroot_sshd: tuple[int, Path]) -> None:
    missing = agent_bake_missing()
    if missing:
        pytest.skip(missing)
    require_aws_cli()
    ssh_port, client_key = chroot_sshd
    chroot = builder_chroot
    ec2 = ec2_client(moto_ec2)
    ec2.import_key_pair(KeyName="unified-test", PublicKeyMaterial=(client_key.with_suffix(".pub")).read_bytes())

    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(REPO)],
        timeout=600)
    (wheel,) = dist.glob("*.whl")

    # The repos live inside the chroot, where the builder's `agent bake` clones them.
    heads = {name: git_repo(chroot / "srv/test-repos" / name, name) for name in ("api", "web")}
    services = write_services(tmp_path / "services.yaml", {name: f"file:///srv/test-repos/{name}" for name in heads})
    planted = plant_per_instance_state(chroot)
    units = unit_files(tmp_path)
    output = tmp_path / "out"
    templates = template_dir(tmp_path)

    build = run([PACKER, "build", "-color=false", "-only=amazon-ebs.unified",
                 "-var-file", str(templates / "test/moto.pkrvars.hcl"),
                 "-var", f"ssh_port={ssh_port}",
                 "-var", f"ssh_private_key_file={client_key}",
                 "-var", f"agent_dist={wheel}",
                 "-var", f"services_file={services}",
                 "-var", f"units_dir={units}",
                 "-var", f"output_dir={output}",
                 "-var", "ami_name_prefix=unified-test",
                 str(templates)], timeout=1800, cwd=tmp_path, check=False,
                env={**os.environ, **AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_ec2})
    assert build.returncode == 0, f"packer build exited {build.returncode}\n{build.stdout[-12000:]}\n{build.stderr[-4000:]}"

    # The commits baked into the image are the repos' heads ...
    image_manifest = json.loads((output / "image-manifest.json").read_text())
    assert {repo["repo"]: repo["sha"] for repo in image_manifest["repos"]} == heads
    assert json.loads((chroot / "srv/unified/manifest.json").read_text()) == image_manifest

    # ... and the AMI this run registered carries them as tags.
    packer_manifest = json.loads((output / "packer-manifest.json").read_text())
    (ours,) = [b for b in packer_manifest["builds"] if b["packer_run_uuid"] == packer_manifest["last_run_uuid"]]
    region, ami = ours["artifact_id"].split(":")
    assert region == "us-east-1"
    (image,) = ec2.describe_images(ImageIds=[ami])["Images"]
    assert image["Name"].startswith("unified-test-")
    tags = {tag["Key"]: tag["Value"] for tag in image["Tags"]}
    for name, sha in heads.items():
        assert tags[f"unified:commit:{name}"] == sha
    assert tags["unified:services-digest"] == image_manifest["services_digest"]
    assert tags["unified:source-ami"] == FAKE_UBUNTU_AMI["ami_id"]

    # The builder instance is gone.
    builders = ec2.describe_instances(Filters=[{"Name": "tag:unified:role", "Values": ["image-builder"]}])
    states = [i["State"]["Name"] for r in builders["Reservations"] for i in r["Instances"]]
    assert states and set(states) == {"terminated"}

    # What the provisioners left in the "instance".
    assert os.access(chroot / "opt/unified/venv/bin/agent", os.X_OK)
    assert (chroot / "etc/unified/services.yaml").read_text() == services.read_text()
    passwd = dict(line.split(":", 1) for line in (chroot / "etc/passwd").read_text().splitlines())
    assert passwd["unified"].endswith(":/usr/sbin/nologin")
    for unit in sorted((units / "systemd").glob("*.service")):
        enabled = run(["systemctl", f"--root={chroot}", "is-enabled", unit.name], check=False)
        assert enabled.stdout.strip() == "enabled", unit.name
    for distro_service in ("postgresql.service", "redis-server.service"):
        enabled = run(["systemctl", f"--root={chroot}", "is-enabled", distro_service], check=False)
        assert enabled.stdout.strip() == "disabled", distro_service
    for rel in planted:
        if rel == "etc/machine-id":
            assert (chroot / rel).read_text() == ""
        else:
            assert not (chroot / rel).exists() and not (chroot / rel).is_symlink(), rel
    assert not (chroot / "tmp/unified-upload").exists()
