"""Packer, for real: the templates under packer/ checked and built with Debian's Packer.

- `packer fmt -check` on packer/ as written, and on the 1.6.6 copy;
- `packer validate` on the copy made by packer/compat-1.6.sh, and proof that the copy
  differs from packer/ by exactly the four things 1.6.6 lacks; what validate refuses
  (SSH open to the world, a KMS key with encryption off);
- iam-policy.json: every call granted, the destructive ones only on what the build
  tagged, KMS for the encrypted snapshots;
- the provisioning scripts against stubbed apt/systemd: apt waits for cloud-init and
  the apt jobs, every apt-get has a lock timeout, PostgreSQL comes from the distro or
  apt.postgresql.org as the pin requires, and a pin nobody has fails clearly;
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
  and its commit tags back from moto and inspects the chroot. One repo is private,
  served by a second sshd that wants a key and is checked against a known_hosts entry,
  both only on the build host: the bake succeeds and neither is anywhere in the image.

Packer 1.6.6 cannot read `required_plugins`, `metadata_options`, `imds_support` or
`temporary_security_group_source_public_ip`, so
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
from dataclasses import dataclass
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


# --- shared steps -------------------------------------------------------------------------


def run(cmd: list[str], *, timeout: float = 120, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,  # type: ignore[call-overload]
                          **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                    f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def one_line(text: str) -> str:
    """Packer wraps its error messages: compare them with the white space folded."""
    return " ".join(text.split())


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


def write_services(path: Path, repo_urls: dict[str, str], postgres_version: int | None = None) -> Path:
    """services.yaml (version 1) with one service per repo."""
    lines = ["version: 1", "repos:"]
    for name, url in repo_urls.items():
        lines += [f"  {name}:", f"    url: {url}", "    ref: main", "    build: test -f README"]
    if postgres_version is not None:
        lines += ["databases:", f"  postgres: {{version: {postgres_version}}}"]
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
            "-var", f"units_dir={unit_files(tmp_path)}",
            "-var", f"readme_file={REPO / 'README.md'}", "-var", f"docs_dir={REPO / 'docs'}"]


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


def test_compat_removes_exactly_the_four_things(tmp_path: Path) -> None:
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
    single_lines = [line for line in before
                    if re.match(r"^\s*(imds_support|temporary_security_group_source_public_ip)\s*=", line)]
    expected_removed = single_lines + before[start:end + 1]
    diff = list(difflib.ndiff(before, after))
    assert [line[2:] for line in diff if line.startswith("+ ")] == []
    assert sorted(line[2:] for line in diff if line.startswith("- ")) == sorted(expected_removed)
    assert len(single_lines) == 2 and len(expected_removed) == 8  # + the 6 lines of metadata_options


def test_builder_ssh_is_never_open_to_the_internet(tmp_path: Path) -> None:
    source = (PACKER_DIR / "unified.pkr.hcl").read_text()
    # Current Packer: no CIDRs given means this build host's public address only.
    assert re.search(r"^\s*temporary_security_group_source_public_ip\s*=\s*true$", source, re.MULTILINE)
    assert re.search(r"^\s*temporary_security_group_source_cidrs\s*=\s*var\.ssh_source_cidrs$", source, re.MULTILINE)
    variables = (PACKER_DIR / "variables.pkr.hcl").read_text()
    block = re.search(r'variable "ssh_source_cidrs" \{(.*?)\n\}', variables, re.DOTALL)
    assert block and re.search(r"^\s*default\s*=\s*\[\]$", block.group(1), re.MULTILINE)
    templates = template_dir(tmp_path)
    for cidrs in ('["0.0.0.0/0"]', '["10.0.0.0/8", "::/0"]'):
        refused = run([PACKER, "validate", "-var", f"ssh_source_cidrs={cidrs}", *validate_inputs(tmp_path),
                       str(templates)], check=False)
        assert refused.returncode != 0
        assert "opens the builder's SSH to the whole Internet" in one_line(refused.stdout + refused.stderr)


def test_encryption_is_on_by_default_and_keys_go_per_region(tmp_path: Path) -> None:
    source = (PACKER_DIR / "unified.pkr.hcl").read_text()
    for line in ("encrypt_boot       = var.encrypted", "kms_key_id         = local.build_kms_key_id",
                 "region_kms_key_ids = local.region_kms_key_ids", "encrypted             = var.encrypted",
                 "kms_key_id            = local.build_kms_key_id"):
        assert line in source, line
    variables = (PACKER_DIR / "variables.pkr.hcl").read_text()
    assert re.search(r'variable "encrypted" \{\n  type        = bool\n.*?\n  default     = true\n\}', variables, re.DOTALL)
    assert re.search(r'variable "kms_key_id" \{\n  type        = map\(string\)\n.*?\n  default     = \{\}\n\}',
                     variables, re.DOTALL)
    templates = template_dir(tmp_path)
    base = [PACKER, "validate", *validate_inputs(tmp_path), "-var", 'ami_regions=["us-west-2"]']
    keys = 'kms_key_id={"us-east-1" = "alias/unified-ami", "us-west-2" = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}'
    run([*base, "-var", keys, str(templates)])  # a key per region, encrypted by default
    run([*base, "-var", "encrypted=false", str(templates)])  # off, no keys: fine
    # Packer itself refuses a key with encryption off, and a malformed key.
    contradiction = run([*base, "-var", "encrypted=false", "-var", keys, str(templates)], check=False)
    assert contradiction.returncode != 0
    assert "encrypt_boot must also be true" in one_line(contradiction.stdout + contradiction.stderr)
    malformed = run([*base, "-var", 'kms_key_id={"us-west-2" = "not a key"}', str(templates)], check=False)
    assert malformed.returncode != 0 and "not a valid KMS Key Id" in one_line(malformed.stdout + malformed.stderr)


def _actions(statement: dict) -> set[str]:  # type: ignore[type-arg]
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_iam_policy_allows_what_the_build_and_tagging_call() -> None:
    policy = json.loads((PACKER_DIR / "iam-policy.json").read_text())
    allows = [st for st in policy["Statement"] if st["Effect"] == "Allow"]
    actions = {action for statement in allows for action in _actions(statement)}
    # The calls the build made against moto, tag-ami.sh's two, and the ones a real
    # bake adds: a temporary key pair, copies to ami_regions, encrypted copies.
    needed = {"ec2:DescribeImages", "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
              "ec2:RunInstances", "ec2:CreateTags", "ec2:DescribeInstances", "ec2:StopInstances",
              "ec2:CreateImage", "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute",
              "ec2:DescribeSnapshots", "ec2:TerminateInstances", "ec2:DeleteSecurityGroup",
              "ec2:CopyImage", "ec2:CreateKeyPair", "ec2:DeleteKeyPair", "ec2:DeregisterImage",
              "ec2:DeleteSnapshot"}
    assert needed <= actions, needed - actions
    assert "ec2:GetPasswordData" not in actions  # Windows only
    assert all(action.startswith(("ec2:", "kms:")) for action in actions)


def test_iam_policy_lets_packer_destroy_only_what_it_tagged() -> None:
    policy = json.loads((PACKER_DIR / "iam-policy.json").read_text())
    source = (PACKER_DIR / "unified.pkr.hcl").read_text()
    # The tag the builder puts on its instance and volumes when they are created.
    for block in ("run_tags", "run_volume_tags"):
        body = re.search(rf"^  {block} = \{{\n(.*?)^  \}}", source, re.MULTILINE | re.DOTALL)
        assert body and '"unified:role" = "image-builder"' in body.group(1), block
    destructive = {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:ModifyInstanceAttribute",
                   "ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:DeleteVolume", "ec2:DetachVolume",
                   "ec2:AttachVolume", "ec2:DeleteSecurityGroup", "ec2:DeleteKeyPair",
                   "ec2:AuthorizeSecurityGroupIngress", "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute"}
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or not _actions(statement) & destructive:
            continue
        assert statement["Condition"] == {"StringEquals": {"ec2:ResourceTag/unified:role": "image-builder"}}, statement
        assert _actions(statement) <= destructive, _actions(statement) - destructive
    # ... and nobody can put that tag on an existing resource to make it deletable:
    # only tags given when a resource is created (ec2:CreateAction set) may carry it.
    (guard,) = [st for st in policy["Statement"] if st["Effect"] == "Deny"]
    assert _actions(guard) == {"ec2:CreateTags"}
    assert guard["Condition"] == {"ForAnyValue:StringEquals": {"aws:TagKeys": ["unified:role"]},
                                  "Null": {"ec2:CreateAction": "true"}}


def test_iam_policy_grants_the_kms_calls_of_encrypted_snapshots() -> None:
    policy = json.loads((PACKER_DIR / "iam-policy.json").read_text())
    kms = [st for st in policy["Statement"] if any(a.startswith("kms:") for a in _actions(st))]
    granted = {action for statement in kms for action in _actions(statement)}
    assert {"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*",
            "kms:CreateGrant"} <= granted
    for statement in kms:
        assert statement["Effect"] == "Allow"
        assert statement["Resource"].startswith("arn:aws:kms:")  # the image keys, not "*"
        # Only through EC2 (EBS), and grants only for AWS resources.
        assert statement["Condition"]["StringLike"] == {"kms:ViaService": "ec2.*.amazonaws.com"}
        if "kms:CreateGrant" in _actions(statement):
            assert statement["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}


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
    scripts = sorted(SCRIPTS.glob("*.sh")) + [PACKER_DIR / "compat-1.6.sh"]
    for script in scripts:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert "\nset -o errexit -o nounset -o pipefail\n" in text, script.name
        assert os.access(script, os.X_OK), script.name
        run(["bash", "-n", str(script)])
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: .ci/setup installs it (apt-get install shellcheck)")
    run(["shellcheck", *map(str, scripts)])


# --- provisioning scripts against stubbed apt and systemd ----------------------------

STUB = """#!/usr/bin/env bash
# Records the call ("name<TAB>arg<TAB>arg..."), then does what the test asked.
{ printf '%s' "$(basename "$0")"; printf '\\t%s' "$@"; printf '\\n'; } >>"${STUB_LOG}"
"""

# What each stub does besides recording the call. IMAGE_ROOT is the scratch root;
# STUB_DISTRO / STUB_PGDG list "package=candidate" pairs the distro and apt.postgresql.org
# have; apt.postgresql.org answers only once its sources file is in the root.
STUB_BEHAVIOUR = {
    "cloud-init": "",
    "systemd-notify": 'exit "${STUB_BOOTED:-1}"',
    "systemctl": '[ "$1" = list-unit-files ] && echo "$3 enabled"; exit 0',
    "systemd-run": "",
    "apt-cache": """pgdg="${IMAGE_ROOT}/etc/apt/sources.list.d/pgdg.sources"
