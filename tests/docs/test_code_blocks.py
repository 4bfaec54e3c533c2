"""Every code block of the README and the example READMEs runs, extracted from the Markdown.

Blocks are taken from the documents as they are (nothing is copied into this file) and handled
by their language:

- ``python`` blocks start with ``# NAME.py``; they are written to the document's project
  directory, where the ``sh`` blocks run.
- ``sh`` blocks run line by line (continuations joined, comments dropped) against a local SQS
  queue, Redis and a PostgreSQL database of the test's own (``DATABASE_URL``). ``fargate-runtime
  run APP`` (after ``NAME=value`` assignments, as in a shell) starts APP, waits until it is
  running and keeps it up for the lines after it (a worker also gets one message and must handle
  it), until the next ``run`` or the end: then it gets SIGTERM and must exit 0. Three commands
  cannot run inside a test and are checked instead (``STAND_INS``): ``make`` (``make test`` is
  this suite; ``make -n`` proves the target and its recipe), ``docker`` (no Docker engine on these
  machines; the Dockerfile it names must exist, and ``tests/deploy/test_dockerfile.py`` checks it)
  and ``pip install`` of the wheel (``tests/test_installed_wheel.py`` does that install in a fresh
  venv; here the wheel's name must be the one ``make dist`` writes).
- ``json`` is parsed, ``sql`` runs against a ledger of the stand-in provider, ``dockerfile`` is
  parsed and must build FROM the base; ``text`` and unlabelled blocks are output and layouts.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sqlite3
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.session
import pytest

from fargate_runtime.drill.ledger import create_ledger
from fargate_runtime.local import sqs_environment
from tests.deploy.dockerfile import parse, stages
from tests.idempotency.postgres import PostgresDatabase
from tests.processes import Child

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import redis.asyncio

pytestmark = [pytest.mark.process, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
# Each document: where its commands run (the README's in a project of its own, the examples'
# from the checkout: they name examples.* modules and .venv/bin/python) and whether the apps
# it starts are SQS workers (each is then handed an event it must handle).
DOCUMENTS: dict[str, tuple[Path | None, bool]] = {
    "README.md": (None, True),
    "examples/sqs_worker/README.md": (REPO, True),
    "examples/http_api/README.md": (REPO, False),
}
STAND_INS = ("make", "docker", "pip install")
# ``fargate-runtime run APP``, after any ``NAME=value`` assignments for it.
_RUN = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*fargate-runtime run ")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NOT_CODE = {"", "text"}


@dataclass(frozen=True)
class Block:
    """One fenced block: its language and its text."""

    language: str
    text: str


def blocks(document: str) -> list[Block]:
    """The fenced blocks of ``document``, in order."""
    text = (REPO / document).read_text(encoding="utf-8")
    return [Block(match[1], match[2]) for match in _FENCE.finditer(text)]


def commands(block: Block) -> list[str]:
    """The shell lines of a block: continuations joined, comments and blank lines dropped."""
    joined = block.text.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            lines.append(line.split(" #", 1)[0].strip())
    return lines


def test_every_block_has_a_known_language() -> None:
    """A block is code we run or check, or text; nothing slips through as unknown."""
    known = {"python", "sh", "json", "sql", "dockerfile", *_NOT_CODE}
    for document in DOCUMENTS:
        for block in blocks(document):
            assert block.language in known, f"{document}: a ```{block.language} block"
            if block.language == "text":
                assert not re.search(r"^\s*(fargate-runtime|pip|make|python)\b", block.text, re.M)


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A database of this test's own (the README's PostgreSQL blocks), dropped afterwards."""
    async with PostgresDatabase.created(postgres_url) as url:
        yield url


@pytest.fixture
def environment(
    sqs_endpoint: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: redis.asyncio.Redis,
    database_url: str,
) -> Iterator[dict[str, str]]:
    """Environment of the commands: a fresh queue, the test Redis under this test's prefix, a
    fresh PostgreSQL database."""
    del redis_client  # requested for its cleanup of ``redis_prefix`` keys
    sqs: Any = botocore.session.get_session().create_client(
        "sqs", endpoint_url=sqs_endpoint, region_name="us-east-1"
    )
    queue = sqs.create_queue(QueueName=f"doc{uuid.uuid4().hex[:12]}")["QueueUrl"]
    try:
        yield {
            **sqs_environment(sqs_endpoint),
            "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
            "FARGATE_RUNTIME_SQS_ENDPOINT_URL": sqs_endpoint,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": redis_prefix,
            "PAYMENTS_API_KEY_PREFIX": redis_prefix,
            "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": "10",
            "FARGATE_RUNTIME_HTTP_LAME_DUCK_SECONDS": "0",
            "FARGATE_RUNTIME_HTTP_REQUEST_DRAIN_SECONDS": "2",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        }
    finally:
        sqs.delete_queue(QueueUrl=queue)


