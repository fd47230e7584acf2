"""PostgreSQL for a review box: the server as a supervisord program, initdb on first
boot, the application role and its databases once it answers.

It runs as the `postgres` user when the agent is root (initdb refuses root). Peer
authentication on its private socket lets the agent administer it without a superuser
password, while services log in over TCP 127.0.0.1 with a generated password
(scram-sha-256). Settings read from services.yaml: `version` (the major version the
image must have), `databases` (created, owned by the role `app`), `port`.

The cluster is made by a step that is complete or redone, never half done: initdb
writes into a scratch directory of its own beside the data directory
(`Layout.database_scratch`, a new one per attempt), and only a cluster initdb finished
is renamed into place (then the rename is made durable). So the data directory exists
only once it is whole; a boot killed during initdb leaves a scratch directory that the
next boot deletes before it initialises again. A data directory that holds anything is
never deleted (an empty one, made by an older agent that died before initdb wrote into
it, is removed and initialised anew). One left incomplete by an older agent (initdb in place, killed: PG_VERSION but no
global/pg_control) is refused with what to do, not started to fail as FATAL.
"""

from __future__ import annotations

import base64
import binascii
import glob
import hashlib
import hmac
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from agent.errors import AgentError, BadInput
from agent.local import fs
from agent.local.layout import Layout
from agent.local.readiness import Readiness
from agent.local.users import run_as

if TYPE_CHECKING:
    from agent.config.catalog import Database, Service
    from agent.facts import Facts
    from agent.plan import Program

OS_USER = "postgres"
URL_VARIABLE = "DATABASE_URL"
ROLE = "app"
DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin/postgres"
RUNTIME = "pg"   # run/unified/pg: the socket, whose path must fit a unix socket address


def find_tools(db: Database) -> Mapping[str, str]:
    """The server's bin directory: Debian's versioned one for the pinned major version,
    else the newest installed. A pinned version that is not installed is refused, not
    replaced by another: data directories are not portable across major versions."""
    installed = {Path(p).parts[-3]: str(Path(p).parent) for p in glob.glob(DEBIAN_BINARIES)}
    version = db.settings.get("version")
    if version is not None:
        if str(version) in installed:
            return {"bin": installed[str(version)]}
        have = ", ".join(sorted(installed, key=_major)) or "none"
        raise BadInput(f"databases.postgres.version: PostgreSQL {version} is not installed on this machine "
                       f"(installed: {have}); install postgresql-{version} or change the version")
    if not installed:
        raise BadInput(f"databases.postgres: PostgreSQL is not installed ({DEBIAN_BINARIES} not found); "
                       "install the postgresql package")
    return {"bin": installed[max(installed, key=_major)]}


def _major(name: str) -> int:
    return int(name) if name.isdigit() else 0


def _bin(facts: Facts) -> str:
    return facts.tools["postgres"]["bin"]


def socket_dir(layout: Layout) -> Path:
    return layout.runtime_dir(RUNTIME)


def program(db: Database, layout: Layout, facts: Facts) -> Program:
    from agent.plan import Program
    data, sock = layout.database_dir("postgres"), socket_dir(layout)
    return Program(
        name="postgres", kind="database", database="postgres", directory=str(data),
        user=facts.users.get("postgres"), needs=(), port=db.port,
        readiness=Readiness("exec", db.port, timeout=60.0,
                            argv=(f"{_bin(facts)}/pg_isready", "-q", "-h", str(sock), "-p", str(db.port), "-t", "1")),
        argv=(f"{_bin(facts)}/postgres", "-D", str(data), "-p", str(db.port), "-k", str(sock),
              "-c", "listen_addresses=127.0.0.1", "-c", f"external_pid_file={layout.pidfile('postgres', RUNTIME)}"),
        stop_signal="INT", stop_seconds=60,  # SIGINT is PostgreSQL's "fast" shutdown
    )


def files(db: Database, layout: Layout, facts: Facts) -> list[fs.FileSpec]:
    return []  # initdb writes the cluster's own configuration


def databases(db: Database) -> tuple[str, ...]:
    return tuple(db.settings.get("databases") or ("app",))


def url(db: Database, service: Service, facts: Facts) -> str:
    """The database named like the service's repo if declared, else the first one."""
    names = databases(db)
    name = service.repo if service.repo in names else names[0]
    return f"postgresql://{ROLE}:{facts.secret('postgres')}@127.0.0.1:{db.port}/{name}"


