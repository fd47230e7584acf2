"""The systemd units in units/systemd: verified by systemd itself, and wired to the
agent where the image installs it (packer/scripts/30-agent.sh)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "units/systemd"
AGENT_IN_IMAGE = "/opt/unified/venv/bin/agent"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


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
    service = unit("unified-agent.service")["Service"]
    assert service["ExecStart"] == f"{AGENT_IN_IMAGE} boot"
    assert service["Type"] == "oneshot" and service["RemainAfterExit"] == "yes"
    assert service["KillMode"] == "process"  # supervisord outlives the oneshot
    assert unit("unified-agent.service")["Install"]["WantedBy"] == "multi-user.target"


def test_watch_unit_follows_boot() -> None:
    parsed = unit("unified-watch.service")
    assert parsed["Service"]["ExecStart"] == f"{AGENT_IN_IMAGE} watch"
    assert "unified-agent.service" in parsed["Unit"]["After"]
    assert parsed["Service"]["Restart"] == "always"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
