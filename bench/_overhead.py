"""The consumer's own overhead: an SQS stub that answers at once, real Redis keys, one core.

``bench/sqs.py`` runs it in pinned child processes, side by side and in alternation: telemetry
off, the blocked-loop detector on, telemetry on (a child each: OpenTelemetry's global providers
can be set only once per process). Each child prints its rounds' wall-clock and CPU rates.

Telemetry on is what a task exporting to a collector does in its own process: the SDK's
providers as ``Telemetry`` installs them, every span handed to a ``BatchSpanProcessor`` whose
exporter drops each batch (a collector's exporter less the encoding and the network, which
``sqs_throughput.py``'s OTLP run measures). The benchmark once exported through a
``SimpleSpanProcessor`` into memory instead: each span exported on the event loop as it ended,
and a whole round's spans kept alive, which no deployment does (the garbage collector alone then
cost about 20 µs per message); ``telemetry="memory"`` still runs that, for comparison.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis.asyncio
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench._results import REPO, run_child
from fargate_runtime._watchdog import Watchdog
from fargate_runtime.idempotency import Idempotency, RedisStore
from fargate_runtime.lifecycle import Lifecycle
from fargate_runtime.settings import ShutdownBudget
from fargate_runtime.sqs import Consumer, Message, MessageContext, SqsSettings, json_field
from fargate_runtime.telemetry import Telemetry, TelemetrySettings

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "BUDGET",
    "OVERHEAD_CONCURRENCY",
    "OVERHEAD_MESSAGES",
    "REPO",
    "ROUNDS_PER_CHILD",
    "StubSqs",
    "body",
    "delete_prefix",
    "overhead_pinned",
]

OVERHEAD_MESSAGES = 20_000
OVERHEAD_CONCURRENCY = 50
ROUNDS_PER_CHILD = 2
BUDGET = ShutdownBudget(
    stop_timeout_seconds=30, margin_seconds=2, drain_seconds=23, release_seconds=2, close_seconds=3
)


def body(index: int, run: str) -> str:
    """A payment event's JSON body, keyed by ``event_id``."""
    return json.dumps(
        {"event_id": f"{run}-{index}", "account": "acct", "amount_cents": 100, "sequence": index}
    )


class StubSqs:
    """Answers like SQS at once: a bottomless queue of ``total`` distinct messages."""

    def __init__(self, total: int) -> None:
        run = uuid.uuid4().hex[:8]
        self._messages = [
            {
                "MessageId": f"{run}-{index}",
                "ReceiptHandle": f"rh-{run}-{index}",
                "Body": body(index, run),
                "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
                # A producer's context, as inject_sqs_attributes writes it: with telemetry on,
                # every consumer span continues it (the extraction is part of the cost).
                "MessageAttributes": {
                    "traceparent": {
                        "DataType": "String",
                        "StringValue": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
                    }
                },
            }
            for index in range(total)
        ]
        self._next = 0
        self.idle = asyncio.Event()

    async def receive_message(self, **request: Any) -> dict[str, Any]:
        count = request["MaxNumberOfMessages"]
        batch = self._messages[self._next : self._next + count]
        self._next += len(batch)
        if not batch:
            self.idle.set()
            await asyncio.Event().wait()  # an empty long poll: wait until abandoned
        return {"Messages": batch}

    async def delete_message_batch(self, **request: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}

    async def change_message_visibility_batch(self, **request: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}

    class meta:  # what botocore clients carry; the final release reads it
        region_name = "us-east-1"
        endpoint_url = "https://sqs.bench.invalid"

    async def get_queue_attributes(self, **request: Any) -> dict[str, Any]:
        # The backlog gauge's read (telemetry on: once at start, then once a minute).
        left = len(self._messages) - self._next
        return {"Attributes": {"ApproximateNumberOfMessages": str(max(0, left))}}