def initialised(layout: Layout) -> bool:
    """The data directory is in place (only a finished cluster is: see the module docstring)."""
    data = layout.database_dir("postgres")
    if not data.exists():
        return False
    if not any(data.iterdir()):  # made by an older agent that died before initdb wrote anything
        data.rmdir()
        return False
    if not (data / "PG_VERSION").exists() or not (data / "global/pg_control").exists():
        raise AgentError(f"{data}: an incomplete PostgreSQL data directory (no PG_VERSION or global/pg_control: "
                         "an initialisation that was interrupted); if it holds nothing you need, remove it and "
                         "boot again to initialise a new one")
    return True


def init(db: Database, layout: Layout, facts: Facts) -> bool:
    """The socket directory, and the cluster on first boot (complete or redone)."""
    user = facts.users.get("postgres")
    fs.ensure_dir(socket_dir(layout), 0o755, user)
    if initialised(layout):
        return False
    data = layout.database_dir("postgres")
    scratch = layout.database_scratch("postgres")
    for unfinished in scratch.parent.glob(f"{scratch.name}*"):
        shutil.rmtree(unfinished)  # an earlier boot died during initdb
    fs.ensure_dir(scratch.parent, 0o755)
    work = Path(tempfile.mkdtemp(prefix=scratch.name, dir=scratch.parent))
    try:
        fs.ensure_dir(work, 0o700, user)
        result = subprocess.run(
            [f"{_bin(facts)}/initdb", "-D", str(work), "--auth-local=peer",
             "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
            cwd="/", capture_output=True, text=True, check=False, **run_as(user),  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise AgentError(f"initdb failed for {data}: {result.stderr.strip()[-500:]}")
        os.rename(work, data)  # initdb has synced the cluster; the rename is what makes it whole
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _sync_dir(data.parent)
    return True


def _sync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a crash after it must not undo it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def after_ready(db: Database, layout: Layout, facts: Facts) -> None:
    """Create the `app` role (with its password) and every declared database, unless they
    exist, and make the role's password the one services are given: a secrets file
    lost (and so made anew) must not leave a box whose services cannot log in. The
    password is changed only when it does not match, so a second boot changes nothing
    (an ALTER at every boot would store a new salt).

    SQL goes over stdin, never argv, so the password is not visible in `ps`.
    """
    password, names = facts.secret("postgres"), databases(db)
    db_lines = "\n".join(
        f"SELECT 'CREATE DATABASE {name} OWNER {ROLE}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{name}')\\gexec" for name in names)
    verifier = _psql(db, layout, facts, f"""
SELECT format('CREATE ROLE {ROLE} LOGIN PASSWORD %L', '{password}') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')\\gexec
{db_lines}
SELECT rolpassword FROM pg_authid WHERE rolname = '{ROLE}';
""", f"creating databases {', '.join(names)}")
    if not scram_matches(verifier.strip(), password):
        _psql(db, layout, facts, f"ALTER ROLE {ROLE} PASSWORD '{password}';\n", f"setting the password of {ROLE}")


def _psql(db: Database, layout: Layout, facts: Facts, sql: str, what: str) -> str:
    """Run `sql` as the superuser over the private socket (peer authentication); its
    output, unaligned."""
    user = facts.users.get("postgres")
    superuser = user or pwd.getpwuid(os.geteuid()).pw_name
    result = subprocess.run(
        [f"{_bin(facts)}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir(layout)),
         "-p", str(db.port), "-U", superuser, "-d", "postgres"],
        input=sql, cwd="/", capture_output=True, text=True, check=False, **run_as(user),  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        detail = result.stderr.strip()[-500:].replace(facts.secret("postgres"), "***")  # psql echoes statements
        raise AgentError(f"{what} failed: {detail}")
    return result.stdout


def scram_matches(verifier: str, password: str) -> bool:
    """Does `password` match a PostgreSQL SCRAM-SHA-256 verifier
    (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802/7677)?"""
    try:
        method, counts, keys = verifier.split("$")
        iterations, salt = counts.split(":")
        stored_key = keys.split(":")[0]
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except (ValueError, binascii.Error):
        return False
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    expected = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    return method == "SCRAM-SHA-256" and hmac.compare_digest(expected, stored_key)
