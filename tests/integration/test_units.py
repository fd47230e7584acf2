"""The systemd units in units/systemd: verified by systemd itself, wired to the agent
where the image installs it (packer/scripts/30-agent.sh), ordered so that the boot holds
up nothing and the watch sees everything, and documented where the image has the docs
(packer/scripts/55-docs.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "units/systemd"
AGENT_IN_IMAGE = "/opt/unified/venv/bin/agent"
AGENT = "unified-agent.service"
WATCH = "unified-watch.service"
RESUME = "unified-resume.service"

# How long `agent stop` (lock wait, drain, services, supervisord) may take when systemd
# stops the agent unit; the agent caps its drain to fit. Set in unified-agent.service.
TIMEOUT_STOP_SEC = 600

CLOUD_INIT_NETWORK = {"cloud-init.service", "cloud-init-network.service"}  # before and after cloud-init 24.3
SLEEP_TARGETS = {"hibernate.target", "hybrid-sleep.target", "suspend-then-hibernate.target"}
# Targets of the boot and the user-data run that must not wait for the agent's boot.
BOOT_TARGETS = {"multi-user.target", "default.target", "graphical.target", "cloud-final.service",
                "cloud-config.service", "cloud-init.target"}


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each key's values from every
    line that sets it, list-valued keys split on white space."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def values(name: str, section: str, key: str) -> list[str]:
    """Every value of a list-valued key (After=, Wants=, WantedBy=, ...)."""
    return [word for line in unit(name).get(section, {}).get(key, []) for word in line.split()]


def single(name: str, section: str, key: str) -> str:
    (value,) = unit(name)[section][key]
    return value


def waits_for(target: str, name: str) -> bool:
    """Whether systemd orders `target` after unit `name`, so that reaching the target
    waits until the unit has started (for a oneshot: until its ExecStart exited).

    Either the unit says Before=target, or the target pulls the unit in (the unit's
    WantedBy=/RequiredBy=) and the unit keeps its default dependencies: "Target units
    will automatically complement all configured dependencies of type Wants= or
    Requires= with dependencies of type After= unless DefaultDependencies=no is set in
    the specified units" (systemd.target(5))."""
    if target in values(name, "Unit", "Before"):
        return True
    pulled_in = target in values(name, "Install", "WantedBy") + values(name, "Install", "RequiredBy")
    defaults = unit(name)["Unit"].get("DefaultDependencies", ["yes"])[-1] not in ("no", "false", "0")
    return pulled_in and defaults


def test_units_are_the_three() -> None:
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted([AGENT, WATCH, RESUME])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is installed by .ci/setup")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify also checks that ExecStart exists: point it at a real executable here,
    # the image's path is checked below
    for source in UNITS.glob("*.service"):
        (tmp_path / source.name).write_text(source.read_text().replace(AGENT_IN_IMAGE, "/bin/true"))
    result = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(tmp_path.glob("*.service")))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "unified" not in result.stderr, result.stderr


def test_boot_unit_runs_agent_boot_once_and_keeps_supervisord() -> None:
    service = unit(AGENT)["Service"]
    assert service["ExecStart"] == [f"{AGENT_IN_IMAGE} boot"]
    assert service["Type"] == ["oneshot"] and service["RemainAfterExit"] == ["yes"]
    assert service["KillMode"] == ["process"]  # supervisord outlives the oneshot
    assert service["TimeoutStartSec"] == ["900"]
    assert values(AGENT, "Install", "WantedBy") == ["multi-user.target"]


def test_boot_holds_up_neither_multi_user_nor_user_data() -> None:
    # multi-user.target pulls the boot in, but waits for none of it; cloud-final (which
    # runs user-data) is ordered after multi-user.target, so it does not wait either.
    for target in sorted(BOOT_TARGETS):
        assert not waits_for(target, AGENT), target
    assert values(AGENT, "Install", "RequiredBy") == []
    assert single(AGENT, "Unit", "DefaultDependencies") == "no"
    # What DefaultDependencies=no drops, spelled out: after early boot, stopped before
    # shutdown (so ExecStop drains while the network is still up).
    assert "sysinit.target" in values(AGENT, "Unit", "Requires")
    assert {"sysinit.target", "basic.target"} <= set(values(AGENT, "Unit", "After"))
    assert "shutdown.target" in values(AGENT, "Unit", "Conflicts")
    assert "shutdown.target" in values(AGENT, "Unit", "Before")


