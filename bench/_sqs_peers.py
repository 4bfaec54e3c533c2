"""The consumers the SQS benchmarks compare, each run alone in a child process.

``python -m bench._sqs_peers SPEC_JSON`` starts one consumer on one queue, prints
``{"ready": ...}`` once it waits for messages, handles ``count`` of them, and prints one JSON
line of figures: CPU seconds of the whole process (every thread: the SDK's exporter included)
from ready to done, wall seconds, peak RSS. The parent feeds the queue and counts the requests
at the server (``_moto_keepalive``).

Kinds (``SPEC["kind"]``):

- ``runtime``: fargate-runtime's ``Consumer`` on the client ``open_sqs_client`` builds, with
  options ``redis`` (Redis idempotency keys) and ``telemetry`` (``off``, ``none``: the SDK's
  providers without an exporter, ``otlp``: export to a collector on loopback).
- ``gather_loop``: the plain aioboto3 loop: receive 10, run them with ``asyncio.gather``, one
  ``DeleteMessageBatch``.
- ``delete_each``: the same loop, deleting each message with its own ``DeleteMessage``.
- ``aws_sqs_consumer``: aws-sqs-consumer (sync boto3) in batch mode (10); the batch handler runs
  its messages in a thread pool and waits for all of them (what a batch mode can do).

Handlers sleep for ``handler_seconds(sequence)``: 0 (trivial) or a seeded heavy-tailed latency
(no CPU), the same for every consumer, so each sees the same downstream.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["HeavyTail", "handler_seconds", "run"]


class HeavyTail:
    """A downstream's latency: lognormal around ``median_seconds``, ``slow_share`` at
    ``slow_seconds``; seeded per message sequence, so every consumer meets the same values."""

    def __init__(
        self,
        *,
        seed: int,
        median_seconds: float = 0.1,
        sigma: float = 0.5,
        slow_share: float = 0.05,
        slow_seconds: float = 2.0,
    ) -> None:
        self.seed = seed
        self.median_seconds = median_seconds
        self.sigma = sigma
        self.slow_share = slow_share
        self.slow_seconds = slow_seconds

    def seconds(self, sequence: int) -> float:
        """The latency of message ``sequence``."""
        rng = random.Random(self.seed * 1_000_003 + sequence)
        if rng.random() < self.slow_share:
            return self.slow_seconds
        return min(self.slow_seconds, self.median_seconds * math.exp(rng.gauss(0.0, self.sigma)))

    def describe(self) -> dict[str, float]:
        """The distribution's parameters, for the results."""
        return {
            "seed": self.seed,
            "median_seconds": self.median_seconds,
            "sigma": self.sigma,
            "slow_share": self.slow_share,
            "slow_seconds": self.slow_seconds,
        }


def handler_seconds(spec: dict[str, Any], sequence: int) -> float:
    """What the handler of message ``sequence`` waits: 0, fixed, or the heavy tail's value."""
    latency = spec.get("latency")
    if latency is None:
        return float(spec.get("handler_seconds", 0.0))
    return HeavyTail(**latency).seconds(sequence)


def _sequence(body: str) -> int:
    return int(json.loads(body)["sequence"])


def _emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


# When each handler call ended (perf_counter), for the steady-state rate.
_ended: list[float] = []


def _handled(seconds: float) -> None:
    _ended.append(time.perf_counter())


def _steady_rate() -> float | None:
    """Messages per second between the 10th and the 90th percentile of handler ends: without
    the start (first receives) and the end (the last slow message), which say nothing about a
    consumer that keeps running."""
    ended = sorted(_ended)
    first, last = len(ended) // 10, len(ended) * 9 // 10
    if last - first < 2 or ended[last] <= ended[first]:
        return None
    return (last - first) / (ended[last] - ended[first])


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _finish(count: int, ready_cpu: float, ready_wall: float, started_cpu: float) -> None:
    _emit(
        {
            "handled": count,
            "cpu_seconds": time.process_time() - ready_cpu,
            "wall_seconds": time.perf_counter() - ready_wall,
            "steady_messages_per_second": _steady_rate(),
            "start_cpu_seconds": ready_cpu - started_cpu,
            "peak_rss_mb": _peak_rss_mb(),
        }
    )


# --- fargate-runtime ---------------------------------------------------------------------------