candidate="(none)"
for pair in ${STUB_DISTRO:-}; do [ "${pair%%=*}" = "$2" ] && candidate="${pair#*=}"; done
if [ -f "${pgdg}" ] && [ "${candidate}" = "(none)" ]; then
  for pair in ${STUB_PGDG:-}; do [ "${pair%%=*}" = "$2" ] && candidate="${pair#*=}"; done
fi
printf '%s:\\n  Installed: (none)\\n  Candidate: %s\\n' "$2" "${candidate}"
""",
    "apt-get": """args=" $* "
if [[ "${args}" == *" update "* ]] && [ -f "${IMAGE_ROOT}/etc/apt/sources.list.d/pgdg.sources" ] \\
  && [ -n "${STUB_PGDG_DOWN:-}" ]; then
  echo "E: Failed to fetch https://apt.postgresql.org/pub/repos/apt/dists/noble-pgdg/InRelease" >&2
  exit 100
fi
if [[ "${args}" == *" install "* ]]; then
  for word in "$@"; do
    case "${word}" in postgresql-[0-9]*)
      major="${STUB_INSTALLS_MAJOR:-${word#postgresql-}}"
      mkdir -p "${IMAGE_ROOT}/usr/lib/postgresql/${major}/bin"
      printf '#!/bin/sh\\n' >"${IMAGE_ROOT}/usr/lib/postgresql/${major}/bin/postgres"
      chmod +x "${IMAGE_ROOT}/usr/lib/postgresql/${major}/bin/postgres" ;;
    esac
  done