def test_watch_runs_from_the_start_of_the_boot_whatever_becomes_of_it() -> None:
    watch = unit(WATCH)
    assert watch["Service"]["ExecStart"] == [f"{AGENT_IN_IMAGE} watch"]
    assert watch["Service"]["Type"] == ["simple"] and watch["Service"]["Restart"] == ["always"]
    assert values(WATCH, "Install", "WantedBy") == ["multi-user.target"]
    # Neither ordered after the boot (which can take 900 s) nor bound to it (a failed
    # boot would stop the watch, or keep it from starting).
    for key in ("After", "Requires", "Requisite", "BindsTo", "PartOf", "Wants", "Upholds"):
        assert AGENT not in values(WATCH, "Unit", key), key
    # ... and the boot does not hold the watch back from its side either.
    for key in ("Before", "Conflicts"):
        assert WATCH not in values(AGENT, "Unit", key), key


@pytest.mark.parametrize("name", [AGENT, WATCH])
def test_units_wait_for_the_network_and_cloud_init_by_either_name(name: str) -> None:
    assert {"network-online.target", *CLOUD_INIT_NETWORK} <= set(values(name, "Unit", "After"))
    assert "network-online.target" in values(name, "Unit", "Wants")


def test_resume_from_hibernation_boots_again() -> None:
    assert set(values(RESUME, "Install", "WantedBy")) == SLEEP_TARGETS
    assert SLEEP_TARGETS <= set(values(RESUME, "Unit", "After"))  # runs once the system is back
    assert single(RESUME, "Service", "ExecStart") == f"/usr/bin/systemctl --no-block reload-or-restart {AGENT}"
    # reload = agent boot again (idempotent); a failed or stopped unit is started instead.
    assert unit(AGENT)["Service"]["ExecReload"] == [f"{AGENT_IN_IMAGE} boot"]


def test_stop_budget_is_set_once() -> None:
    found = [(path.name, line) for path in UNITS.glob("*.service")
             for line in path.read_text().splitlines() if line.startswith("TimeoutStopSec=")]
    assert found == [(AGENT, f"TimeoutStopSec={TIMEOUT_STOP_SEC}")]
    stop = single(AGENT, "Service", "ExecStop").split()
    assert stop[:2] == [AGENT_IN_IMAGE, "stop"]
    lock_wait = float(stop[stop.index("--wait") + 1])
    assert lock_wait < TIMEOUT_STOP_SEC  # waiting for the lock leaves room to drain and stop
    # the agent is told the same budget, and cuts its drain to fit it (agent.ops.drain_cap)
    assert float(stop[stop.index("--budget") + 1]) == TIMEOUT_STOP_SEC


def test_documentation_points_at_docs_the_image_installs(tmp_path: Path) -> None:
    # The upload as the image build makes it: README.md and docs/ under one directory.
    upload = tmp_path / "upload"
    upload.mkdir()
    shutil.copy(REPO / "README.md", upload / "README.md")
    shutil.copytree(REPO / "docs", upload / "docs")
    root = tmp_path / "image"
    result = subprocess.run(["bash", str(REPO / "packer/scripts/55-docs.sh")], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "IMAGE_ROOT": str(root), "UNIFIED_DOCS_SRC": str(upload)})
    assert result.returncode == 0, result.stderr
    for path in sorted(UNITS.glob("*.service")):
        docs = values(path.name, "Unit", "Documentation")
        assert docs, path.name
        for uri in docs:
            assert uri.startswith("file:///usr/share/doc/unified/"), uri
            installed = root / uri.removeprefix("file:///")
            assert installed.is_file(), f"{path.name}: {uri} is not installed by 55-docs.sh"
    assert (root / "usr/share/doc/unified/README.md").read_bytes() == (REPO / "README.md").read_bytes()
    assert (root / "usr/share/doc/unified/docs/reliability.md").is_file()
