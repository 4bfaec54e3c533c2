"""Every CLI failure is one clear line and a documented exit code, never a traceback.

Table-driven: each row runs the real console script (``python -m fargate_runtime.cli``) in a
child process and checks the exit code, that the failure is exactly one line on its stream (a
JSON log line for ``run``, plain text on stderr for the others) and what that line says.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.local import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.process

# Stands for the test PostgreSQL's URL in a row's argv (the server is found only for such rows).
POSTGRES = "<postgres-url>"

# Modules a user might hand to `fargate-runtime run`, each broken its own way.
APPS = {
    "raises.py": "import os\n\nraise RuntimeError('PAYMENTS_API_KEY is not set')\n",
    "syntax.py": "def handler(:\n    pass\n",
    "needs_dep.py": "import not_installed_dependency_xyz\n",
    "exits.py": "import sys\n\nsys.exit(3)\n",
    "plain.py": "app = 42\n\nasync def setup(rt):\n    pass\n",
}


@dataclass(frozen=True)
class Case:
    """One failure: the arguments, where its line goes, the exit code, what the line says."""

    name: str
    argv: list[str]
    code: int
    says: str  # a regular expression the one line matches
    stream: str = "stderr"  # "stdout-json": one JSON log line on stdout (the run command)
    env: dict[str, str] = field(default_factory=dict)


class Statuses(http.server.BaseHTTPRequestHandler):
    """A health endpoint gone wrong: 404, 503, or no answer at all."""

    stall = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/stall":
            self.stall.wait(30)  # holds the probe past its --timeout; released at teardown
        status = {"/busy": 503, "/ok": 200}.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def status_port() -> Iterator[int]:
    """Port of a local HTTP server answering 404 / 503 / nothing, by path."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Statuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        Statuses.stall.set()
        server.shutdown()
        server.server_close()