fi
""",
}

UBUNTU_NOBLE = 'ID=ubuntu\nVERSION_CODENAME=noble\nNAME="Ubuntu"\n'
DEBIAN_BOOKWORM = 'ID=debian\nVERSION_CODENAME=bookworm\nNAME="Debian GNU/Linux"\n'


def stubbed(tmp_path: Path, os_release: str, **env: str) -> tuple[dict[str, str], Path, Path]:
    """An environment whose apt and systemd are stubs, a scratch root, and the call log."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, behaviour in STUB_BEHAVIOUR.items():
        (stubs / name).write_text(STUB + behaviour + "\n")
        (stubs / name).chmod(0o755)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(os_release)
    log = tmp_path / "calls.log"
    log.write_text("")
    return ({"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "IMAGE_ROOT": str(root),
             "UNIFIED_EXTRA_PACKAGES": "", "UNIFIED_POSTGRES_VERSION": "",
             "UNIFIED_PGDG_KEY": str(PACKER_DIR / "keys/apt.postgresql.org.asc"), **env}, root, log)


def calls(log: Path) -> list[list[str]]:
    return [line.split("\t") for line in log.read_text().splitlines()]


def assert_every_apt_get_waits_for_the_lock(recorded: list[list[str]]) -> None:
    apt_gets = [call for call in recorded if call[0] == "apt-get"]
    assert apt_gets
    for call in apt_gets:
        assert call[1:3] == ["-o", "DPkg::Lock::Timeout=300"], call


