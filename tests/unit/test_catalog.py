"""`agent validate` and the catalog: every bad file gets FILE:LINE errors, exit 2, no traceback.

The bad files are in tests/bad/, one mistake each; tests/bad/expected.txt says what the
agent must print for each (line, key path, a fragment of the message).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import cli
from agent.config import catalog
from agent.config.catalog import Health, LoadBalancer

REPO = Path(__file__).resolve().parents[2]
BAD = REPO / "tests" / "bad"


# --- the bad corpus -------------------------------------------------------------------

@dataclass(frozen=True)
class Expected:
    line: str  # a number, or "*"
    key_path: str  # or "*"
    fragment: str  # ends with "$" when it must end the message

    def matches(self, line: int, key_path: str, message: str) -> bool:
        if self.line != "*" and int(self.line) != line:
            return False
        if self.key_path != "*" and self.key_path != key_path:
            return False
        if self.fragment.endswith("$"):
            return message.endswith(self.fragment[:-1])
        return self.fragment in message

    def __str__(self) -> str:
        return f"line {self.line}, {self.key_path}: ...{self.fragment}..."


def _expectations() -> dict[str, list[Expected]]:
    table: dict[str, list[Expected]] = {}
    for row in (BAD / "expected.txt").read_text(encoding="utf-8").splitlines():
        if not row.strip() or row.startswith("#"):
            continue
        name, line, key_path, fragment = (part.strip() for part in row.split("|", 3))
        table.setdefault(name, []).append(Expected(line, key_path, fragment))
    return table


EXPECTED = _expectations()
CORPUS = sorted(p.name for p in BAD.glob("*.yaml"))


def run_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI in-process; an exception escaping it is what a user would see as a traceback."""
    try:
        code = cli.main(["validate", "--services", str(path)])
    except Exception as exc:  # noqa: BLE001 - that is the failure being tested for
        where = traceback.extract_tb(exc.__traceback__)[-1]
        pytest.fail(f"`agent validate` let {type(exc).__name__} escape (a traceback for the user): {exc}"
                    f" [raised at {where.filename}:{where.lineno}]", pytrace=False)
    out, err = capsys.readouterr()
    return code, out, err


def parse_error_lines(path: Path, stderr: str) -> list[tuple[int, str, str]]:
    """Each stderr line as (line, key path, message); fails on a line of any other shape."""
    shape = re.compile(rf"^{re.escape(str(path))}:(\d+): (\S+): (.+)$")
    parsed = []
    for text in stderr.splitlines():
        match = shape.match(text)
        assert match, f"stderr line not of the form FILE:LINE: key.path: message:\n{text!r}\nall of stderr:\n{stderr}"
        parsed.append((int(match[1]), match[2], match[3]))
    return parsed


def test_corpus_and_expectations_agree() -> None:
    assert len(CORPUS) >= 30
    assert sorted(EXPECTED) == CORPUS, "every tests/bad/*.yaml needs rows in expected.txt, and only those"
    assert all(re.fullmatch(r"\d\d-[a-z0-9-]+\.yaml", name) for name in CORPUS)


