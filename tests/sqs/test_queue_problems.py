"""Queue problems: refused at start with exit 78 and one line, or (met later) drained first."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest

from fargate_runtime import Supervisor
from fargate_runtime.errors import ConfigurationError
from fargate_runtime.idempotency import IdempotencySettings
from fargate_runtime.lifecycle import ExitCode
from fargate_runtime.settings import RuntimeSettings
from fargate_runtime.sqs import (
    Consumer,
    Message,
    MessageContext,
    deduplication_id,
    open_sqs_client,
    sqs_worker,
)
from tests.processes import Child, runtime_argv

from .support import eventually, settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from types_aiobotocore_sqs import SQSClient

    from fargate_runtime import Runtime
    from fargate_runtime.lifecycle import Lifecycle
    from tests.logcapture import JsonLines

pytestmark = pytest.mark.integration


async def nothing(message: Message, context: MessageContext) -> None:
    """A handler that does nothing."""


async def test_a_queue_that_does_not_exist_is_refused_naming_the_setting(
    sqs: SQSClient, sqs_endpoint: str
) -> None:
    """``prepare`` reads the queue: one that does not exist is a ConfigurationError naming
    FARGATE_RUNTIME_SQS_QUEUE_URL (exit 78), not a crash at the first receive."""
    missing = f"{sqs_endpoint}/123456789012/no-such-queue"
    consumer = Consumer(nothing, client=sqs, settings=settings(missing))
    with pytest.raises(ConfigurationError) as caught:
        await consumer.prepare()
    message = str(caught.value)
    assert message.startswith("FARGATE_RUNTIME_SQS_QUEUE_URL: there is no queue at")
    assert "\n" not in message


async def test_the_queue_s_redrive_and_visibility_are_read_and_said_once(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], json_lines: JsonLines
) -> None:
    """``prepare`` learns maxReceiveCount and the DLQ, and logs one line saying which
    visibility the consumer uses (its own) against the queue's."""
    queue = await make_queue(dlq_after=4)
    consumer = Consumer(nothing, client=sqs, settings=settings(queue))
    facts = await consumer.prepare()
    assert facts.max_receive_count == 4
    assert facts.dead_letter_url == queue + "-dlq"
    assert facts.visibility_timeout_seconds == 30
    (line,) = json_lines.with_message("sqs queue checked")
    assert (line["visibility_timeout_seconds"], line["queue_visibility_timeout_seconds"]) == (
        10,
        30,
    )
    assert "FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS" in line["visibility"]


async def test_deduplication_id_on_a_standard_queue_stops_the_start_with_78(
    make_queue: Callable[..., Awaitable[str]], redis_url: str, redis_prefix: str
) -> None:
    """``sqs_worker(key=deduplication_id())`` on a standard queue exits 78 before receiving."""
    queue = await make_queue()
    app = sqs_worker(
        nothing,
        key=deduplication_id(),
        sqs_settings=settings(queue),
        idempotency_settings=IdempotencySettings(key_prefix=redis_prefix),
        settings=RuntimeSettings(stop_timeout_seconds=10),
        handle_signals=False,
    )
    assert await app.serve() == ExitCode.CONFIGURATION


async def test_a_fatal_receive_error_drains_the_handlers_in_flight_then_exits_1(
    sqs: SQSClient,
) -> None:
    """The queue is deleted under a running handler: receives fail for good, the handler is
    not cancelled but finishes within the drain, then the process exits 1."""
    queue = (await sqs.create_queue(QueueName=f"doomed{uuid.uuid4().hex[:12]}"))["QueueUrl"]
    started, finish = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(message: Message, context: MessageContext) -> None:
        started.set()
        await finish.wait()
        finished.append(message.body)

    consumers: list[Consumer] = []
    app = Supervisor(settings=RuntimeSettings(stop_timeout_seconds=20), handle_signals=False)

    @app.setup
    async def setup(rt: Runtime) -> None:
        sqs_settings = settings(queue, concurrency=2, wait_time_seconds=1)
        client = await rt.enter(open_sqs_client(sqs_settings), name="sqs")
        consumers.append(Consumer(slow, client=client, settings=sqs_settings))
        rt.add_service(consumers[0].run, name="sqs-consumer")

    await sqs.send_message(QueueUrl=queue, MessageBody="in flight")
    serving = asyncio.create_task(app.serve())
    await asyncio.wait_for(started.wait(), 30)
    await sqs.delete_queue(QueueUrl=queue)
    lifecycle: Lifecycle | None = app.lifecycle
    assert lifecycle is not None
    await eventually(lambda: lifecycle.shutdown_requested, what="receive failed for good")
    assert not serving.done()  # draining: the handler still runs
    finish.set()
    assert await serving == ExitCode.CRASHED
    assert finished == ["in flight"]
    assert consumers[0].stats.cancelled_at_deadline == 0


@pytest.mark.process
def test_a_worker_on_a_missing_queue_exits_78_with_one_line(
    sqs_endpoint: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """``fargate-runtime run`` on a queue URL that does not exist: exit 78 and one JSON line
    naming FARGATE_RUNTIME_SQS_QUEUE_URL, no traceback."""
    env = {
        **worker_env,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": f"{sqs_endpoint}/123456789012/missing-{tmp_path.name}",
    }
    with Child(runtime_argv("examples.sqs_worker.app:app"), env=env) as worker:
        code = worker.wait(timeout=30)
    assert code == ExitCode.CONFIGURATION, worker.output()
    (line,) = [line for line in worker.lines if line.get("level") == "CRITICAL"]
    assert line["message"].startswith("FARGATE_RUNTIME_SQS_QUEUE_URL: there is no queue at")
    assert "Traceback" not in worker.output()