async def _overhead(redis_url: str, *, detector: bool = False) -> float:
    stub = StubSqs(OVERHEAD_MESSAGES)
    redis_client = redis.asyncio.Redis.from_url(redis_url)
    prefix = f"bench-sqs-{uuid.uuid4().hex[:8]}"

    async def handle(message: Message, context: MessageContext) -> None:
        """A no-op handler."""

    consumer = Consumer(
        handle,
        client=stub,  # type: ignore[arg-type]
        settings=SqsSettings(
            queue_url="https://sqs.bench.invalid/1/stub",
            concurrency=OVERHEAD_CONCURRENCY,
        ),
        idempotency=Idempotency(RedisStore(redis_client), prefix=prefix, retention_seconds=600),
        key=json_field("event_id"),
    )
    lifecycle = Lifecycle(BUDGET)
    watchdog = None
    if detector:
        # What the supervisor runs beside every consumer: the loop's pulse and its thread.
        watchdog = Watchdog(
            lifecycle,
            on_signal=lambda signum, at: None,
            handle_signals=False,
            hard_exit=False,
            blocked_after_seconds=1.0,
        )
        watchdog.start()
        watchdog.attach_loop(asyncio.get_running_loop())
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run(lifecycle))
    while consumer.stats.deleted < OVERHEAD_MESSAGES:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    elapsed = time.perf_counter() - started
    lifecycle.request_shutdown("bench")
    await task
    if watchdog is not None:
        watchdog.stop()
    assert consumer.stats.succeeded == OVERHEAD_MESSAGES
    await delete_prefix(redis_client, prefix)
    return OVERHEAD_MESSAGES / elapsed


def _overhead_child(
    redis_url: str, *, telemetry: str | None = None, detector: bool = False
) -> None:
    """Entry point of the pinned child process: print its rounds' figures as JSON.

    ``wall`` and ``cpu`` in messages per second; ``gc_us`` the garbage collector's time per
    message (spans are many small objects: part of what they cost is collecting them).
    """
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    exported = _install_telemetry(telemetry) if telemetry else None
    collecting = _GcTime()
    gc.callbacks.append(collecting)
    wall, cpu, gc_us = [], [], []
    for _ in range(ROUNDS_PER_CHILD):
        cpu_started, collecting.seconds = time.process_time(), 0.0
        wall.append(asyncio.run(_overhead(redis_url, detector=detector)))
        if exported is not None:
            # Every message made its span, exported (the export thread's CPU counts too).
            assert exported() >= OVERHEAD_MESSAGES
        cpu.append(OVERHEAD_MESSAGES / (time.process_time() - cpu_started))
        gc_us.append(1e6 * collecting.seconds / OVERHEAD_MESSAGES)
    print(json.dumps({"wall": wall, "cpu": cpu, "gc_us": gc_us}))


class _GcTime:
    """Adds up the time the garbage collector runs (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


class _DroppingExporter(SpanExporter):
    """A collector's exporter without the encoding and the network: counts batches, drops them."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to close."""


def _install_telemetry(export: str) -> Callable[[], int]:
    """Telemetry on for the rest of the process; a function that flushes and counts spans."""
    memory = InMemorySpanExporter() if export == "memory" else None
    telemetry = Telemetry(
        TelemetrySettings(enabled=True),
        service_name="bench",
        span_exporter=memory,
        metric_reader=InMemoryMetricReader(),
    )
    asyncio.run(telemetry.__aenter__())
    if memory is not None:

        def counted() -> int:
            count = len(memory.get_finished_spans())
            memory.clear()  # let go of them, so memory does not grow
            return count

        return counted
    dropping = _DroppingExporter()
    provider: Any = trace.get_tracer_provider()
    provider.add_span_processor(BatchSpanProcessor(dropping))

    def flushed() -> int:
        provider.force_flush()
        count, dropping.exported = dropping.exported, 0
        return count

    return flushed


def overhead_pinned(
    redis_url: str, *, telemetry: str | None, detector: bool = False
) -> dict[str, list[float]]:
    """One child's rounds: ``wall`` and ``cpu`` in messages per second, ``gc_us`` per message.

    ``telemetry``: None (off), ``"batch"`` (a batch processor, batches dropped) or ``"memory"``.
    """
    code = (
        "from bench._overhead import _overhead_child; "
        f"_overhead_child({redis_url!r}, telemetry={telemetry!r}, detector={detector!r})"
    )
    rates: dict[str, list[float]] = run_child(code)
    return rates


async def delete_prefix(client: redis.asyncio.Redis, prefix: str) -> None:
    """Delete this run's keys (``prefix*``) and close the client."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])
    await client.aclose()
