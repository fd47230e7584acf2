"""Render units/ templates into files-as-data (`FileSpec`); `agent.local.fs` writes them.

Templates use StrictUndefined so a missing value is an error at render time, not an
empty string in a config file. Nothing here touches the disk except reading templates.
"""

from __future__ import annotations

import hashlib
import hmac
import shlex
from functools import lru_cache
from pathlib import Path

import jinja2

from typing import TYPE_CHECKING

from agent.local.fs import FileSpec
from agent.local.layout import Layout

if TYPE_CHECKING:
    from agent.plan import Plan, Program

# How supervisord starts a service: sh sources the 0600 environment file, then runs the
# Procfile-style command. The command text travels inside the file, so supervisord's
# config (world-readable, %-expanded, comma-split) never holds a value. bash, not sh,
# runs the command: bash execs a simple command in place (dash forks it), so the pid
# supervisord signals and waits for is the service itself, as on Heroku.
LAUNCH = '. "$0" && exec /bin/bash -c "$UNIFIED_COMMAND"'


def units_dir() -> Path:
    """Templates ship in the package as `agent.units`; in a source tree they sit in units/."""
    package = Path(__file__).resolve().parents[1]  # agent/
    for candidate in (package / "units", package.parent / "units"):
        if (candidate / "supervisord.conf.j2").is_file():
            return candidate
    raise FileNotFoundError("units/ templates not found beside the agent package")


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(units_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["sv"] = supervisor_value
    env.filters["shquote"] = shlex.quote
    return env


def supervisor_value(value: object) -> str:
    """supervisord %-expands config values; a literal % must be doubled. Newlines would
    end the INI value, so they are refused (paths and names never contain them)."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"a newline cannot appear in a supervisord value: {text!r}")
    return text.replace("%", "%%")


def template(name: str, /, **context: object) -> str:
    """Render the template `name` from units/."""
    return _env().get_template(name).render(**context)


def launch_argv(spec_path: Path) -> tuple[str, ...]:
    return ("/bin/sh", "-c", LAUNCH, str(spec_path))


def supervisord_conf(layout: Layout, run_as_root: bool) -> FileSpec:
    content = template(
        "supervisord.conf.j2", socket=layout.socket, logs=layout.logs, pidfile=layout.supervisord_pid,
        include_dir=layout.include_dir, run_as_root=run_as_root,
    )
    return FileSpec(layout.supervisord_conf, content, 0o644)


def program_files(layout: Layout, program: Program, digest_key: bytes = b"",
                  reads: tuple[FileSpec, ...] = ()) -> list[FileSpec]:
    """The [program:x] section, and for services the 0600 environment file(s).

    The section carries a keyed digest of the files the program reads (a service's
    environment file; a database server's configuration, `reads`): supervisord compares
    sections, not the files they point to, so without it a changed config var or
    password would only reach the process at its next crash. Keyed (HMAC with a per-box
    secret) so the world-readable section says nothing about the secrets in the files.
    """
    files = []
    watched = list(reads)
    if program.kind == "service":
        spec = layout.program_env(program.name)
        env_file = environment_file(spec, program, program.command or "")
        watched.append(env_file)
        files.append(env_file)
        if program.release:
            files.append(environment_file(layout.release_env(program.name), program, program.release))
        argv = launch_argv(spec)
    else:
        argv = program.argv
    env_digest = ""
    if watched:
        content = b"\0".join(f.content.encode() for f in watched)
        env_digest = hmac.new(digest_key, content, hashlib.sha256).hexdigest()[:16]
    command = " ".join(shlex.quote(arg) for arg in argv)
    conf = template("program.conf.j2", program=program, command=command, log=layout.program_log(program.name),
                   env_digest=env_digest)
    files.append(FileSpec(layout.program_conf(program.name), conf, 0o644))
    return files


def environment_file(path: Path, program: Program, command: str) -> FileSpec:
    content = template("program.env.j2", name=program.name, environment=program.environment, command=command)
    return FileSpec(path, content, 0o600, owner=program.user)


def plan_files(layout: Layout, plan: Plan, digest_key: bytes = b"",
               reads: dict[str, tuple[FileSpec, ...]] | None = None) -> list[FileSpec]:
    """Every program file of the plan; `reads`: program name -> the files (already
    rendered, written by the caller) it reads, which its section's digest covers."""
    files: list[FileSpec] = []
    for program in plan.programs:
        files.extend(program_files(layout, program, digest_key, (reads or {}).get(program.name, ())))
    return files
