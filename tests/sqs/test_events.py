"""Consumer events (ready, received, released, settled) and the one-call ``sqs_worker``.

Against SQS over HTTP (moto's server mode) and a real Redis.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from fargate_runtime import ConfigurationError, ExitCode, Runtime, RuntimeSettings
from fargate_runtime.idempotency import IdempotencySettings
from fargate_runtime.sqs import (
    Consumer,
    ConsumerEvent,
    ConsumerEventKind,
    Message,
    MessageContext,
    MessageOutcome,
    json_field,
    sqs_worker,
)
from fargate_runtime.testing import run_in_background

from .conftest import event
from .support import QueueCounts, counts, running, send, settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import redis.asyncio
    from types_aiobotocore_sqs import SQSClient

    from fargate_runtime.idempotency import Idempotency

pytestmark = pytest.mark.integration


class Recorder:
    """Keeps every event; ``await until(n)`` returns once ``n`` deliveries have ended."""

    def __init__(self) -> None:
        self.events: list[ConsumerEvent] = []
        self._ended = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def __call__(self, consumer_event: ConsumerEvent) -> None:
        self.events.append(consumer_event)
        if consumer_event.kind in {ConsumerEventKind.SETTLED, ConsumerEventKind.RELEASED}:
            self._ended += 1
        for wanted, ready in self._waiters:
            if self._ended >= wanted:
                ready.set()

    async def until(self, ended: int, *, within: float = 30.0) -> None:
        ready = asyncio.Event()
        self._waiters.append((ended, ready))
        if self._ended >= ended:
            ready.set()
        await asyncio.wait_for(ready.wait(), within)

    def outcomes(self) -> collections.Counter[MessageOutcome | None]:
        return collections.Counter(e.outcome for e in self.events if e.outcome is not None)

    def kinds(self) -> list[ConsumerEventKind]:
        return [e.kind for e in self.events]


async def test_every_delivery_ends_in_exactly_one_settled_event(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], idempotency: Idempotency
) -> None:
    """Ready first; then each received message is settled once: succeeded, duplicate, failed."""
    queue = await make_queue()
    recorder = Recorder()

    async def handle(message: Message, context: MessageContext) -> None:
        if message.json()["event_id"] == "bad":
            raise RuntimeError("provider said no")

    consumer = Consumer(
        handle,
        client=sqs,
        settings=settings(queue, backoff_base_seconds=60, backoff_cap_seconds=60),
        idempotency=idempotency,
        key=json_field("event_id"),
        on_event=recorder,
    )
    async with running(consumer):
        await consumer.wait_ready()
        assert recorder.kinds() == [ConsumerEventKind.READY]
        await send(sqs, queue, [event("ok"), event("bad")])
        await recorder.until(2)
        await send(sqs, queue, [event("ok")])  # a resent webhook: its key is completed
        await recorder.until(3)
    received = [e for e in recorder.events if e.kind is ConsumerEventKind.RECEIVED]
    assert len(received) == 3
    assert recorder.outcomes() == {
        MessageOutcome.SUCCEEDED: 1,
        MessageOutcome.FAILED: 1,
        MessageOutcome.DUPLICATE: 1,
    }
    assert all(e.queue_name == queue.rsplit("/", 1)[-1] for e in recorder.events)
    settled = {e.message.message_id for e in recorder.events if e.outcome is not None and e.message}
    assert settled == {e.message.message_id for e in received if e.message}


async def test_work_cut_at_the_drain_deadline_is_released_with_reason_shutdown(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """A handler still running at the deadline ends in RELEASED/SHUTDOWN, and comes back."""
    queue = await make_queue()
    recorder = Recorder()
    started = asyncio.Event()

    async def handle(message: Message, context: MessageContext) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes by itself

    consumer = Consumer(handle, client=sqs, settings=settings(queue), on_event=recorder)
    await send(sqs, queue, ["slow"])
    async with running(consumer, drain_seconds=1) as run:
        await started.wait()
        assert await run.stop()  # cancelled at the drain deadline
    released = [e for e in recorder.events if e.kind is ConsumerEventKind.RELEASED]
    assert [e.outcome for e in released] == [MessageOutcome.SHUTDOWN]
    assert await counts(sqs, queue) == QueueCounts(visible=1, not_visible=0)


async def test_a_failing_hook_is_logged_once_and_never_stops_the_consumer(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """An exception from the hook is logged once; every message is still handled and deleted."""
    queue = await make_queue()
    handled: list[str] = []
    done = asyncio.Event()

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append(message.body)
        if len(handled) == 3:
            done.set()

    def hook(consumer_event: ConsumerEvent) -> None:
        raise ValueError("a bug in the application's hook")

    consumer = Consumer(handle, client=sqs, settings=settings(queue), on_event=hook)
    await send(sqs, queue, ["a", "b", "c"])
    async with running(consumer) as run:
        await asyncio.wait_for(done.wait(), 30)
        assert not await run.stop()
    assert sorted(handled) == ["a", "b", "c"]
    assert consumer.stats.deleted == 3
    failures = [r for r in caplog.records if "hook failed" in r.getMessage()]
    assert len(failures) == 1


async def test_sqs_worker_runs_a_keyed_consumer_from_settings(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    redis_url: str,
    redis_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    """The one-call worker claims keys in Redis: a resent event is not handled twice."""
    queue = await make_queue()
    recorder = Recorder()
    handled: list[tuple[str, str | None]] = []

    async def handle(message: Message, context: MessageContext) -> None:
        handled.append((message.json()["event_id"], context.idempotency_key))

    app = sqs_worker(
        handle,
        key=json_field("event_id"),
        on_event=recorder,
        sqs_settings=settings(queue),
        idempotency_settings=IdempotencySettings(
            redis_url=SecretStr(redis_url), key_prefix=redis_prefix
        ),
        settings=RuntimeSettings(stop_timeout_seconds=10),
        handle_signals=False,
    )
    async with run_in_background(app) as worker:
        await send(sqs, queue, [event("evt_1")])
        await recorder.until(1)
        await send(sqs, queue, [event("evt_1"), event("evt_2")])
        await recorder.until(3)
        assert await worker.stop() == ExitCode.OK
    assert handled == [("evt_1", "evt_1"), ("evt_2", "evt_2")]
    assert recorder.outcomes()[MessageOutcome.DUPLICATE] == 1
    assert await redis_client.keys(f"{redis_prefix}*"), "claims were not kept in Redis"


async def test_sqs_worker_with_build_handler_closes_the_handlers_resources(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """``build_handler`` enters the handler's resources at start; they are closed at the end."""
    queue = await make_queue()
    closed: list[str] = []
    handled = asyncio.Event()

    class Pool:
        async def __aenter__(self) -> Pool:
            return self

        async def __aexit__(self, *exc_info: object) -> None:
            closed.append("pool")

    async def build(runtime: Runtime) -> Callable[[Message, MessageContext], Awaitable[None]]:
        await runtime.enter(Pool(), name="pool")

        async def handle(message: Message, context: MessageContext) -> None:
            handled.set()

        return handle

    app = sqs_worker(
        build_handler=build,
        sqs_settings=settings(queue),
        settings=RuntimeSettings(stop_timeout_seconds=10),
        handle_signals=False,
    )
    async with run_in_background(app) as worker:
        await send(sqs, queue, ["x"])
        await asyncio.wait_for(handled.wait(), 30)
        assert await worker.stop() == ExitCode.OK
    assert closed == ["pool"]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "exactly one of handler or build_handler"),
        ({"handler": "h", "build_handler": "b"}, "exactly one of handler or build_handler"),
        ({"handler": "h", "key_scope": "payments"}, "need key="),
    ],
)
def test_sqs_worker_refuses_contradictory_arguments(
    arguments: dict[str, object], problem: str
) -> None:
    """Neither or both handlers, or a key scope without a key, are refused at once."""
    with pytest.raises(ConfigurationError, match=problem):
        sqs_worker(**arguments)  # type: ignore[arg-type]