@pytest.mark.parametrize("name", CORPUS)
def test_bad_file_is_refused_with_file_line_errors(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = BAD / name
    code, out, err = run_validate(path, capsys)
    assert "Traceback" not in err
    assert code == 2, f"exit {code}, stdout {out!r}, stderr {err!r}"
    assert out == ""
    problems = parse_error_lines(path, err)
    assert [line for line, _, _ in problems] == sorted(line for line, _, _ in problems), "not sorted by line"
    unmatched = list(problems)
    for want in EXPECTED[name]:
        hit = next((p for p in unmatched if want.matches(*p)), None)
        assert hit, f"no stderr line like [{want}]; stderr was:\n{err}"
        unmatched.remove(hit)
    assert not unmatched, f"unexpected extra lines (one mistake, one message):\n{err}"


@pytest.mark.parametrize("name", ["01-not-yaml.yaml", "13-service-key-typo.yaml", "54-not-utf8.yaml"])
def test_bad_file_end_to_end_no_traceback(name: str) -> None:
    path = BAD / name
    result = subprocess.run([sys.executable, "-m", "agent", "validate", "--services", str(path)],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert len(parse_error_lines(path, result.stderr)) == len(EXPECTED[name])


# --- files with several mistakes: all reported at once, in file order -----------------

def write(tmp_path: Path, text: str | bytes, name: str = "services.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_several_shape_mistakes_reported_at_once_sorted_by_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # services before repos, so the schema's own order is not the file's order
    path = write(tmp_path, """\
version: 1
services:
  web:
    repo: api
    command: ""
    port: 0
    env: {DEBUG: yes}
repos:
  api: {url: https://github.com/example/api.git, ref: release 1}
environments:
  production: {}
  staging: {config_path: unified/staging}
""")
    code, _, err = run_validate(path, capsys)
    assert code == 2
    got = [(line, key) for line, key, _ in parse_error_lines(path, err)]
    assert got == [
        (5, "services.web.command"),
        (6, "services.web.port"),
        (7, "services.web.env.DEBUG"),
        (9, "repos.api.ref"),
        (11, "environments.production"),
        (12, "environments.staging.config_path"),
    ]


def test_several_reference_mistakes_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, """\
version: 1
repos:
  api: {url: https://github.com/example/api.git, ref: main}
databases:
  postgres: {}
services:
  web:
    repo: api
    command: run web
    port: 8000
    uses: [postgres, redis]
    load_balancer:
      production: {target_group: prod-web}
  worker:
    repo: worker
    command: run worker
    port: 8000
    after: [cron]
""")
    code, _, err = run_validate(path, capsys)
    assert code == 2
    assert parse_error_lines(path, err) == [
        (11, "services.web.uses.1", "'redis' is not declared under databases"),
        (13, "services.web.load_balancer.production", "no environment 'production' under environments"),
        (15, "services.worker.repo", "no repo 'worker' under repos; declare it or fix the name"),
        (17, "services.worker.port", "port 8000 is already used by services.web"),
        (18, "services.worker.after.0", "'cron' is not another service in this file"),
    ]


def test_every_unknown_key_in_one_mapping_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, """\
version: 1
repos:
  api: {url: https://github.com/example/api.git, ref: main}
services:
  web:
    repo: api
    command: run web
    prot: 8000
    helth: {path: /health}
""")
    code, _, err = run_validate(path, capsys)
    assert code == 2
    assert [(line, key) for line, key, _ in parse_error_lines(path, err)] == [
        (8, "services.web.prot"),
        (9, "services.web.helth"),
    ]


def test_problems_on_one_line_come_in_a_stable_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, """\
version: 1
repos:
  api: {url: https://github.com/example/api.git, ref: main}
services:
  web: {repo: api, command: run, uses: [mysql, mongo, sqlite, oracle, db2, mssql]}
""")
    code, _, err = run_validate(path, capsys)
    assert code == 2
    keys = [key for _, key, _ in parse_error_lines(path, err)]
    assert keys == [f"services.web.uses.{i}" for i in range(6)]


# --- reading the file ------------------------------------------------------------------

def test_missing_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.yaml"
    code, out, err = run_validate(path, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"{path}:1: (top): ")
    assert "not found" in err


def test_directory_instead_of_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_validate(tmp_path, capsys)
    assert code == 2
    assert parse_error_lines(tmp_path, err)[0][2].startswith("cannot read")