def test_packages_wait_for_cloud_init_and_the_apt_jobs_first(tmp_path: Path) -> None:
    env, _, log = stubbed(tmp_path, UBUNTU_NOBLE, STUB_BOOTED="0", UNIFIED_EXTRA_PACKAGES="libpq-dev")
    run(["bash", str(SCRIPTS / "10-packages.sh")], env=env)
    recorded = calls(log)
    names = [call[0] for call in recorded]
    first_apt = names.index("apt-get")
    assert recorded[0] == ["cloud-init", "status", "--wait"]
    # The apt timers start nothing more during the build, and the jobs already queued
    # or running finish before the first apt-get.
    stops = [call for call in recorded[:first_apt] if call[:2] == ["systemctl", "stop"]]
    assert {call[2] for call in stops} == {"apt-daily.timer", "apt-daily-upgrade.timer"}
    (wait,) = [call for call in recorded[:first_apt] if call[0] == "systemd-run"]
    assert "--wait" in wait and "--property=After=apt-daily.service apt-daily-upgrade.service" in wait
    assert_every_apt_get_waits_for_the_lock(recorded)
    (install,) = [call for call in recorded if call[0] == "apt-get" and "install" in call]
    assert "libpq-dev" in install and not any(word.startswith("postgresql") for word in install)


def test_packages_in_a_chroot_skip_the_systemd_waits_but_keep_the_lock_timeout(tmp_path: Path) -> None:
    env, _, log = stubbed(tmp_path, DEBIAN_BOOKWORM, STUB_BOOTED="1")
    run(["bash", str(SCRIPTS / "10-packages.sh")], env=env)
    recorded = calls(log)
    assert not [call for call in recorded if call[0] in ("systemctl", "systemd-run")]
    assert_every_apt_get_waits_for_the_lock(recorded)


def postgres(tmp_path: Path, os_release: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    full_env, root, log = stubbed(tmp_path, os_release, **env)
    return run(["bash", str(SCRIPTS / "15-postgres.sh")], env=full_env, check=False), root, log


def installs(log: Path) -> list[str]:
    return [word for call in calls(log) if call[0] == "apt-get" and "install" in call
            for word in call if word.startswith("postgresql")]


def test_postgres_pin_the_distro_has_comes_from_the_distro(tmp_path: Path) -> None:
    proc, root, log = postgres(tmp_path, DEBIAN_BOOKWORM, UNIFIED_POSTGRES_VERSION="15",
                               STUB_DISTRO="postgresql=15+248 postgresql-15=15.10-0+deb12u1",
                               STUB_PGDG="postgresql-15=15.12-1.pgdg120+1")
    assert proc.returncode == 0, proc.stderr
    assert installs(log) == ["postgresql-15"]
    assert "postgresql-15 15.10-0+deb12u1 from debian bookworm" in proc.stdout
    assert not (root / "etc/apt/sources.list.d/pgdg.sources").exists()
    assert_every_apt_get_waits_for_the_lock(calls(log))


def test_postgres_pin_the_distro_lacks_comes_from_apt_postgresql_org(tmp_path: Path) -> None:
    proc, root, log = postgres(tmp_path, UBUNTU_NOBLE, UNIFIED_POSTGRES_VERSION="15",
                               STUB_DISTRO="postgresql=16+257build1 postgresql-16=16.6-0ubuntu0.24.04.1",
                               STUB_PGDG="postgresql-15=15.12-1.pgdg24.04+1")
    assert proc.returncode == 0, proc.stderr
    assert "ubuntu noble has no postgresql-15 (it ships PostgreSQL 16)" in proc.stdout
    assert "postgresql-15 15.12-1.pgdg24.04+1 from apt.postgresql.org" in proc.stdout
    assert installs(log) == ["postgresql-15"]
    # Signed by the key kept in the repository, for this release's suite.
    key = root / "etc/apt/keyrings/apt.postgresql.org.asc"
    assert key.read_bytes() == (PACKER_DIR / "keys/apt.postgresql.org.asc").read_bytes()
    sources = (root / "etc/apt/sources.list.d/pgdg.sources").read_text()
    assert sources == ("Types: deb\nURIs: https://apt.postgresql.org/pub/repos/apt\nSuites: noble-pgdg\n"
                       "Components: main\nSigned-By: /etc/apt/keyrings/apt.postgresql.org.asc\n")
    recorded = calls(log)
    assert [call for call in recorded if call[0] == "apt-get" and "update" in call]  # read PGDG before installing
    assert_every_apt_get_waits_for_the_lock(recorded)


def test_postgres_pin_nobody_has_fails_the_build_saying_what_to_change(tmp_path: Path) -> None:
    proc, _, log = postgres(tmp_path, UBUNTU_NOBLE, UNIFIED_POSTGRES_VERSION="13",
                            STUB_DISTRO="postgresql=16+257build1 postgresql-16=16.6",
                            STUB_PGDG="postgresql-15=15.12 postgresql-17=17.4")
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        "15-postgres: services.yaml pins PostgreSQL 13 (databases.postgres.version), but neither ubuntu noble "
        "(PostgreSQL 16) nor apt.postgresql.org (noble-pgdg) has postgresql-13; pin a version one of them has")
    assert installs(log) == []


