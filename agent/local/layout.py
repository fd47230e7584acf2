"""Where every file lives under the agent root.

Every path is derived from one root (`--root`, default `/`) so that several agents run
side by side on one machine. Most paths are named here; a few are joined where they
are used, from a directory named here: a repo's bake log (`logs/bake/<repo>.log`,
`agent.bake`), Redis's configuration (`etc/unified/redis.conf`,
`agent.local.databases.redis`), supervisord's own log (`logs/supervisord.log`, in its
template), a corrupt state set aside beside the state file (`agent.local.state`), a
checkout's `.git`, and what a program's own configuration names inside its directories
(PostgreSQL's files in its data directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The file layout of one agent root (FHS-like, so the image looks familiar)."""

    root: Path

    # A unix socket address holds 107 bytes (108 with its NUL); the longest socket under
    # run/ is PostgreSQL's pg/.s.PGSQL.NNNNN (18 bytes with the slash before it), so 82
    # leaves room to spare.
    RUN_PATH_LIMIT = 82

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

    def runtime_dir(self, program: str) -> Path:
        """A program's sockets and pid file, owned by the user it runs as."""
        return self.run / program

    def pidfile(self, program: str, runtime: str | None = None) -> Path:
        """Where a program that hides the environment supervisord gave it (a database
        server renaming its process) writes its pid, so a dead supervisord's orphans are
        still found: in its runtime directory (`runtime`, default named like it)."""
        return self.runtime_dir(runtime or program) / f"{program}.pid"

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
    def releases_dir(self) -> Path:
        """One file per service: the release key last run to completion."""
        return self.state_dir / "releases"

    def release_record(self, program: str) -> Path:
        return self.releases_dir / program

    @property
    def releases_run_dir(self) -> Path:
        """Pid files of the releases running now (agent.local.release)."""
        return self.runtime_dir("releases")

    def release_pidfile(self, program: str) -> Path:
        """Who a running release of `program` is, so that a stop or the next boot ends it
        even after the agent that started it died."""
        return self.releases_run_dir / f"{program}.pid"

    @property
    def secrets_dir(self) -> Path:
        """Generated credentials (local database passwords); mode 0700."""
        return self.state_dir / "secrets"

    def database_dir(self, kind: str) -> Path:
        """A local database's data (review mode)."""
        return self.state_dir / kind

    def database_scratch(self, kind: str) -> Path:
        """The name prefix (a unique suffix per attempt) of where a local database's
        data directory is made before it is renamed into place: never a finished one."""
        return self.state_dir / f".{kind}.init-"

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

    def release_env(self, program: str) -> Path:
        return self.env_dir / f"{program}.release.env"

    def program_log(self, program: str) -> Path:
        return self.logs / f"{program}.log"

    def release_log(self, program: str) -> Path:
        return self.logs / f"{program}.release.log"