async def _runtime(spec: dict[str, Any], started_cpu: float) -> None:
    import contextlib

    import redis.asyncio

    from fargate_runtime.idempotency import Idempotency, RedisStore
    from fargate_runtime.lifecycle import Lifecycle
    from fargate_runtime.settings import ShutdownBudget
    from fargate_runtime.sqs import (
        Consumer,
        Message,
        MessageContext,
        SqsSettings,
        json_field,
        open_sqs_client,
    )
    from fargate_runtime.telemetry import Telemetry, TelemetrySettings

    count = int(spec["count"])
    settings = SqsSettings(
        queue_url=spec["queue_url"],
        endpoint_url=spec["endpoint_url"],
        concurrency=int(spec["concurrency"]),
        **spec.get("sqs_settings", {}),
    )

    async def handle(message: Message, context: MessageContext) -> None:
        """Waits like a call downstream would (no CPU)."""
        seconds = handler_seconds(spec, _sequence(message.body))
        if seconds > 0:
            await asyncio.sleep(seconds)
        _handled(seconds)

    telemetry_mode = spec.get("telemetry", "off")
    telemetry = Telemetry(
        TelemetrySettings(
            enabled=telemetry_mode != "off",
            otlp_endpoint=spec.get("otlp_endpoint") if telemetry_mode == "otlp" else None,
        ),
        service_name="bench",
    )
    redis_client = None
    idempotency = None
    prefix = f"bench-peers-{uuid.uuid4().hex[:8]}"
    if spec.get("redis"):
        redis_client = redis.asyncio.Redis.from_url(spec["redis_url"])
        idempotency = Idempotency(RedisStore(redis_client), prefix=prefix, retention_seconds=600)
    budget = ShutdownBudget(
        stop_timeout_seconds=30,
        margin_seconds=2,
        drain_seconds=23,
        release_seconds=2,
        close_seconds=3,
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(telemetry)
        client = await stack.enter_async_context(open_sqs_client(settings))
        consumer = Consumer(
            handle,
            client=client,
            settings=settings,
            idempotency=idempotency,
            key=json_field("event_id") if idempotency is not None else None,
        )
        lifecycle = Lifecycle(budget)
        ready_cpu, ready_wall = time.process_time(), time.perf_counter()
        task = asyncio.create_task(consumer.run(lifecycle))
        _emit({"ready": True})
        # Polled: the consumer's counters are the only place the deletes show.
        while consumer.stats.deleted < count:
            await asyncio.sleep(0.02)
            if task.done():
                task.result()
        _finish(count, ready_cpu, ready_wall, started_cpu)
        lifecycle.request_shutdown("bench")
        await task
    if redis_client is not None:
        keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis_client.delete(*keys)
        await redis_client.aclose()


# --- the plain aioboto3 loops --------------------------------------------------------------------


async def _loop(spec: dict[str, Any], started_cpu: float, *, delete_each: bool) -> None:
    import aioboto3

    count = int(spec["count"])
    queue = spec["queue_url"]

    async def handle(body: str) -> None:
        seconds = handler_seconds(spec, _sequence(body))
        if seconds > 0:
            await asyncio.sleep(seconds)
        _handled(seconds)

    handled = 0
    async with aioboto3.Session().client("sqs", endpoint_url=spec["endpoint_url"]) as client:
        ready_cpu, ready_wall = time.process_time(), time.perf_counter()
        _emit({"ready": True})
        while handled < count:
            response = await client.receive_message(
                QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=20
            )
            messages = response.get("Messages", [])
            if not messages:
                continue
            await asyncio.gather(*(handle(message["Body"]) for message in messages))
            if delete_each:
                for message in messages:
                    await client.delete_message(
                        QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"]
                    )
            else:
                await client.delete_message_batch(
                    QueueUrl=queue,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]}
                        for i, message in enumerate(messages)
                    ],
                )
            handled += len(messages)
        _finish(handled, ready_cpu, ready_wall, started_cpu)


# --- aws-sqs-consumer ----------------------------------------------------------------------------


def _aws_sqs_consumer(spec: dict[str, Any], started_cpu: float) -> None:
    import boto3  # type: ignore[import-untyped]
    from aws_sqs_consumer import Consumer as PeerConsumer

    count = int(spec["count"])
    client = boto3.client("sqs", endpoint_url=spec["endpoint_url"])
    pool = ThreadPoolExecutor(max_workers=int(spec["concurrency"]))
    handled = 0
    ready_cpu, ready_wall = time.process_time(), time.perf_counter()

    def handle(body: str) -> None:
        seconds = handler_seconds(spec, _sequence(body))
        if seconds > 0:
            time.sleep(seconds)
        _handled(seconds)

    class Batch(PeerConsumer):  # type: ignore[misc]
        def handle_message_batch(self, messages: list[Any]) -> None:
            nonlocal handled
            list(pool.map(handle, [message.Body for message in messages]))
            handled += len(messages)
            if handled >= count:
                self.stop()

    _emit({"ready": True})
    Batch(
        queue_url=spec["queue_url"], sqs_client=client, batch_size=10, wait_time_seconds=20
    ).start()
    _finish(handled, ready_cpu, ready_wall, started_cpu)
    pool.shutdown()


def run(spec: dict[str, Any]) -> None:
    """Run the consumer ``spec`` describes until it has handled ``spec["count"]`` messages."""
    started_cpu = 0.0  # process_time counts from the process start
    kind = spec["kind"]
    if kind == "runtime":
        asyncio.run(_runtime(spec, started_cpu))
    elif kind in ("gather_loop", "delete_each"):
        asyncio.run(_loop(spec, started_cpu, delete_each=kind == "delete_each"))
    elif kind == "aws_sqs_consumer":
        _aws_sqs_consumer(spec, started_cpu)
    else:
        raise SystemExit(f"unknown consumer kind {kind!r}")


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