def test_postgres_pin_with_apt_postgresql_org_unreachable_fails_saying_what_to_change(tmp_path: Path) -> None:
    proc, _, log = postgres(tmp_path, UBUNTU_NOBLE, UNIFIED_POSTGRES_VERSION="15", STUB_PGDG_DOWN="1",
                            STUB_DISTRO="postgresql=16+257build1 postgresql-16=16.6",
                            STUB_PGDG="postgresql-15=15.12")
    assert proc.returncode == 1
    assert one_line(proc.stderr).endswith(
        "15-postgres: cannot read https://apt.postgresql.org/pub/repos/apt (apt's errors above): services.yaml "
        "pins PostgreSQL 15 (databases.postgres.version) and ubuntu noble ships 16; let the builder reach "
        "apt.postgresql.org, or pin databases.postgres.version: 16")
    assert installs(log) == []


def test_postgres_install_that_leaves_another_major_fails_the_build(tmp_path: Path) -> None:
    proc, _, _ = postgres(tmp_path, UBUNTU_NOBLE, UNIFIED_POSTGRES_VERSION="15", STUB_INSTALLS_MAJOR="16",
                          STUB_DISTRO="postgresql=16+257build1 postgresql-15=15.12")
    assert proc.returncode == 1
    assert "services.yaml pins PostgreSQL 15 (databases.postgres.version), but the image has 16 under " \
           "/usr/lib/postgresql after installing postgresql-15" in one_line(proc.stderr)


def test_postgres_without_a_pin_is_the_distro_default(tmp_path: Path) -> None:
    proc, root, log = postgres(tmp_path, UBUNTU_NOBLE, STUB_DISTRO="postgresql=16+257build1")
    assert proc.returncode == 0, proc.stderr
    assert installs(log) == ["postgresql"]
    assert not (root / "etc/apt/sources.list.d/pgdg.sources").exists()


def test_postgres_refuses_a_pgdg_key_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    forged = tmp_path / "forged.asc"
    forged.write_bytes((PACKER_DIR / "keys/apt.postgresql.org.asc").read_bytes().replace(b"mQINBE6XR8IB", b"mQINBE6XR8IC"))
    proc, root, log = postgres(tmp_path, UBUNTU_NOBLE, UNIFIED_POSTGRES_VERSION="15", UNIFIED_PGDG_KEY=str(forged),
                               STUB_DISTRO="postgresql=16+257build1", STUB_PGDG="postgresql-15=15.12")
    assert proc.returncode == 1
    assert f"{forged} is not the apt.postgresql.org key this script pins" in proc.stderr
    assert not (root / "etc/apt/sources.list.d/pgdg.sources").exists() and installs(log) == []


def test_the_pinned_pgdg_key_is_postgresql_orgs(tmp_path: Path) -> None:
    key = PACKER_DIR / "keys/apt.postgresql.org.asc"
    # The fingerprint postgresql.org publishes for its Debian repository.
    listing = run(["gpg", "--batch", "--no-default-keyring", "--show-keys", "--with-colons", str(key)],
                  env={**os.environ, "GNUPGHOME": str(tmp_path)}).stdout
    fingerprints = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    assert fingerprints[0] == "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8"
    pinned = re.search(r"^pgdg_key_sha256=([0-9a-f]{64})$", (SCRIPTS / "15-postgres.sh").read_text(), re.MULTILINE)
    assert pinned and pinned.group(1) == hashlib.sha256(key.read_bytes()).hexdigest()


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


# --- fetch on the build host, build in the image ---------------------------------------


