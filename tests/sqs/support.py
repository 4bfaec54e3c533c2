"""Helpers for the SQS tests: run a consumer as the supervisor would, read queue counts, wait."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fargate_runtime.lifecycle import Lifecycle
from fargate_runtime.settings import ShutdownBudget
from fargate_runtime.sqs import Consumer, SqsSettings, json_field

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from types_aiobotocore_sqs import SQSClient

    from fargate_runtime.idempotency import Idempotency
    from fargate_runtime.sqs import Message, MessageContext


def budget(drain_seconds: float = 3.0) -> ShutdownBudget:
    """A shutdown budget with ``drain_seconds`` to drain (WaitTimeSeconds clamps to it)."""
    return ShutdownBudget(
        stop_timeout_seconds=drain_seconds + 7.0,
        margin_seconds=2.0,
        drain_seconds=drain_seconds,
        release_seconds=2.0,
        close_seconds=3.0,
    )


def settings(queue_url: str, **overrides: object) -> SqsSettings:
    """Consumer settings for tests: fast flushes; anything else as given."""
    values: dict[str, object] = {"queue_url": queue_url, "flush_interval_seconds": 0.05}
    values.update(overrides)
    return SqsSettings.model_validate(values)


def keyed(
    handler: Callable[[Message, MessageContext], Awaitable[None]],
    sqs: SQSClient,
    queue: str,
    idempotency: Idempotency,
    **overrides: object,
) -> Consumer:
    """A consumer keyed by the ``event_id`` field, with ``settings(queue, **overrides)``."""
    return Consumer(
        handler,
        client=sqs,
        settings=settings(queue, **overrides),
        idempotency=idempotency,
        key=json_field("event_id"),
    )


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool], *, within: float = 30.0, what: str = ""
) -> None:
    """Wait until ``condition()`` holds (polled every 50 ms); fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s: {what or condition}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Approximate counts SQS reports (exact on moto)."""

    visible: int
    not_visible: int
    delayed: int = 0


async def counts(sqs: SQSClient, queue_url: str) -> QueueCounts:
    """Visible and in-flight message counts of a queue."""
    response = await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )
    attributes = response["Attributes"]
    return QueueCounts(
        visible=int(attributes["ApproximateNumberOfMessages"]),
        not_visible=int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
    )


async def send(
    sqs: SQSClient, queue_url: str, bodies: Sequence[str], *, group_id: str | None = None
) -> list[str]:
    """Send ``bodies`` in batches of 10 (FIFO: in ``group_id``, deduplicated by content)."""
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        entries = []
        for index, body in enumerate(chunk):
            entry: dict[str, str] = {"Id": str(index), "MessageBody": body}
            if group_id is not None:
                entry["MessageGroupId"] = group_id
                entry["MessageDeduplicationId"] = f"{start + index}-{abs(hash(body))}"
            entries.append(entry)
        response = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
        assert not response.get("Failed"), response.get("Failed")
        ids.extend(item["MessageId"] for item in response["Successful"])
    return ids


@dataclass(slots=True)
class Running:
    """A consumer running in this event loop, stopped the way the supervisor stops it."""

    consumer: Consumer
    lifecycle: Lifecycle
    task: asyncio.Task[None]

    async def stop(self) -> bool:
        """Request shutdown; at the drain deadline cancel, as the supervisor does.

        Returns True when the consumer had to be cancelled (the supervisor would exit 75).
        """
        self.lifecycle.request_shutdown("test")
        done, _ = await asyncio.wait({self.task}, timeout=self.lifecycle.drain_seconds_left())
        cancelled = not done
        if cancelled:
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, timeout=30)
        return cancelled


@contextlib.asynccontextmanager
async def running(consumer: Consumer, *, drain_seconds: float = 3.0) -> AsyncIterator[Running]:
    """Run ``consumer`` for the block; stop it (if the block did not) when leaving."""
    lifecycle = Lifecycle(budget(drain_seconds))
    task = asyncio.create_task(consumer.run(lifecycle))
    run = Running(consumer, lifecycle, task)
    try:
        yield run
    finally:
        if not task.done():
            await run.stop()
        elif not task.cancelled():
            task.result()  # a consumer that crashed fails the test with its own error
