"""Where every file lives under the agent root.

Every path is derived from one root (`--root`, default `/`) so that several agents run
side by side on one machine; nothing else in the package joins path strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The file layout of one agent root (FHS-like, so the image looks familiar)."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc/unified"

    @property
    def default_services(self) -> Path:
        return self.etc / "services.yaml"

    @property
    def supervisord_conf(self) -> Path:
        return self.etc / "supervisord.conf"

    @property
    def include_dir(self) -> Path:
        """supervisord `[program:x]` sections, one file each (supervisord.conf includes them)."""
        return self.etc / "supervisor.d"

    @property
    def env_dir(self) -> Path:
        """Environment files sourced before each command (may hold secrets): mode 0600."""
        return self.etc / "programs"

    @property
    def run(self) -> Path:
        return self.root / "run/unified"

    @property
    def socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def supervisord_pid(self) -> Path:
        return self.run / "supervisord.pid"

    @property
    def lock(self) -> Path:
        return self.run / "agent.lock"

    @property
    def pg_socket_dir(self) -> Path:
        return self.run / "pg"

    @property
    def logs(self) -> Path:
        return self.root / "var/log/unified"

    @property
    def state_dir(self) -> Path:
        return self.root / "var/lib/unified"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def secrets_dir(self) -> Path:
        """Generated credentials (local database passwords); mode 0700."""
        return self.state_dir / "secrets"

    @property
    def pg_data(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def redis_data(self) -> Path:
        return self.state_dir / "redis"

    @property
    def redis_pid(self) -> Path:
        return self.redis_data / "redis.pid"

    @property
    def pidfiles(self) -> tuple[tuple[Path, str], ...]:
        """Pid files of supervised programs, with the process name each pid must have:
        how orphans are found when a program hides the environment supervisord gave it."""
        return ((self.redis_pid, "redis-server"), (self.pg_data / "postmaster.pid", "postgres"))

    @property
    def srv(self) -> Path:
        return self.root / "srv/unified"

    @property
    def repos(self) -> Path:
        return self.srv / "repos"

    @property
    def manifest(self) -> Path:
        return self.srv / "manifest.json"

    def repo_dir(self, repo: str) -> Path:
        return self.repos / repo

    def program_conf(self, program: str) -> Path:
        return self.include_dir / f"{program}.conf"

    def program_env(self, program: str) -> Path:
        return self.env_dir / f"{program}.env"

    def program_log(self, program: str) -> Path:
        return self.logs / f"{program}.log"