def test_fetch_on_the_build_host_then_build_with_no_git_network(tmp_path: Path) -> None:
    missing = agent_bake_missing()
    if missing:
        pytest.skip(missing)
    agent = agent_wrapper(tmp_path)
    heads = {"api": git_repo(tmp_path / "repos/api", "api"), "web": git_repo(tmp_path / "stack/web", "web")}
    # "web" is relative: to services.yaml's folder on the build host, where it was written.
    services = write_services(tmp_path / "stack/services.yaml",
                              {"api": (tmp_path / "repos/api").as_uri(), "web": "web"})
    tarball = tmp_path / "out/repos.tar.gz"
    scratch = Path(tempfile.mkdtemp(prefix="fetch-", dir="/tmp"))  # short: the agent's root has a length limit
    try:
        run(["bash", str(SCRIPTS / "fetch-repos.sh")], cwd=tmp_path, env={
            **os.environ, "TMPDIR": str(scratch), "UNIFIED_AGENT": str(agent), "UNIFIED_SERVICES": str(services),
            "UNIFIED_BAKE_JOBS": "2", "UNIFIED_REPOS_TARBALL": str(tarball)})
        assert list(scratch.iterdir()) == []  # the staging root is gone
    finally:
        shutil.rmtree(scratch)
    listing = run(["tar", "-tzf", str(tarball)]).stdout.splitlines()
    assert "./api/.git/HEAD" in listing and "./web/README" in listing
    assert not [entry for entry in listing if "/.git/logs" in entry or "/.git/hooks" in entry]

    # The sources are gone and git may use no transport at all: the build has the tarball.
    shutil.rmtree(tmp_path / "repos")
    shutil.rmtree(tmp_path / "stack/web")
    root = tmp_path / "image"
    (root / "etc/unified").mkdir(parents=True)
    shutil.copy(services, root / "etc/unified/services.yaml")  # where relative URLs would mean /etc/unified
    run(["bash", str(SCRIPTS / "40-bake.sh")], env={
        **os.environ, "GIT_ALLOW_PROTOCOL": "none", "UNIFIED_AGENT": str(agent), "UNIFIED_ROOT": str(root),
        "UNIFIED_SERVICES": str(root / "etc/unified/services.yaml"), "UNIFIED_BAKE_JOBS": "2",
        "UNIFIED_REPOS_TARBALL": str(tarball)})
    manifest = json.loads((root / "srv/unified/manifest.json").read_text())
    assert {r["repo"]: r["sha"] for r in manifest["repos"]} == heads
    # Each URL is the one fetched from, resolved on the build host.
    assert {r["repo"]: r["url"] for r in manifest["repos"]} == {
        "api": (tmp_path / "repos/api").as_uri(), "web": str(tmp_path / "stack/web")}
    assert "steps" not in manifest  # fetched there, built here: a complete bake
    for name, sha in heads.items():
        checkout = root / "srv/unified/repos" / name
        assert run(["git", "-C", str(checkout), "rev-parse", "HEAD"]).stdout.strip() == sha
        assert (checkout / "README").stat().st_uid == 0 and not (checkout / "README").stat().st_mode & 0o022


def test_bake_steps_are_fetch_build_or_both(tmp_path: Path) -> None:
    missing = agent_bake_missing()
    if missing:
        pytest.skip(missing)
    agent = agent_wrapper(tmp_path)
    git_repo(tmp_path / "repos/api", "api")
    services = write_services(tmp_path / "services.yaml", {"api": (tmp_path / "repos/api").as_uri()})
    root = tmp_path / "root"
    base = [str(agent), "bake", "--root", str(root), "--services", str(services)]

    bad = run(base + ["--steps", "deploy"], check=False)
    assert bad.returncode == 2 and "invalid choice: 'deploy'" in bad.stderr
    unfetched = run(base + ["--steps", "build"], check=False)
    assert unfetched.returncode == 2 and "no checkout of api under" in unfetched.stderr

    fetched = run(base + ["--steps", "fetch"])
    manifest = json.loads((root / "srv/unified/manifest.json").read_text())
    assert manifest["steps"] == ["fetch"]  # not to be taken for a built image
    assert not (root / "srv/unified/repos/api/README.built").exists() and "built in" not in fetched.stdout
    built = run(base + ["--steps", "build"])
    assert "api: found, main at" in built.stdout and "api: built in" in built.stdout
    assert "steps" not in json.loads((root / "srv/unified/manifest.json").read_text())


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


@dataclass
class PrivateRepo:
    """A repository only the build host may read: over SSH, with a key, host key checked."""

    url: str
    head: str
    key: Path
    known_hosts: Path
    secrets: list[str]  # what must never reach the image: key bytes, the known_hosts entry

    def ssh_command(self, key: bool = True, known_hosts: bool = True) -> str:
        """GIT_SSH_COMMAND as on the build host: its key, its known_hosts, strict checking."""
        return " ".join([
            "ssh -F none -o IdentityAgent=none -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes",
            f"-i {self.key}" if key else "-i /dev/null",
            f"-o UserKnownHostsFile={self.known_hosts if known_hosts else '/dev/null'}"])