def cases(apps: Path, status_port: int) -> list[Case]:
    """The table (paths and ports filled in)."""
    closed = free_port()
    health = ["healthcheck", "--port", str(status_port)]
    run = ["run", "--app-dir", str(apps)]
    return [
        Case(
            "run: no app (a child image without CMD)",
            ["run"],
            78,
            r"^no app to run: give MODULE:ATTR",
            "stdout-json",
        ),
        Case(
            "run: not MODULE:ATTR",
            [*run, "plain"],
            78,
            r"must look like MODULE:ATTR",
            "stdout-json",
        ),
        Case(
            "run: --app-dir missing",
            ["run", "--app-dir", "/nonexistent", "a:b"],
            78,
            r"^--app-dir '/nonexistent' does not exist$",
            "stdout-json",
        ),
        Case(
            "run: --app-dir is a file",
            ["run", "--app-dir", str(apps / "plain.py"), "a:b"],
            78,
            r"is not a directory$",
            "stdout-json",
        ),
        Case(
            "run: no such module",
            [*run, "nosuch:app"],
            78,
            r"no module 'nosuch' in .*check MODULE and --app-dir",
            "stdout-json",
        ),
        Case(
            "run: raises at import",
            [*run, "raises:app"],
            78,
            r"^importing 'raises' failed: RuntimeError: PAYMENTS_API_KEY is not set "
            r"\(at .*raises\.py:3\)$",
            "stdout-json",
        ),
        Case(
            "run: syntax error",
            [*run, "syntax:app"],
            78,
            r"SyntaxError: .* \(at .*syntax\.py:1\)$",
            "stdout-json",
        ),
        Case(
            "run: missing dependency",
            [*run, "needs_dep:app"],
            78,
            r"ModuleNotFoundError: No module named 'not_installed_dependency_xyz' "
            r"\(at .*needs_dep\.py:1\)",
            "stdout-json",
        ),
        Case(
            "run: sys.exit at import",
            [*run, "exits:app"],
            78,
            r"^importing 'exits' failed: SystemExit: 3",
            "stdout-json",
        ),
        Case(
            "run: no such attribute",
            [*run, "plain:missing"],
            78,
            r"has no attribute 'missing'",
            "stdout-json",
        ),
        Case(
            "run: wrong kind of attribute",
            [*run, "plain:app"],
            78,
            r"is a int, not a Supervisor",
            "stdout-json",
        ),
        Case(
            "healthcheck: connection refused",
            ["healthcheck", "--port", str(closed)],
            1,
            rf"^fargate-runtime healthcheck: GET http://127\.0\.0\.1:{closed}/healthz: "
            "connection refused",
        ),
        Case(
            "healthcheck: 404",
            [*health, "--path", "/nope"],
            1,
            r"GET http://127\.0\.0\.1:\d+/nope: answered 404 Not Found$",
        ),
        Case(
            "healthcheck: 503",
            [*health, "--path", "/busy"],
            1,
            r"/busy: answered 503 Service Unavailable$",
        ),
        Case(
            "healthcheck: no answer",
            [*health, "--path", "/stall", "--timeout", "0.3"],
            1,
            r"/stall: no answer within 0\.3 s$",
        ),
        Case(
            "healthcheck: port out of range",
            ["healthcheck", "--port", "70000"],
            1,
            r"--port: '70000' must be 1\.\.65535",
        ),
        Case(
            "healthcheck: port not a number",
            ["healthcheck", "--port", "http"],
            1,
            r"--port: 'http' is not a whole number",
        ),
        Case(
            "healthcheck: bad port in the environment",
            ["healthcheck"],
            1,
            r"FARGATE_RUNTIME_HEALTH_PORT='eighty': 'eighty' is not a whole number",
            env={"FARGATE_RUNTIME_HEALTH_PORT": "eighty"},
        ),
        Case(
            "healthcheck: no port at all",
            ["healthcheck"],
            1,
            r"no port: pass --port or set FARGATE_RUNTIME_HEALTH_PORT$",
            env={"FARGATE_RUNTIME_HEALTH_PORT": ""},
        ),
        Case(
            "healthcheck: negative timeout",
            [*health, "--timeout", "-1"],
            1,
            r"--timeout: '-1' must be more than 0",
        ),
        Case(
            "healthcheck: path without /",
            [*health, "--path", "healthz"],
            1,
            r"--path 'healthz' must start with /",
        ),
        Case(
            "size: inf",
            ["size", "--cpu-percent", "inf", "--memory-mib", "512"],
            2,
            r"--cpu-percent: 'inf' is not a finite number",
        ),
        Case(
            "size: nan",
            ["size", "--cpu-percent", "50", "--memory-mib", "nan"],
            2,
            r"--memory-mib: 'nan' is not a finite number",
        ),
        Case(
            "size: negative",
            ["size", "--cpu-percent", "50", "--memory-mib", "-5"],
            2,
            r"--memory-mib: '-5' must be at least 0",
        ),
        Case(
            "size: headroom beyond 10",
            ["size", "--cpu-percent", "5", "--memory-mib", "5", "--headroom", "11"],
            2,
            r"--headroom: '11' must be at most 10",
        ),
        Case(
            "check-taskdef: missing file",
            ["check-taskdef", str(apps / "nope.json")],
            2,
            r"^check-taskdef: cannot read .*nope\.json: No such file or directory$",
        ),
        Case(
            "check-taskdef: a directory",
            ["check-taskdef", str(apps)],
            2,
            r"^check-taskdef: cannot read .*: Is a directory$",
        ),
        Case(
            "check-taskdef: not UTF-8",
            ["check-taskdef", str(apps / "latin1.json")],
            2,
            r"latin1\.json is not UTF-8 text",
        ),
        Case(
            "drill: events not a number",
            ["drill", "--events", "inf"],
            2,
            r"--events: 'inf' is not a whole number",
        ),
        Case(
            "drill: stop timeout beyond ECS's 120 s",
            ["drill", "--stop-timeout", "500"],
            2,
            r"--stop-timeout: '500' must be at most 120",
        ),
        Case(
            "drill: interrupt range backwards",
            ["drill", "--interrupt-every", "5,1"],
            2,
            r"needs 0 < MIN <= MAX",
        ),
        Case(
            "drill: --redis-url nothing answers",
            ["drill", "--quiet", "--redis-url", f"redis://:secret@127.0.0.1:{closed}"],
            2,
            rf"cannot run: no Redis answers at redis://:\*\*\*@127\.0\.0\.1:{closed}",
        ),
        Case(
            "drill: --restart-redis with --redis-url",
            ["drill", "--restart-redis", "--redis-url", "redis://127.0.0.1:6379"],
            2,
            r"--restart-redis needs a private redis-server the drill starts itself",
        ),
        Case(
            "drill: --redis-outage-seconds with --redis-url",
            ["drill", "--redis-outage-seconds", "5", "--redis-url", "redis://127.0.0.1:6379"],
            2,
            r"--redis-outage-seconds needs a private redis-server the drill starts itself",
        ),
        Case(
            "drill: --redis-outage-seconds out of range",
            ["drill", "--redis-outage-seconds", "9000"],
            2,
            r"--redis-outage-seconds",
        ),
        Case(
            "drill: --sqs-endpoint nothing answers",
            ["drill", "--quiet", "--sqs-endpoint", f"http://127.0.0.1:{closed}"],
            2,
            rf"no SQS endpoint answers at http://127\.0\.0\.1:{closed}",
        ),
        Case(
            "drill: --store unknown",
            ["drill", "--store", "mysql"],
            2,
            r"--store: 'mysql': give redis, postgres, or both",
        ),
        Case(
            "drill: --postgres-url nothing answers",
            [
                "drill",
                "--quiet",
                "--store",
                "postgres",
                "--postgres-url",
                f"postgresql://app:secret@127.0.0.1:{closed}/app",
            ],
            2,
            r"cannot run: no PostgreSQL lets the drill in at "
            rf"postgresql://app:\*\*\*@127\.0\.0\.1:{closed}/app",
        ),
        Case(
            "drill: --restart-redis with --store postgres",
            ["drill", "--store", "redis,postgres", "--restart-redis"],
            2,
            r"--restart-redis is drilled on the redis store only",
        ),
        Case(
            "postgres-schema: nothing answers",
            ["postgres-schema", "--url", f"postgresql://app:secret@127.0.0.1:{closed}/app"],
            78,
            rf"^fargate-runtime postgres-schema: .*127\.0\.0\.1:{closed}/app",
            env={"FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_CONNECT_TIMEOUT_SECONDS": "2"},
        ),
        Case(
            "postgres-schema: the schema was never applied",
            ["postgres-schema", "--url", POSTGRES, "--schema", "frt_cli_never_applied"],
            78,
            r"schema 'frt_cli_never_applied' has no idempotency records table: create it with "
            r"`fargate-runtime postgres-schema --apply --schema frt_cli_never_applied`",
        ),
        Case(
            "postgres-schema: no URL at all",
            ["postgres-schema", "--check"],
            78,
            r"the postgres store needs FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_URL "
            r"\(or DATABASE_URL\)",
            env={"DATABASE_URL": ""},
        ),
        Case(
            "postgres-schema: a bad setting in the environment",
            ["postgres-schema", "--url", "postgresql://app@127.0.0.1/app"],
            78,
            r"FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_POOL_SIZE: .*greater than or equal to 1",
            env={"FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_POOL_SIZE": "0"},
        ),
        Case(
            "postgres-schema: a schema name that needs quoting",
            ["postgres-schema", "--print", "--schema", "Payments-2"],
            2,
            r"--schema: PostgreSQL schema name 'Payments-2' must be lower case letters",
        ),
        Case(
            "postgres-schema: not a postgresql:// URL",
            ["postgres-schema", "--url", "mysql://app:secret@db/app"],
            2,
            r"--url: the URL must start with postgresql:// \(see",
        ),
        Case(
            "postgres-schema: two actions",
            ["postgres-schema", "--print", "--apply"],
            2,
            r"argument --apply: not allowed with argument --print",
        ),
        Case(
            "unknown command",
            ["deploy"],
            2,
            r"^fargate-runtime: argument COMMAND: invalid choice: 'deploy'",
        ),
        Case(
            "no command", [], 2, r"^fargate-runtime: the following arguments are required: COMMAND"
        ),
    ]


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of broken app modules and unreadable files."""
    directory = tmp_path_factory.mktemp("apps")
    for name, text in APPS.items():
        (directory / name).write_text(text, encoding="utf-8")
    (directory / "latin1.json").write_bytes('{"family": "caf\xe9"}'.encode("latin-1"))
    return directory


def case_names() -> list[str]:
    """Row names, for test ids (the table needs paths, so it is built inside the test)."""
    return [case.name for case in cases_for_ids()]


def cases_for_ids() -> list[Case]:
    from pathlib import Path

    return cases(Path("/apps"), 0)


@pytest.mark.parametrize("index", range(len(cases_for_ids())), ids=case_names())
def test_each_failure_is_one_line_and_a_documented_exit_code(
    index: int, apps: Path, status_port: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The row's exit code, one line saying what went wrong, no traceback, no password (the
    rows' URLs carry ``secret``), no temp dir left."""
    case = cases(apps, status_port)[index]
    if POSTGRES in case.argv:
        url = request.getfixturevalue("postgres_url")
        case = replace(case, argv=[url if arg == POSTGRES else arg for arg in case.argv])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1", **case.env}
    done = subprocess.run(
        [sys.executable, "-m", "fargate_runtime.cli", *case.argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    both = done.stdout + done.stderr
    assert done.returncode == case.code, both
    assert "Traceback" not in both
    assert "secret" not in both
    if case.stream == "stdout-json":
        assert done.stderr == ""
        lines = done.stdout.splitlines()
        assert len(lines) == 1, both
        line = json.loads(lines[0])
        assert line["level"] == "CRITICAL"
        assert line["exit_code"] == case.code
        message = line["message"]
    else:
        lines = [text for text in done.stderr.splitlines() if text.strip()]
        assert len(lines) == 1, both
        message = lines[0]
    assert re.search(case.says, message), message
    assert list(scratch.iterdir()) == [], "a temporary directory was left behind"


def test_import_failure_line_names_module_exception_and_location(apps: Path) -> None:
    """The JSON line of an app that raises at import carries module, exception and file:line."""
    done = subprocess.run(
        [sys.executable, "-m", "fargate_runtime.cli", "run", "--app-dir", str(apps), "raises:app"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = json.loads(done.stdout)
    assert line["app_module"] == "raises"
    assert line["exception"] == "RuntimeError: PAYMENTS_API_KEY is not set"
    assert line["location"] == f"{apps / 'raises.py'}:3"
    assert line["app"] == "raises:app"
