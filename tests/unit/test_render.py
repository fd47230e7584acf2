"""Rendered units are data: parse them like supervisord does and check keys."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from agent.local import render
from agent.local.layout import Layout
from agent.local.readiness import Readiness
from agent.plan import Program

LAYOUT = Layout(Path("/box"))


def program(**changes: object) -> Program:
    base = dict(name="api-web", kind="service", directory="/box/srv/unified/repos/api", user="unified",
                needs=(), readiness=Readiness("http", 8000, "/health"), command="python -m api --port $PORT",
                environment={"PORT": "8000"}, secret_keys=(), release="python -m api.migrate", port=8000)
    base.update(changes)
    return Program(**base)  # type: ignore[arg-type]


def parse(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser


def test_supervisord_conf_socket_is_private_and_includes_programs() -> None:
    spec = render.supervisord_conf(LAYOUT, run_as_root=True)
    ini = parse(spec.content)
    assert ini["unix_http_server"]["file"] == "/box/run/unified/supervisor.sock"
    assert ini["unix_http_server"]["chmod"] == "0700"
    assert ini["supervisord"]["pidfile"] == "/box/run/unified/supervisord.pid"
    assert ini["supervisord"]["nodaemon"] == "false" and ini["supervisord"]["user"] == "root"
    assert ini["include"]["files"] == "/box/etc/unified/supervisor.d/*.conf"
    assert ini["supervisorctl"]["serverurl"] == "unix:///box/run/unified/supervisor.sock"
    assert "user" not in parse(render.supervisord_conf(LAYOUT, run_as_root=False).content)["supervisord"]


def test_service_program_section() -> None:
    files = {f.path.name: f for f in render.program_files(LAYOUT, program())}
    assert set(files) == {"api-web.conf", "api-web.env", "api-web.release.env"}
    section = parse(files["api-web.conf"].content)["program:api-web"]
    assert section["directory"] == "/box/srv/unified/repos/api"
    assert section["user"] == "unified"
    assert section["autostart"] == "false" and section["autorestart"] == "true"
    assert section["stopasgroup"] == "true" and section["killasgroup"] == "true"
    assert section["stdout_logfile"] == "/box/var/log/unified/api-web.log"
    argv = shlex.split(section["command"])
    assert argv[:2] == ["/bin/sh", "-c"] and argv[-1] == "/box/etc/unified/programs/api-web.env"
    assert files["api-web.conf"].mode == 0o644


def test_environment_never_lands_in_the_supervisord_config() -> None:
    files = render.program_files(LAYOUT, program(environment={"SECRET": "hunter2", "PORT": "8000"}))
    conf = next(f for f in files if f.path.suffix == ".conf")
    env = next(f for f in files if f.path.name == "api-web.env")
    assert "hunter2" not in conf.content
    assert "hunter2" in env.content
    assert env.mode == 0o600 and env.owner == "unified"
    assert "hunter2" not in repr(env)  # FileSpec never shows its content


def test_environment_file_quotes_every_value() -> None:
    weird = {"A": "it's \"quoted\", 100% $HOME `x`", "B": "two\nlines", "C": "naïve ☃", "D": ""}
    env = render.environment_file(Path("/x.env"), program(environment=weird), "run $PORT")
    for key, value in weird.items():
        assert f"export {key}={shlex.quote(value)}" in env.content
    assert "UNIFIED_COMMAND='run $PORT'" in env.content


def test_percent_is_escaped_for_supervisord() -> None:
    db = program(name="postgres", kind="database", command=None, release=None,
                 argv=("/usr/bin/postgres", "-c", "log_line_prefix=%m"), user="postgres")
    conf = render.program_files(LAYOUT, db)[0]
    assert "%%m" in conf.content
    # supervisord expands %(name)s-style values; configparser's interpolation does the same
    expanded = configparser.ConfigParser()
    expanded.read_string(conf.content)
    assert "log_line_prefix=%m" in expanded["program:postgres"]["command"]


def test_database_program_has_no_environment_file() -> None:
    db = program(name="redis", kind="database", command=None, release=None, argv=("/usr/bin/redis-server", "/c"))
    assert [f.path.name for f in render.program_files(LAYOUT, db)] == ["redis.conf"]


def test_newline_in_a_supervisord_value_is_refused() -> None:
    with pytest.raises(ValueError):
        render.supervisor_value("a\nb")


def test_redis_conf_is_private() -> None:
    from agent.config.catalog import Database
    from agent.facts import Facts
    from agent.local.databases import redis
    facts = Facts(users={"redis": "redis"}, secrets={"redis": "pw"})
    spec, = redis.files(Database("redis", 6390), LAYOUT, facts)
    assert spec.mode == 0o600 and spec.owner == "redis"
    assert "port 6390" in spec.content and "requirepass pw" in spec.content and "bind 127.0.0.1" in spec.content
    assert 'pidfile "/box/run/unified/redis/redis.pid"' in spec.content  # where orphans are looked for