@pytest.fixture
def private_repo(tmp_path: Path) -> Iterator[PrivateRepo]:
    """A throwaway sshd on 127.0.0.1 serving one bare repository to one deploy key."""
    workdir = tmp_path / "git-sshd"
    workdir.mkdir()
    head = git_repo(workdir / "work", "private")
    bare = workdir / "private.git"
    run(["git", "clone", "-q", "--bare", str(workdir / "work"), str(bare)])
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host_key")])
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy-key", "-f", str(workdir / "deploy_key")])
    deploy_pub = (workdir / "deploy_key.pub").read_text().strip()
    # The key may run git-upload-pack on this repository and nothing else.
    (workdir / "authorized_keys").write_text(f'command="git-upload-pack \'{bare}\'",restrict {deploy_pub}\n')
    port = free_port()
    host_pub = (workdir / "host_key.pub").read_text().split()
    known_host = f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}"
    (workdir / "known_hosts").write_text(known_host + "\n")
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {workdir / 'host_key'}",
        f"PidFile {workdir / 'sshd.pid'}", "PermitRootLogin forced-commands-only", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}", "StrictModes no", "AllowTcpForwarding no",
        "X11Forwarding no", "LogLevel VERBOSE", ""]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    run(["/usr/sbin/sshd", "-t", "-f", str(config)])
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(workdir / "sshd.log")])
    key_body = [line for line in (workdir / "deploy_key").read_text().splitlines()
                if line and not line.startswith("-----")]
    try:
        wait_for_port(port, process, "git sshd")
        yield PrivateRepo(url=f"ssh://root@127.0.0.1:{port}/private.git", head=head, key=workdir / "deploy_key",
                          known_hosts=workdir / "known_hosts",
                          secrets=[known_host, host_pub[1], deploy_pub.split()[1], *key_body])
    finally:
        stop(process)


def test_private_repo_needs_the_key_and_the_known_hosts_entry(private_repo: PrivateRepo) -> None:
    """The fixture is a fair test: without the build host's key, or its known_hosts
    entry, git cannot read the repository (like a builder instance with neither)."""
    for command, why in ((private_repo.ssh_command(known_hosts=False), "Host key verification failed"),
                         (private_repo.ssh_command(key=False), "Permission denied")):
        proc = run(["git", "ls-remote", private_repo.url], env={**os.environ, "GIT_SSH_COMMAND": command},
                   check=False, timeout=60)
        assert proc.returncode != 0 and why in proc.stderr, (command, proc.stderr)
    read = run(["git", "ls-remote", private_repo.url],
               env={**os.environ, "GIT_SSH_COMMAND": private_repo.ssh_command()}, timeout=60)
    assert private_repo.head in read.stdout


def files_holding(root: Path, needles: list[str]) -> list[str]:
    """Every file under root (the whole image) that holds one of the needles, as bytes."""
    patterns = root.parent / f"{root.name}.needles"
    patterns.write_text("\n".join(needles) + "\n")
    try:
        found = run(["grep", "-r", "-l", "-F", "-a", "--no-messages", "-f", str(patterns), str(root)],
                    check=False, timeout=600)
    finally:
        patterns.unlink()
    assert found.returncode in (0, 1), found.stderr
    return found.stdout.splitlines()