def _stand_in(line: str, cwd: Path) -> None:
    """Check a command that cannot run inside a test (see the module docstring)."""
    words = shlex.split(line)
    if words[0] == "make":
        done = subprocess.run(["make", "-n", "-C", str(REPO), *words[1:]], capture_output=True)
        assert done.returncode == 0, f"{line}: {done.stderr.decode()}"
    elif words[0] == "docker":
        context = Path(words[-1])
        assert (REPO / context / "Dockerfile").is_file() or (cwd / context / "Dockerfile").is_file()
    else:
        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        target = words[-1]
        if target.startswith("dist/"):
            assert target == f"dist/fargate_runtime-{version}-py3-none-any.whl[drill]", target
        else:
            assert re.fullmatch(r"/path/to/fargate-runtime\[\w+\]", target), target


def _start(line: str, cwd: Path, env: dict[str, str]) -> Child:
    """``fargate-runtime run APP``: started, and running, before the next line."""
    words = shlex.split(line)
    assignments = words[: words.index("fargate-runtime")]
    own = dict(word.split("=", 1) for word in assignments)
    child = Child(words[len(assignments) :], env={**env, **own}, cwd=cwd)
    child.wait_for_message("phase running", timeout=60)
    return child


def _stop(child: Child) -> int:
    """SIGTERM, once (a second would cut its drain: exit 75); its exit code once drained."""
    if child.process.poll() is None:
        child.signal()
    code = child.wait(timeout=30)
    child.kill()  # closes its pipe
    return code


def _exercise(child: Child, env: dict[str, str]) -> None:
    """A running SQS worker gets one event and must handle it: a line that names the event and
    is not an error (a failed handler's line names it too)."""
    child.wait_for_message("sqs consumer started", timeout=30)
    event_id = f"evt_{uuid.uuid4().hex[:8]}"
    body = {"event_id": event_id, "account": "acct_1", "amount_cents": 1250}
    sqs: Any = botocore.session.get_session().create_client(
        "sqs", endpoint_url=env["FARGATE_RUNTIME_SQS_ENDPOINT_URL"], region_name="us-east-1"
    )
    sqs.send_message(QueueUrl=env["FARGATE_RUNTIME_SQS_QUEUE_URL"], MessageBody=json.dumps(body))
    child.wait_for(
        lambda line: event_id in json.dumps(line) and line.get("level") in (None, "INFO"),
        timeout=30,
    )


def _check_other(block: Block, document: str, scratch: Path) -> None:
    if block.language == "json":
        json.loads(block.text)
    elif block.language == "sql":
        path = scratch / f"{uuid.uuid4().hex}.sqlite3"
        create_ledger(path)
        with contextlib.closing(sqlite3.connect(path)) as ledger:
            for line in block.text.splitlines():
                statement = line.split("--", 1)[0].strip()
                if statement:
                    ledger.execute(statement).fetchall()
    elif block.language == "dockerfile":
        (stage,) = stages(parse(block.text))
        assert stage.base.startswith("fargate-runtime:"), document
        cmd = stage.last("CMD")
        assert cmd is not None
        assert cmd.exec_form is not None, document


@pytest.mark.parametrize("document", list(DOCUMENTS))
def test_the_documents_blocks_run(
    document: str, environment: dict[str, str], tmp_path: Path
) -> None:
    """Each block runs (or is checked) as written; every app it starts exits 0 on SIGTERM."""
    directory, workers = DOCUMENTS[document]
    cwd = directory or tmp_path
    found = blocks(document)
    for block in found:
        if block.language == "python":
            first = block.text.splitlines()[0]
            assert re.fullmatch(r"# [\w/]+\.py", first), f"{document}: name the file: {first}"
            (cwd / first[2:]).write_text(block.text, encoding="utf-8")
    env = {**environment, "PYTHONPATH": "" if directory is None else str(REPO)}
    started: list[Child] = []
    try:
        for block in found:
            if block.language != "sh":
                _check_other(block, document, tmp_path)
                continue
            for line in commands(block):
                if line.startswith(STAND_INS):
                    _stand_in(line, cwd)
                elif _RUN.match(line):
                    # One app at a time, as a reader stops the last before the next.
                    for running in started:
                        assert _stop(running) == 0, running.output()
                    started.append(_start(line, cwd, env))
                    if workers:
                        _exercise(started[-1], env)
                else:
                    # The document's own command line, run as a reader would type it.
                    done = subprocess.run(  # noqa: S602
                        line, shell=True, cwd=cwd, env=env, capture_output=True, timeout=180
                    )
                    assert done.returncode == 0, f"{document}: {line}\n{done.stdout!r}"
    finally:
        codes = [_stop(child) for child in started]
    for child, code in zip(started, codes, strict=True):
        assert code == 0, child.output()
        assert "handler failed" not in child.messages(), child.output()
    assert started or document != "README.md"