@pytest.mark.parametrize("encode", [
    pytest.param(lambda s: ("\ufeff" + s).encode(), id="utf8-bom"),
    pytest.param(lambda s: s.replace("\n", "\r\n").encode(), id="crlf"),
])
def test_editor_quirks_keep_line_numbers(encode, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = MINIMAL + "    port: 70000\n"
    path = write(tmp_path, encode(text))
    code, _, err = run_validate(path, capsys)
    assert code == 2
    assert [(line, key) for line, key, _ in parse_error_lines(path, err)] == [(8, "services.web.port")]


# --- valid files -------------------------------------------------------------------------

MINIMAL = """\
version: 1
repos:
  app: {url: https://github.com/example/app.git, ref: main}
services:
  web:
    repo: app
    command: ./run
"""

def docs_example(name: str = "services-yaml.md") -> str:
    """The first yaml block of a page in docs/: the example the contract shows."""
    text = (Path(__file__).resolve().parents[2] / "docs" / name).read_text()
    return text.split("```yaml\n", 1)[1].split("```", 1)[0]


DESIGN_EXAMPLE = docs_example()


def assert_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = run_validate(path, capsys)
    assert (code, err) == (0, ""), err
    assert out.startswith(f"{path}: ok")
    return out


def test_repository_services_yaml_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert_valid(REPO / "services.yaml", capsys)


def test_minimal_file_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = assert_valid(write(tmp_path, MINIMAL), capsys)
    assert "(1 services, 1 repos)" in out


def test_design_example_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = assert_valid(write(tmp_path, DESIGN_EXAMPLE), capsys)
    assert "(2 services, 1 repos)" in out


TYPED = """\
version: 1
repos:
  api:
    url: https://github.com/example/api.git
    ref: 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39
    build: pip install -r requirements.txt
  web: {url: ../web, ref: v1.10}
databases:
  postgres: {databases: [api, api_test]}
  redis: {}
services:
  api-web:
    repo: api
    command: python -m api.server --port $PORT
    port: 8000
    health: {path: /health}
    env: {LOG_LEVEL: info, GREETING: "h\u00e9llo, 100% $HOME"}
    uses: [postgres, redis]
    release: python -m api.migrate
    after: [api-worker]
    load_balancer:
      staging: {target_group: stg-api-web}
      production: {classic_elb: prod-api-web}
  api-worker:
    repo: api
    command: python -m api.worker
    start_seconds: 0
    stop_seconds: 120
  front: {repo: web, command: npm start, port: 3000, health: {path: /, timeout: 2.5}}
environments:
  staging: {config_path: /unified/staging}
  production: {config_path: /unified/production}
"""


def test_catalog_has_typed_values_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, TYPED)
    cat = catalog.load(path)
    assert cat.path == path
    assert cat.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()

    api, web = cat.repos["api"], cat.repos["web"]
    assert (api.url, api.ref, api.build) == ("https://github.com/example/api.git",
                                             "3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39", "pip install -r requirements.txt")
    assert (web.url, web.ref, web.build) == ("../web", "v1.10", None)

    assert list(cat.services) == ["api-web", "api-worker", "front"]
    svc = cat.services["api-web"]
    assert svc.port == 8000 and type(svc.port) is int
    assert svc.health == Health("/health", 60.0)
    assert svc.env == {"LOG_LEVEL": "info", "GREETING": "h\u00e9llo, 100% $HOME"}
    assert svc.uses == ("postgres", "redis")
    assert svc.after == ("api-worker",)
    assert svc.release == "python -m api.migrate"
    assert (svc.start_seconds, svc.stop_seconds) == (1, 30)
    assert svc.load_balancer == {"staging": LoadBalancer("target_group", ("stg-api-web",)),
                                 "production": LoadBalancer("classic_elb", ("prod-api-web",))}

    worker = cat.services["api-worker"]
    assert (worker.port, worker.health, worker.env, worker.uses, worker.after) == (None, None, {}, (), ())
    assert (worker.start_seconds, worker.stop_seconds, worker.release) == (0, 120, None)
    assert cat.services["front"].health == Health("/", 2.5)

    postgres, redis = cat.databases["postgres"], cat.databases["redis"]
    assert (postgres.kind, postgres.port, postgres.settings) == ("postgres", 5432, {"databases": ["api", "api_test"]})
    assert (redis.kind, redis.port) == ("redis", 6379)  # ports default to what the schema states
    assert {name: env.config_path for name, env in cat.environments.items()} == {
        "staging": "/unified/staging", "production": "/unified/production"}


def test_catalog_without_databases_or_environments(tmp_path: Path) -> None:
    cat = catalog.load(write(tmp_path, MINIMAL))
    assert (cat.databases, cat.environments) == ({}, {})
    assert cat.services["web"].command == "./run"


def test_environments_too_large_for_exec_are_refused_with_the_limit(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    big = "x" * 131072  # with its key, one byte over what exec can carry in one string
    path = write(tmp_path, MINIMAL.replace("command: ./run", f"command: ./run\n    env: {{BLOB: '{big}'}}"))
    code, out, err = run_validate(path, capsys)
    assert code == 2 and "services.web.env.BLOB:" in err and "at most 131072 bytes per variable" in err, err
    many = "\n".join(f"      K{i}: '{'y' * 100_000}'" for i in range(11))  # 1.1 MB in all, each one small
    path = write(tmp_path, MINIMAL.replace("command: ./run", f"command: ./run\n    env:\n{many}"))
    code, out, err = run_validate(path, capsys)
    assert code == 2 and "the environment is" in err and "the agent allows 1048576" in err, err
    fits = "\n".join(f"      K{i}: '{'y' * 100_000}'" for i in range(9))
    assert run_validate(write(tmp_path, MINIMAL.replace("command: ./run", f"command: ./run\n    env:\n{fits}")),
                        capsys)[0] == 0
