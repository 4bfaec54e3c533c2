"""The task metadata v4 reader against a local HTTP server: recorded, missing, slow, garbage."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fargate_runtime.ecs import METADATA_ENV, TaskIdentity, owner_id, read_task_identity
from tests.processes import Child, runtime_argv

RECORDED = (Path(__file__).parent.parent / "data" / "ecs_task_metadata_v4.json").read_bytes()

TASK_ARN = "arn:aws:ecs:us-east-1:111122223333:task/payments/158d1c8083dd49d6b527399fd6414f5c"

Responder = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def metadata_server() -> Iterator[Callable[[Responder], str]]:
    """Start a loopback server whose GET handler is the given function; yield its base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []
    release = threading.Event()

    def start(respond: Responder) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                respond(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/v4/abc"

    yield start
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def send(handler: http.server.BaseHTTPRequestHandler, body: bytes, status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


async def test_recorded_document_gives_the_identity(
    metadata_server: Callable[[Responder], str],
) -> None:
    """A recorded v4 /task document yields cluster, ARN, family, revision and zone."""
    paths: list[str] = []

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        paths.append(handler.path)
        send(handler, RECORDED)

    base = metadata_server(respond)
    identity = await read_task_identity(environ={METADATA_ENV: base})
    assert paths == ["/v4/abc/task"]
    assert identity is not None
    assert identity.task_id == "158d1c8083dd49d6b527399fd6414f5c"
    assert identity.log_fields() == {
        "ecs_task_arn": TASK_ARN,
        "ecs_cluster": "arn:aws:ecs:us-east-1:111122223333:cluster/payments",
        "ecs_family": "payment-worker",
        "ecs_revision": "42",
        "ecs_availability_zone": "us-east-1a",
    }
    assert owner_id(identity).startswith("158d1c8083dd49d6b527399fd6414f5c:")


async def test_missing_variable_means_not_on_ecs() -> None:
    """Without the environment variable there is no identity and no request."""
    assert await read_task_identity(environ={}) is None


@pytest.mark.parametrize(
    "respond",
    [
        pytest.param(lambda h: send(h, b"<html>not json"), id="garbage"),
        pytest.param(lambda h: send(h, b'["a list"]'), id="wrong-shape"),
        pytest.param(lambda h: send(h, b'{"Cluster": "c"}'), id="no-task-arn"),
        pytest.param(lambda h: send(h, b"oops", status=500), id="server-error"),
    ],
)
async def test_bad_answers_are_logged_and_start_continues(
    metadata_server: Callable[[Responder], str],
    respond: Responder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage, wrong shapes and errors give no identity and one warning, never an exception."""
    base = metadata_server(respond)
    assert await read_task_identity(environ={METADATA_ENV: base}) is None
    assert any("task metadata unavailable" in r.getMessage() for r in caplog.records)


async def test_slow_endpoint_is_abandoned_at_the_timeout(
    metadata_server: Callable[[Responder], str],
) -> None:
    """An endpoint that does not answer in time gives no identity instead of blocking start."""
    answered = threading.Event()

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        answered.wait(timeout=5)

    base = metadata_server(respond)
    try:
        identity = await read_task_identity(environ={METADATA_ENV: base}, timeout_seconds=0.2)
    finally:
        answered.set()
    assert identity is None


def test_unreachable_endpoint_gives_no_identity() -> None:
    """A closed port is treated like a misbehaving endpoint."""
    import asyncio

    from fargate_runtime.local import free_port

    url = f"http://127.0.0.1:{free_port()}/v4/x"
    assert asyncio.run(read_task_identity(environ={METADATA_ENV: url})) is None


def test_from_document_rejects_non_objects() -> None:
    """Only a JSON object with a TaskARN is a task document."""
    with pytest.raises(ValueError, match="TaskARN"):
        TaskIdentity.from_document([1, 2])


def test_log_lines_of_a_run_on_ecs_carry_the_task_identity(
    metadata_server: Callable[[Responder], str],
) -> None:
    """The supervisor reads the identity once at start and stamps it on every line."""
    base = metadata_server(lambda h: send(h, RECORDED))
    with Child(
        runtime_argv("tests.supervisor.apps:job"), env={METADATA_ENV: base, "TEST_JOB_STEPS": "3"}
    ) as child:
        code = child.wait(timeout=30)
    assert code == 0, child.output()
    assert "job done" in child.messages()
    phases = [line for line in child.lines if "phase" in line]
    assert phases
    assert all(line["ecs_family"] == "payment-worker" for line in phases)
    assert all(line["ecs_revision"] == "42" for line in phases)


def test_identity_as_opentelemetry_resource_attributes() -> None:
    """The identity maps to the OpenTelemetry cloud and AWS ECS resource conventions."""
    import json

    identity = TaskIdentity.from_document(json.loads(RECORDED))
    attributes = identity.resource_attributes()
    assert attributes["cloud.platform"] == "aws_ecs"
    assert attributes["aws.ecs.task.arn"] == TASK_ARN
    assert attributes["aws.ecs.task.family"] == "payment-worker"
    assert attributes["aws.ecs.launchtype"] == "fargate"
    assert attributes["cloud.availability_zone"] == "us-east-1a"