def test_amazon_ebs_build_against_moto(tmp_path: Path, moto_ec2: str, builder_chroot: Path,
                                       chroot_sshd: tuple[int, Path], private_repo: PrivateRepo) -> None:
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

    # The repos live on the build host, as in a real bake: a public one by absolute URL,
    # one relative to services.yaml (resolved here, where it was written), and a private
    # one over SSH that only this host's key and known_hosts can read.
    heads = {"api": git_repo(tmp_path / "repos/api", "api"), "web": git_repo(tmp_path / "stack/web", "web"),
             "private": private_repo.head}
    urls = {"api": (tmp_path / "repos/api").as_uri(), "web": "web", "private": private_repo.url}
    services = write_services(tmp_path / "stack/services.yaml", urls, postgres_version=15)
    planted = plant_per_instance_state(chroot)
    units = unit_files(tmp_path)
    output = tmp_path / "out"
    templates = template_dir(tmp_path)

    build = run([PACKER, "build", "-color=false", "-only=amazon-ebs.unified",
                 "-var-file", str(templates / "test/moto.pkrvars.hcl"),
                 "-var", f"ssh_port={ssh_port}",
                 "-var", f"ssh_private_key_file={client_key}",
                 "-var", f"agent_dist={wheel}",
                 "-var", f"agent_bin={agent_wrapper(tmp_path)}",
                 "-var", f"services_file={services}",
                 "-var", f"units_dir={units}",
                 "-var", f"readme_file={REPO / 'README.md'}",
                 "-var", f"docs_dir={REPO / 'docs'}",
                 "-var", f"output_dir={output}",
                 "-var", "ami_name_prefix=unified-test",
                 str(templates)], timeout=1800, cwd=tmp_path, check=False,
                env={**os.environ, **AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_ec2,
                     "GIT_SSH_COMMAND": private_repo.ssh_command()})
    assert build.returncode == 0, f"packer build exited {build.returncode}\n{build.stdout[-12000:]}\n{build.stderr[-4000:]}"

    # The commits baked into the image are the repos' heads, fetched from where the
    # operator meant: the relative URL next to services.yaml on the build host ...
    image_manifest = json.loads((output / "image-manifest.json").read_text())
    assert {repo["repo"]: repo["sha"] for repo in image_manifest["repos"]} == heads
    assert {repo["repo"]: repo["url"] for repo in image_manifest["repos"]} == {
        **urls, "web": str(tmp_path / "stack/web")}
    assert json.loads((chroot / "srv/unified/manifest.json").read_text()) == image_manifest
    for name, sha in heads.items():
        checkout = chroot / "srv/unified/repos" / name
        assert run(["git", "-C", str(checkout), "rev-parse", "HEAD"]).stdout.strip() == sha

    # ... and neither the deploy key nor the build host's known_hosts entry for the git
    # server is anywhere in the image.
    assert files_holding(chroot, private_repo.secrets) == []
    assert not list(chroot.glob("root/.ssh/known_hosts*")) and not list(chroot.glob("home/*/.ssh/known_hosts*"))

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

    # The AMI is the encrypted copy (encrypt_boot, on by default; moto does not model
    # snapshot encryption, so Packer's own account of it is what there is to read), and
    # the unencrypted image it was copied from is gone.
    assert "Copying/Encrypting AMI" in build.stdout
    assert "Deregistering the AMI and deleting unencrypted temporary AMIs and snapshots" in build.stdout
    ours_and_temporary = [i["Name"] for i in ec2.describe_images(Owners=["self"])["Images"]
                          if not i["Name"].startswith("unified-ours") and not i["Name"].startswith("unified-earlier")]
    assert ours_and_temporary == [image["Name"]]

    # The builder instance is gone.
    builders = ec2.describe_instances(Filters=[{"Name": "tag:unified:role", "Values": ["image-builder"]}])
    instances = [i for r in builders["Reservations"] for i in r["Instances"]]
    assert instances and {i["State"]["Name"] for i in instances} == {"terminated"}

    # What the provisioners left in the "instance".
    assert os.access(chroot / "opt/unified/venv/bin/agent", os.X_OK)
    assert (chroot / "etc/unified/services.yaml").read_text() == services.read_text()
    passwd = dict(line.split(":", 1) for line in (chroot / "etc/passwd").read_text().splitlines())
    assert passwd["unified"].endswith(":/usr/sbin/nologin")
    # PostgreSQL at the pinned major, from Debian (bookworm has 15: no PGDG needed).
    assert os.access(chroot / "usr/lib/postgresql/15/bin/postgres", os.X_OK)
    assert not (chroot / "etc/apt/sources.list.d/pgdg.sources").exists()
    for unit in sorted((units / "systemd").glob("*.service")):
        enabled = run(["systemctl", f"--root={chroot}", "is-enabled", unit.name], check=False)
        assert enabled.stdout.strip() == "enabled", unit.name
        for line in unit.read_text().splitlines():
            if line.startswith("Documentation=file:///"):
                assert (chroot / line.removeprefix("Documentation=file:///")).is_file(), line
    assert (chroot / "usr/share/doc/unified/README.md").read_bytes() == (REPO / "README.md").read_bytes()
    for distro_service in ("postgresql.service", "redis-server.service"):
        enabled = run(["systemctl", f"--root={chroot}", "is-enabled", distro_service], check=False)
        assert enabled.stdout.strip() == "disabled", distro_service
    for rel in planted:
        if rel == "etc/machine-id":
            assert (chroot / rel).read_text() == ""
        else:
            assert not (chroot / rel).exists() and not (chroot / rel).is_symlink(), rel
    assert not (chroot / "tmp/unified-upload").exists()
