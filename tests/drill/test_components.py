"""The drill's components and ``fargate-runtime local``: real servers, clear errors, clean stops."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.drill.components import Components, ComponentsError
from fargate_runtime.drill.local_command import READY_LINE
from fargate_runtime.drill.progress import Progress, ProgressState
from fargate_runtime.local import free_port, redis_answers
from tests.processes import Child

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def test_queue_with_dlq_and_redrive_is_created_fresh(
    sqs_endpoint: str, redis_url: str
) -> None:
    """A run gets its own queue whose redrive policy points at its own DLQ."""
    async with Components(
        run_id="t1", max_receive_count=4, sqs_endpoint_url=sqs_endpoint, redis_url=redis_url
    ) as components:
        attributes = await components.client.get_queue_attributes(
            QueueUrl=components.queue_url, AttributeNames=["RedrivePolicy"]
        )
        redrive = json.loads(attributes["Attributes"]["RedrivePolicy"])
        assert redrive["maxReceiveCount"] in (4, "4")
        assert redrive["deadLetterTargetArn"].endswith(":frt-drill-t1-dlq")
        assert (await components.depth()).total == 0
        assert await components.dead_letter_count() == 0
        env = components.worker_environment()
        assert env["FARGATE_RUNTIME_SQS_QUEUE_URL"] == components.queue_url
        assert env["REDIS_URL"] == redis_url
        assert not components.redis_restartable  # a Redis the drill did not start
        queue_url = components.queue_url
    # On an endpoint the drill does not own, its queues are deleted afterwards.
    async with Components(
        run_id="t1-check", max_receive_count=4, sqs_endpoint_url=sqs_endpoint, redis_url=redis_url
    ) as other:
        listed = await other.client.list_queues(QueueNamePrefix="frt-drill-t1")
    assert queue_url not in listed.get("QueueUrls", [])


async def test_no_redis_server_for_a_private_redis_is_a_clear_error(
    sqs_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private Redis wanted and no redis-server on PATH: the error says how to get one."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ComponentsError, match="apt-get install -y redis-server"):
        async with Components(
            run_id="t2", max_receive_count=3, sqs_endpoint_url=sqs_endpoint, private_redis=True
        ):
            pass


@pytest.mark.parametrize(
    ("named", "problem"),
    [
        ({"redis_url": "redis://:hunter2@127.0.0.1:{port}"}, "no Redis answers at"),
        ({"sqs_endpoint_url": "http://127.0.0.1:{port}"}, "no SQS endpoint answers at"),
        (
            {"redis_url": "redis://127.0.0.1:{port}", "private_redis": True},
            "will not touch the Redis at",
        ),
    ],
)
async def test_a_named_component_that_does_not_answer_is_never_replaced(
    sqs_endpoint: str, named: dict[str, object], problem: str
) -> None:
    """A Redis or SQS endpoint that was named must answer; the drill never substitutes its own."""
    port = free_port()
    arguments: dict[str, object] = {"sqs_endpoint_url": sqs_endpoint}
    arguments |= {k: v.format(port=port) if isinstance(v, str) else v for k, v in named.items()}
    with pytest.raises(ComponentsError, match=problem) as raised:
        async with Components(run_id="t4", max_receive_count=3, **arguments):  # type: ignore[arg-type]
            pass
    assert "hunter2" not in str(raised.value)


async def test_restart_redis_uses_a_private_server_it_may_restart(sqs_endpoint: str) -> None:
    """--restart-redis never touches a shared Redis: it starts its own, and restarts that one."""
    async with Components(
        run_id="t3", max_receive_count=3, sqs_endpoint_url=sqs_endpoint, private_redis=True
    ) as components:
        assert components.redis is not None
        port = components.redis.port
        await components.restart_redis()
        assert redis_answers("127.0.0.1", port)
    assert not redis_answers("127.0.0.1", port)


def test_local_prints_the_environment_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """``fargate-runtime local`` serves SQS and Redis until SIGINT, then stops them, exit 0."""
    argv = [sys.executable, "-m", "fargate_runtime.cli", "local", "--private-redis"]
    env_file = tmp_path / "local.env"
    with Child([*argv, "--env-file", str(env_file)], env={"PATH": os.environ["PATH"]}) as child:
        child.wait_for(lambda line: line.get("message") == READY_LINE, timeout=30)
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        redis_port = int(env["REDIS_URL"].rsplit(":", 1)[1])
        sqs_port = int(env["FARGATE_RUNTIME_SQS_ENDPOINT_URL"].rsplit(":", 1)[1])
        assert env["FARGATE_RUNTIME_SQS_QUEUE_URL"].endswith("/payments")
        assert redis_answers("127.0.0.1", redis_port)
        assert listening(sqs_port)
        assert any(f"export REDIS_URL={env['REDIS_URL']}" in line for line in child.raw)
        child.signal(signal.SIGINT)
        assert child.wait(timeout=20) == 0, child.output()
    assert not redis_answers("127.0.0.1", redis_port)
    assert not listening(sqs_port)


def test_progress_prints_plain_lines_when_not_a_terminal() -> None:
    """In CI (no TTY) the progress line is a plain line every few seconds, not a redraw."""
    stream = io.StringIO()
    progress = Progress(stream)
    state = ProgressState(1.0, 10, 100, 5, 90, 3, 2, 3, 1, 2, 0, 0)
    progress.show(state)
    progress.show(state)  # within the interval: not printed again
    assert stream.getvalue().count("\n") == 1
    assert "\r" not in stream.getvalue()
    assert "sent 10/100" in stream.getvalue()
    Progress(stream := io.StringIO(), enabled=False).show(state)
    assert stream.getvalue() == ""
